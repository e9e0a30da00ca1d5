"""End-to-end CLI tests on a tiny model saved to disk (so it loads by local path, like any model)."""

import json

import pytest
from conftest import count_rows, write_config

from miner.cli import main
from miner.errors import ConfigError
from miner.export import load_exported
from miner.leaderboard import Leaderboard
from miner.models import load_backend
from miner.scoring import Scorer
from miner.tasks import TaskSpec, load_task


@pytest.fixture(scope="module")
def tiny_dir(tiny_model_dir):
    return tiny_model_dir


def _config(tmp_path, tiny_dir, **over):
    return write_config(tmp_path, tiny_dir, **over)


@pytest.mark.slow  # an end-to-end run of several seconds: outside the fast tier
def test_run_leaderboard_export_predict(tmp_path, tiny_dir, capsys):
    path, cfg = _config(tmp_path, tiny_dir)
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert "rotten_tomatoes" in out and "4 prompts" in out

    board = Leaderboard(cfg["storage"])
    rows = board.rows(task="rotten_tomatoes")
    assert len(rows) == 8  # 2 prompts x 2 calibration settings x 2 seeds
    assert sum(r.test_score is not None for r in rows) == 4  # test_top=2 per job
    assert all(r.n_train == 8 and r.n_dev == 8 and r.forward_passes >= 0 for r in rows)

    assert main(["leaderboard", "--storage", cfg["storage"], "--task", "rotten_tomatoes", "--seed", "1"]) == 0
    table = capsys.readouterr().out
    assert "Review:" in table and "manual" in table

    out_json = tmp_path / "best.json"
    assert (
        main(
            [
                "export",
                "--storage",
                cfg["storage"],
                "--task",
                "rotten_tomatoes",
                "--seed",
                "2",
                "-o",
                str(out_json),
            ]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    ex = load_exported(out_json)
    best = board.best(task="rotten_tomatoes", model=str(tiny_dir), seed=2)
    assert ex.prompt.to_dict() == best.prompt and ex.scores["dev"] == best.dev_score

    # Re-scoring the exported prompt reproduces its leaderboard scores exactly.
    data = load_task(TaskSpec(**cfg["task"]), 4, 2)
    be = load_backend(ex.model)
    scorer = Scorer(be, progress=False)
    assert scorer.score(ex.prompt, data.dev).metrics["accuracy"] == best.dev_score
    assert scorer.score(ex.prompt, data.train).metrics["accuracy"] == best.train_score
    assert scorer.score(ex.prompt, data.test).metrics["accuracy"] == best.test_score

    assert main(["predict", "--prompt", str(out_json), "--text", "A gem of a movie.", "--text", "Dull."]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in ("negative", "positive") for line in lines)

    # --input labels each row's own text: the same labels and probabilities as --text on those texts.
    texts = ["Great fun.", "A dull, tired mess.", "Worth it, with commas"]
    assert (
        main(["predict", "--prompt", str(out_json), "--json"] + [a for t in texts for a in ("--text", t)])
        == 0
    )
    by_text = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [item["input"]["sentence"] for item in by_text] == texts
    assert len({tuple(item["probabilities"].values()) for item in by_text}) == len(
        texts
    )  # not one constant answer
    files = {
        "in.jsonl": "".join(json.dumps({"sentence": t}) + "\n" for t in texts),
        "in.csv": "sentence\n" + "".join(f'"{t}"\n' for t in texts),
        "in.tsv": "sentence\n" + "".join(f"{t}\n" for t in texts),
    }
    for name, body in files.items():
        inp = tmp_path / name
        inp.write_text(body)
        assert main(["predict", "--prompt", str(out_json), "--input", str(inp), "--json"]) == 0
        by_file = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
        assert by_file == by_text, name


def test_budget_is_enforced_and_recorded(tmp_path, tiny_dir, capsys):
    path, cfg = _config(tmp_path, tiny_dir, seeds=[1], budget={"max_evaluations": 3})
    assert main(["run", str(path)]) == 0
    assert "budget: max_evaluations=3" in capsys.readouterr().out
    assert len(Leaderboard(cfg["storage"]).rows()) == 3


def test_searchers_lists_every_registered_searcher(capsys):
    from miner.search import searchers

    assert main(["searchers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == searchers.names()
    assert {"manual", "optuna", "autoprompt", "soft", "blackbox"} <= set(searchers.names())


def _bad_files(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "nolabel.csv").write_text("sentence,polarity\ngood,1\nbad,0\n")
    (d / "empty.csv").write_text("")
    (d / "outside.csv").write_text("sentence,label\ngood,positive\nbad,neutral\n")
    (d / "latin1.csv").write_bytes("sentence,label\ncaf\xe9 ok,positive\nbad,negative\n".encode("latin-1"))
    return d


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"taks": {}}, "unknown key"),
        ({"task": {"source": "builtin", "colour": 1}}, "task.colour: unknown key"),
        ({"seeds": "x"}, "seeds"),
        (
            {
                "prompts": [
                    {"template": "{sentence} It was", "verbalizer": {"negative": "bad", "positive": "good"}}
                ]
            },
            "no answer slot",
        ),
        (
            {
                "prompts": [
                    {"template": "{sentence} {answer}", "verbalizer": {"negative": [], "positive": "good"}}
                ]
            },
            "label 'negative'",
        ),
        (
            {"prompts": [{"template": "{sentence} {answer}", "verbalizer": {"negative": "bad"}}]},
            "no words for label 'positive'",
        ),
        ({"model": {"name": "no-such-org/no-such-model"}}, "cannot load model"),
        ({"model": {"name": "./missing-model-dir"}}, "does not exist"),
        ({"searchers": [{"name": "nope"}]}, "unknown searcher 'nope'"),
        ({"searchers": [{"name": "manual", "params": {"nope": 1}}]}, "searchers[0].params.nope"),
        (
            {
                "task": {
                    "source": "files",
                    "name": "t",
                    "train": "DATA/nolabel.csv",
                    "label_names": ["negative", "positive"],
                }
            },
            "label",
        ),
        (
            {
                "task": {
                    "source": "files",
                    "name": "t",
                    "train": "DATA/empty.csv",
                    "label_names": ["negative", "positive"],
                }
            },
            "empty",
        ),
        (
            {
                "task": {
                    "source": "files",
                    "name": "t",
                    "train": "DATA/outside.csv",
                    "label_names": ["negative", "positive"],
                }
            },
            "neutral",
        ),
        (
            {
                "task": {
                    "source": "files",
                    "name": "t",
                    "train": "DATA/latin1.csv",
                    "label_names": ["negative", "positive"],
                }
            },
            "UTF-8",
        ),
    ],
)
def test_bad_input_is_one_line_error_and_writes_nothing(
    tmp_path, tiny_dir, capsys, monkeypatch, change, needle
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = _bad_files(tmp_path)
    change = json.loads(json.dumps(change).replace("DATA", str(d)))
    path, cfg = _config(tmp_path, tiny_dir, **change)
    code = main(["run", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert needle in err
    assert count_rows(tmp_path / "lb.db").get("evaluations", 0) == 0


def test_unparsable_yaml(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("task: [unclosed\n")
    assert main(["run", str(p)]) == 2
    assert "not valid YAML at line" in capsys.readouterr().err


@pytest.mark.slow  # an end-to-end run of several seconds: outside the fast tier
def test_soft_prompt_run_export_predict(tmp_path, tiny_dir, capsys):
    path, cfg = _config(
        tmp_path,
        tiny_dir,
        seeds=[1],
        test_top=1,
        searchers=[{"name": "soft", "params": {"n_tokens": 2, "steps": 4, "eval_every": 2, "batch_size": 4}}],
    )
    assert main(["run", str(path)]) == 0
    capsys.readouterr()
    rows = Leaderboard(cfg["storage"]).rows(searcher="soft")
    assert rows and any(r.prompt.get("soft") for r in rows)
    out_json = tmp_path / "soft.json"
    assert (
        main(
            [
                "export",
                "--storage",
                cfg["storage"],
                "--task",
                "rotten_tomatoes",
                "--searcher",
                "soft",
                "-o",
                str(out_json),
            ]
        )
        == 0
    )
    assert "soft prompt tensor" in capsys.readouterr().out
    assert (tmp_path / "soft").is_dir() and json.loads(out_json.read_text())["soft_export"] == "soft"
    assert main(["predict", "--prompt", str(out_json), "--text", "A gem of a movie."]) == 0
    assert capsys.readouterr().out.split("\t")[0] in ("negative", "positive")


def test_plot_draws_the_leaderboard_and_refuses_bad_input(tmp_path, tiny_dir, capsys):
    from miner.plot import anytime_curves

    path, cfg = _config(tmp_path, tiny_dir)
    assert main(["run", str(path)]) == 0
    rows = Leaderboard(cfg["storage"]).rows(order="time")
    curves = anytime_curves(rows)
    assert len(curves) == 2  # one job per seed
    for curve in curves.values():
        passes, best = zip(*curve)
        assert list(passes) == sorted(passes) and list(best) == sorted(best)  # cost spent, best so far
    by_seed = {key[2]: curve for key, curve in curves.items()}
    for seed, curve in by_seed.items():
        mine = [r for r in rows if r.seed == seed]
        assert curve[-1] == (sum(r.forward_passes for r in mine), max(r.dev_score for r in mine))

    out = tmp_path / "board.png"
    capsys.readouterr()
    assert main(["plot", "--storage", cfg["storage"], "--task", "rotten_tomatoes", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000

    assert main(["plot", "--storage", cfg["storage"], "--task", "nope", "-o", str(tmp_path / "x.png")]) == 2
    assert "no leaderboard rows match" in capsys.readouterr().err
    assert main(["plot", "--storage", cfg["storage"], "-o", str(tmp_path / "x.txt")]) == 2
    assert ".png, .pdf or .svg" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.txt").exists()


def _board_summary(url):
    rows = Leaderboard(url).rows(order="time")
    return sorted((r.seed, r.prompt_key, r.dev_score, r.train_score, r.test_score) for r in rows), {
        r.run_id for r in rows
    }


@pytest.mark.process
@pytest.mark.parametrize("backend", ["loky", "dask"])
def test_parallel_jobs_write_what_a_sequential_run_writes(tmp_path, tiny_dir, capsys, backend, monkeypatch):
    if backend == "dask":
        pytest.importorskip("dask.distributed")
    monkeypatch.chdir(tmp_path)  # the parallel run names its storage by a bare relative path
    seq_path, seq = _config(tmp_path, tiny_dir, storage=f"sqlite:///{tmp_path / 'seq.db'}")
    assert main(["run", str(seq_path), "--no-progress"]) == 0
    (tmp_path / "p").mkdir()
    par_path, par = _config(
        tmp_path / "p", tiny_dir, storage="par.db", parallel={"backend": backend, "threads_per_job": 1}
    )
    assert main(["run", str(par_path), "--no-progress", "--jobs", "2"]) == 0
    capsys.readouterr()
    seq_rows, _ = _board_summary(seq["storage"])
    par_rows, run_ids = _board_summary(f"sqlite:///{tmp_path / 'par.db'}")
    assert len(par_rows) == 8 and len(run_ids) == 1  # 2 seeds x 4 prompts, all under one run
    assert par_rows == seq_rows  # the same prompts and scores as one process


def test_parallel_needs_a_shared_storage_and_no_given_backend(tmp_path, tiny_dir, capsys):
    from miner.runner import run

    for storage in ("sqlite://", ":memory:", "sqlite:///file:m?mode=memory&uri=true"):
        path, cfg = _config(tmp_path, tiny_dir, storage=storage)
        assert main(["run", str(path), "--jobs", "2"]) == 2
        assert "needs a shared storage" in capsys.readouterr().err
    path, cfg = _config(tmp_path, tiny_dir, parallel={"scheduler": "tcp://127.0.0.1:1"})
    assert main(["run", str(path), "--jobs", "2"]) == 2
    assert "set parallel.backend to 'dask'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="leave out run\\(backend=...\\)"):
        run(cfg | {"parallel": {"n_jobs": 2}}, backend=object())
    with pytest.raises(ConfigError, match="n_jobs must be a positive int"):
        run(cfg, n_jobs=0)
    assert not (tmp_path / "lb.db").exists()  # nothing was written
