"""``miner bench`` (issue 16): statistics on fixed numbers, the budget in one unit, bad input, and a
whole bench on the tiny model (every file, resume without duplicates)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml

from miner.benchmark import paired_bootstrap, parse_bench_config, summarize
from miner.config import BudgetSpec
from miner.errors import BudgetExhausted, ConfigError
from miner.runner import Budget
from miner.scoring import CostCounter

# ----------------------------------------------------------------------------- statistics


def _job(task, name, seed, correct, family="discrete", **kw):
    c = np.asarray(correct)
    return {
        "task": task,
        "name": name,
        "family": family,
        "seed": seed,
        "k": 16,
        "test": float(c.mean()),
        "correct": "".join(str(int(x)) for x in c),
        **kw,
    }


def test_paired_bootstrap_hand_values():
    ones, zeros = np.ones(10), np.zeros(10)
    # a constant difference: every replicate is that difference
    assert paired_bootstrap([ones, ones], [zeros, zeros]) == (1.0, 1.0, 1.0)
    # the same vectors: zero, with a zero-width interval
    a = np.array([1, 0, 1, 1, 0], dtype=float)
    assert paired_bootstrap([a], [a]) == (0.0, 0.0, 0.0)
    # point estimate: mean over seeds of the per-seed mean difference = (0.4 + 0.0) / 2
    b = np.array([0, 0, 0, 1, 0], dtype=float)
    point, lo, hi = paired_bootstrap([a, a], [b, a], n_boot=4000, seed=1)
    assert point == pytest.approx(0.2)
    assert lo < point < hi and -0.5 <= lo and hi <= 0.8
    with pytest.raises(ValueError):
        paired_bootstrap([a], [np.ones(4)])


def test_summary_hand_values():
    ref = "manual (best by dev)"
    jobs = [
        _job("t", ref, 1, [1, 0, 0, 0], family="baseline", forward_equivalents=10, seconds=1),
        _job("t", ref, 2, [1, 1, 0, 0], family="baseline", forward_equivalents=10, seconds=1),
        _job("t", ref, 3, [1, 1, 1, 0], family="baseline", forward_equivalents=10, seconds=1),
        # seed 1: +2 right (win), seed 2: same count (tie), seed 3: -1 (loss)
        _job(
            "t",
            "s",
            1,
            [1, 1, 1, 0],
            forward_equivalents=50,
            backward_passes=4,
            seconds=3,
            best_candidate_test=1.0,
        ),
        _job(
            "t",
            "s",
            2,
            [0, 0, 1, 1],
            forward_equivalents=50,
            backward_passes=4,
            seconds=5,
            best_candidate_test=0.5,
        ),
        _job(
            "t",
            "s",
            3,
            [1, 1, 0, 0],
            forward_equivalents=50,
            backward_passes=4,
            seconds=7,
            best_candidate_test=0.75,
        ),
    ]
    rows = {r["name"]: r for r in summarize(jobs, n_boot=500)}
    s = rows["s"]
    tests = [0.75, 0.5, 0.5]
    assert s["mean"] == pytest.approx(np.mean(tests))
    assert s["std"] == pytest.approx(np.std(tests, ddof=1))
    assert s["diff_mean"] == pytest.approx(((0.75 - 0.25) + (0.5 - 0.5) + (0.5 - 0.75)) / 3)
    assert (s["wins"], s["ties"], s["losses"]) == (1, 1, 1)
    assert s["gap_mean"] == pytest.approx(((1.0 - 0.75) + 0.0 + (0.75 - 0.5)) / 3)
    assert s["forward_equivalents"] == 50 and s["seconds"] == 5 and s["backward_passes"] == 4
    assert s["acc_per_100"] == pytest.approx(100 * np.mean(tests) * 100 / 50)
    assert s["diff_lo"] <= s["diff_mean"] <= s["diff_hi"]
    r = rows[ref]
    assert r["diff_mean"] is None and r["wins"] is None and r["mean"] == pytest.approx(0.5)
    # averaged demonstration draws: fractions per example are paired the same way
    demo = {
        **_job("t", "demonstrations", 1, [1, 0, 0, 0], family="baseline"),
        "correct": [1.0, 0.5, 0.5, 0.0],
        "test": 0.5,
    }
    row = next(x for x in summarize([jobs[0], demo], n_boot=200) if x["name"] == "demonstrations")
    assert row["diff_mean"] == pytest.approx(0.25) and row["wins"] == 1


# ----------------------------------------------------------------------------- one budget unit


def test_backward_passes_are_charged_in_forward_passes():
    counter = CostCounter()
    b = Budget(BudgetSpec(max_forward_passes=10, backward_cost=2.5), counter)
    assert b.can_afford(forward_passes=1, backward_passes=1)
    for _ in range(2):  # two gradient steps: 2 x (1 + 2.5) = 7 forward-pass equivalents
        with counter.forward(1, 8, 8, backward=True):
            pass
    assert b.forward_equivalents == pytest.approx(7.0)
    assert b.forward_passes_left == pytest.approx(3.0)
    assert not b.can_afford(forward_passes=1, backward_passes=1)  # 3.5 > 3
    assert b.can_afford(forward_passes=3)
    with pytest.raises(BudgetExhausted, match="max_forward_passes=10"):
        with counter.forward(1, 8, 8, backward=True):
            pass
    with counter.forward(1, 8, 8):  # a plain forward pass still fits
        pass
    # with backward_cost 0 (a run config's default) backward passes do not count against forward passes
    free = Budget(BudgetSpec(max_forward_passes=2), CostCounter())
    assert free.can_afford(forward_passes=2, backward_passes=100)


# ----------------------------------------------------------------------------- bad input


def _bench_cfg(model_dir, out, **over):
    cfg = {
        "name": "tiny",
        "out": str(out),
        "tasks": [
            {
                "task": {"source": "builtin", "name": "rotten_tomatoes", "max_test": 24},
                "prompts": [
                    {
                        "template": "{sentence} It was {answer}",
                        "verbalizer": {"negative": "terrible", "positive": "great"},
                    },
                    {
                        "template": "Review: {sentence}\nSentiment: {answer}",
                        "verbalizer": {"negative": "negative", "positive": "positive"},
                    },
                ],
            }
        ],
        "model": str(model_dir),
        "searchers": ["optuna", "autoprompt", "soft"],
        "seeds": [1, 2],
        "k": 4,
        "budget": {"max_forward_passes": 30},
        "baselines": {"demonstrations": 2, "peft_tokens": 2},
        "progress": False,
    }
    cfg.update(over)
    return cfg


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"searchers": ["optuna", "no-such-searcher"]}, "unknown searcher 'no-such-searcher'"),
        ({"budget": {"max_forward_passes": 0}}, "budget.max_forward_passes"),
        ({"budget": {}}, "budget.max_forward_passes: missing"),
        ({"seeds": []}, "seeds"),
        ("no-test", "has no test split"),
        ("bad-prompt", "unknown field {text}"),
        ({"searchers": ["optuna", {"name": "optuna", "params": {"n_trials": 3}}]}, "listed twice"),
        ("fact-task", "test sample changes with the seed"),
        ("same-file-name", "would share one record file name"),
    ],
)
def test_bad_bench_config_fails_before_any_job(tmp_path, tiny_model_dir, clean_failure, change, needle):
    out = tmp_path / "bench"
    cfg = _bench_cfg(tiny_model_dir, out)
    if change == "no-test":
        train = tmp_path / "train.csv"
        train.write_text(
            "sentence,label\n" + "".join(f"text {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40))
        )
        cfg["tasks"] = [{"task": {"source": "files", "name": "mine", "train": str(train)}}]
    elif change == "bad-prompt":
        cfg["tasks"][0]["prompts"][0]["template"] = "{text} It was {answer}"
    elif change == "fact-task":  # pairs split per seed: seed 2's training pairs are in seed 1's test
        cfg["tasks"] = [{"task": {"source": "facts", "name": "country_capital", "max_test": 40}}]
    elif change == "same-file-name":
        csv = tmp_path / "d.csv"
        csv.write_text("sentence,label\n" + "".join(f"t {i},{'a' if i % 2 else 'b'}\n" for i in range(40)))
        cfg["tasks"] = [
            {"task": {"source": "files", "name": n, "train": str(csv), "test": str(csv)}}
            for n in ("a/b", "a b")
        ]
    else:
        cfg.update(change)
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    clean_failure(["bench", path], needle=needle, watch=tmp_path, allow=("bench.yaml",))
    assert not out.exists()


def test_summary_keeps_each_k_apart():
    ref = "manual (best by dev)"
    jobs = [
        _job("t", name, seed, correct, k=k, family="baseline" if name == ref else "discrete")
        for k in (4, 16)
        for seed in (1, 2)
        for name, correct in ((ref, [1, 0, 0, 0]), ("s", [1, 1, 0, 0] if k == 4 else [1, 1, 1, 1]))
    ]
    rows = {r["name"]: r for r in summarize(jobs, n_boot=200)}
    assert set(rows) == {f"{ref} · k=4", f"{ref} · k=16", "s · k=4", "s · k=16"}
    assert rows["s · k=4"]["n_seeds"] == 2 and rows["s · k=4"]["std"] == 0.0
    assert rows["s · k=4"]["diff_mean"] == pytest.approx(0.25)
    assert rows["s · k=16"]["diff_mean"] == pytest.approx(0.75)
    one = summarize([_job("t", "s", 1, [1, 0])], n_boot=10)[0]
    assert one["std"] is None  # one seed: no spread, shown as "–"


def test_guard_table_shows_the_unguarded_pick_beside_the_guarded_one():
    from miner.benchmark._report_build import guard_table, manual_only_rows

    jobs = [
        {
            **_job("t", "s", 1, [1, 1, 0, 0]),
            "guard_fired": True,
            "unguarded_test": 0.25,
            "pick_is_manual": True,
        },
        {
            **_job("t", "s", 2, [1, 1, 1, 0]),
            "guard_fired": False,
            "unguarded_test": 0.75,
            "pick_is_manual": False,
        },
        _job("t", "manual (best by dev)", 1, [1, 0, 0, 0], family="baseline"),
        _job("t", "manual (best by dev)", 2, [1, 0, 0, 0], family="baseline"),
    ]
    table = guard_table(jobs, {"s": "dev"})
    assert table is not None
    (row,) = table["rows"]
    assert row[:7] == ["t", "s", 2, "dev", 1, 1, 0]
    assert row[7:] == ["62.5", "50.0"]  # guarded (0.5 + 0.75) / 2, unguarded (0.25 + 0.75) / 2
    # one k's row is named "<searcher> · k=<k>": it shows its searcher's rule
    (row_k,) = guard_table([{**j, "name": j["name"] + " · k=4"} for j in jobs], {"s": "pooled"})["rows"]
    assert row_k[3] == "pooled"
    assert manual_only_rows(jobs, summarize(jobs, n_boot=50)) == []  # seed 2 took the searcher's pick
    # every pick hand-written yet above the reference: the ranking rule did it, and the report says so
    old = {"pick": {"reason": "manual prompt kept (guard: ...)"}}  # a record from before pick_is_manual
    only = [{**jobs[0]}, {**{k: v for k, v in jobs[1].items() if k != "pick_is_manual"}, **old}, *jobs[2:]]
    assert manual_only_rows(only, summarize(only, n_boot=50)) == ["s (t)"]


def test_bench_config_defaults():
    cfg = parse_bench_config(
        {"name": "b", "tasks": [{"source": "kshot", "name": "sst-2"}], "budget": {"max_forward_passes": 5}}
    )
    names = [s.name for s in cfg.searcher_specs()]
    assert "manual" not in names and {
        "optuna",
        "autoprompt",
        "soft",
        "blackbox",
        "mining",
        "paraphrase",
    } <= set(names)
    assert cfg.out_dir == Path("results/bench/b") and cfg.storage_url == "sqlite:///results/bench/b/bench.db"
    with pytest.raises(ConfigError, match="name"):
        parse_bench_config(
            {
                "name": "../x",
                "tasks": [{"source": "kshot", "name": "sst-2"}],
                "budget": {"max_forward_passes": 5},
            }
        )


# ----------------------------------------------------------------------------- a whole bench


def _rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("select prompt_key, seed, k, searcher, extra from evaluations").fetchall()


def _duplicates(db: Path) -> list:
    seen, dup = set(), []
    for key, seed, k, _searcher, extra in _rows(db):
        ident = (key, seed, k, json.loads(extra).get("job_key"), json.loads(extra).get("fold"))
        if ident in seen:
            dup.append(ident)
        seen.add(ident)
    return dup


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory, tiny_model_dir):
    from miner.benchmark import bench
    from miner.testing.tiny import tiny_causal

    out = tmp_path_factory.mktemp("bench") / "tiny"
    result = bench(_bench_cfg(tiny_model_dir, out), backend=tiny_causal(), command="miner bench tiny.yaml")
    return out, result


@pytest.mark.slow  # an end-to-end run of several seconds: outside the fast tier
def test_bench_writes_every_file(tiny_bench):
    out, result = tiny_bench
    for name in (
        "report.md",
        "report.html",
        "jobs.csv",
        "summary.json",
        "bench.json",
        "cost_model.json",
        "accuracy.png",
        "gap.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "curves_rotten_tomatoes.png").exists()
    names = {j["name"] for j in result.jobs}
    assert names >= {
        "manual (best by dev)",
        "manual (oracle by test)",
        "zero-shot",
        "demonstrations",
        "linear probe",
        "optuna",
        "autoprompt",
        "soft",
    }
    assert len(result.jobs) == len(names) * 2  # two seeds of every row
    md = (out / "report.md").read_text()
    assert "miner bench tiny.yaml" in md and "optuna" in md and "accuracy.png" in md
    import csv

    with (out / "jobs.csv").open(newline="") as f:
        assert len(list(csv.DictReader(f))) == len(result.jobs)
    # every row of a task is on the same test sample
    assert {
        len(str(j["correct"])) if isinstance(j["correct"], str) else len(j["correct"]) for j in result.jobs
    } == {24}


@pytest.mark.slow  # an end-to-end run of several seconds: outside the fast tier
def test_bench_budget_is_equal_for_all(tiny_bench):
    _, result = tiny_bench
    cost = json.loads((tiny_bench[0] / "cost_model.json").read_text())
    assert cost["backward_cost"] >= 0 and cost["model"]
    for j in result.jobs:
        if j["family"] == "baseline":
            continue
        assert j["forward_equivalents"] <= 30 + 1e-9, j["id"]
        assert j["forward_equivalents"] == pytest.approx(
            j["forward_passes"] + cost["backward_cost"] * j["backward_passes"]
        )
    auto = [j for j in result.jobs if j["name"] == "autoprompt"]
    assert all(j["backward_passes"] > 0 for j in auto)  # gradient work is charged, not free


@pytest.mark.slow  # an end-to-end run of several seconds: outside the fast tier
def test_bench_test_scores_once(tiny_bench):
    out, _ = tiny_bench
    keys = [
        json.loads(line)["key"] for line in (out / "tests" / "rotten_tomatoes.jsonl").read_text().splitlines()
    ]
    assert len(keys) == len(set(keys))  # each distinct prompt scored on the test sample once per bench


@pytest.mark.slow  # an end-to-end run of several seconds: outside the fast tier
def test_killed_bench_resumes_without_duplicates(tmp_path, tiny_model_dir, monkeypatch):
    from miner.benchmark import _run, bench
    from miner.testing.tiny import tiny_causal

    out = tmp_path / "b"
    cfg = _bench_cfg(
        tiny_model_dir,
        out,
        searchers=["optuna", "soft"],
        baselines={"demonstrations": 1, "linear_probe": False, "peft": False},
    )
    be = tiny_causal()
    real = _run.Bench._save_searcher
    calls = {"n": 0}

    def killed(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # the kill: after two searcher jobs were recorded
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(_run.Bench, "_save_searcher", killed)
    with pytest.raises(KeyboardInterrupt):
        bench(cfg, backend=be)
    monkeypatch.setattr(_run.Bench, "_save_searcher", real)
    done = sorted(p.name for p in (out / "jobs").glob("*.json"))
    assert len([n for n in done if "__optuna__" in n or "__soft__" in n]) == 2
    with pytest.raises(ConfigError, match="--resume"):
        bench(cfg, backend=be)  # a second start without --resume refuses to touch the folder
    # resuming with a finished row's settings changed would mix two setups in one row: refused
    import copy

    other_params = copy.deepcopy(cfg)
    other_params["searchers"] = ["optuna", {"name": "soft", "params": {"steps": 3}}]
    other_task = copy.deepcopy(cfg)
    other_task["tasks"][0]["task"]["max_test"] = 20
    other_top = {**cfg, "test_top": 1}
    for changed, needle in (
        (other_params, "searcher 'soft' with other settings"),
        (other_task, "task 'rotten_tomatoes' with other settings"),
        (other_top, "another test_top"),
    ):
        with pytest.raises(ConfigError, match=needle):
            bench(changed, backend=be, resume=True)
    # a partial report from the records on disk: no model loaded, no job run, marked partial
    import miner.models

    def no_model(*a, **kw):
        raise AssertionError("--report-only loaded the model")

    monkeypatch.setattr(miner.models, "load_backend", no_model)
    jobs_before = sorted(p.name for p in (out / "jobs").glob("*.json"))
    partial = bench(cfg, report_only=True)
    assert sorted(p.name for p in (out / "jobs").glob("*.json")) == jobs_before
    assert len(partial.jobs) == len(jobs_before)
    md = (out / "report.md").read_text()
    assert "PARTIAL" in md and "of the grid's 6 manual and searcher jobs" in md
    monkeypatch.undo()
    rows_before = len(_rows(out / "bench.db"))
    result = bench(cfg, backend=be, resume=True)
    assert not _duplicates(out / "bench.db")
    assert len(_rows(out / "bench.db")) >= rows_before
    assert sorted(j["name"] for j in result.jobs if j["name"] in ("optuna", "soft")) == [
        "optuna",
        "optuna",
        "soft",
        "soft",
    ]
    # resuming a finished bench runs nothing: no new rows, no new test scores
    rows, tests = len(_rows(out / "bench.db")), (out / "tests" / "rotten_tomatoes.jsonl").read_text()
    bench(cfg, backend=be, resume=True)
    assert len(_rows(out / "bench.db")) == rows
    assert (out / "tests" / "rotten_tomatoes.jsonl").read_text() == tests
    bench(cfg, report_only=True)
    md = (out / "report.md").read_text()
    assert "6 of the grid's 6 manual and searcher jobs" in md and "PARTIAL" not in md
    # a searcher dropped from the config is not this bench's row any more
    fewer = bench({**cfg, "searchers": ["optuna"]}, report_only=True)
    assert "soft" not in {j["name"] for j in fewer.jobs}
    assert "4 of the grid's 4 manual and searcher jobs" in (out / "report.md").read_text()


def test_report_only_without_a_bench_fails_cleanly(tmp_path, tiny_model_dir, clean_failure):
    import yaml

    cfg = tmp_path / "b.yaml"
    cfg.write_text(yaml.safe_dump(_bench_cfg(tiny_model_dir, tmp_path / "none")))
    clean_failure(["bench", str(cfg), "--report-only"], needle="no bench in", watch=tmp_path)
    assert not (tmp_path / "none").exists()


@pytest.mark.slow  # an end-to-end run of several seconds: outside the fast tier
def test_damaged_cost_model_fails_cleanly(tiny_bench, tmp_path, tiny_model_dir, clean_failure):
    """A bench folder whose cost_model.json is damaged: --report-only names the file in one line and
    changes nothing (--resume reads it through the same reader)."""
    import shutil

    import yaml

    src, _ = tiny_bench
    out = tmp_path / "b"
    shutil.copytree(src, out)
    cfg = tmp_path / "b.yaml"
    cfg.write_text(yaml.safe_dump(_bench_cfg(tiny_model_dir, out)))
    for damaged in ('{"backward_cost": ', '{"model": "x"}'):
        (out / "cost_model.json").write_text(damaged)
        clean_failure(
            ["bench", str(cfg), "--report-only"], needle="cost_model.json is unreadable", watch=tmp_path
        )


def test_ranking_rules_resolve_auto_as_the_runner_does():
    from miner.benchmark._report_build import ranking_rules

    assert ranking_rules("auto", ["optuna", "soft", "mining", "paraphrase", "gone"]) == {
        "optuna": "dev",  # fits its label words on train
        "soft": "dev",
        "mining": "pooled",
        "paraphrase": "pooled",
        "gone": "–",  # a record of a searcher that is not installed any more
    }
    assert ranking_rules("kfold", ["mining"]) == {"mining": "kfold"}
