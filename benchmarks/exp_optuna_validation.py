"""Choose the optuna searcher's SST-2 search space on validation data, never on test.

The plan (committed before any number was seen) is ``results/plans/optuna_validation_plan.md``. In short:

- V_s, the validation set of seed s: the SST-2 sentences of the other seeds' 16-shot train and dev
  splits that are not in seed s's own split. They all come from SST-2's *training* set.
- ``--score``: every trial prompt of an optuna study database and the six manual baselines are
  scored on V_s (one seed list per process, so two processes can share the work).
- default (analysis): for each candidate restriction of the search space (demonstrations, pool
  sizes, calibration, number of trials), the product's own rule (dev score, then dev
  log-likelihood, then train score) picks one prompt per seed among the trials inside it, and
  its V accuracy is averaged over seeds. Writes ``results/optuna/optuna_validation.{json,md}``.

Test scores are never read by this script.

Usage::

    python benchmarks/exp_optuna_validation.py --score 13,42,100 -o a.json   # two processes
    python benchmarks/exp_optuna_validation.py --score 21,87 -o b.json
    python benchmarks/exp_optuna_validation.py a.json b.json                  # the analysis
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
SEEDS = [13, 21, 42, 87, 100]
MIN_GAIN = 0.01  # the plan: a candidate replaces the current space only if it wins by >= 1 point


def validation_set(data: dict, seed: int) -> list:
    own = {e.fields["sentence"] for e in list(data[seed].train) + list(data[seed].dev)}
    out, seen = [], set()
    for s in SEEDS:
        if s == seed:
            continue
        for e in list(data[s].train) + list(data[s].dev):
            x = e.fields["sentence"]
            if x not in own and x not in seen:
                seen.add(x)
                out.append(e)
    return out


def _setup(config: Path, storage: str):
    """The scorer (default model, the config's content-free texts), every seed's data, the study database."""
    from miner import load_config
    from miner.leaderboard import Leaderboard
    from miner.models import load_backend
    from miner.scoring import Scorer
    from miner.tasks import load_task

    cfg = load_config(config)
    scorer = Scorer(load_backend(cfg.model.name), progress=False, content_free=cfg.content_free)
    return scorer, {s: load_task(cfg.task, 16, s) for s in SEEDS}, Leaderboard(storage)


def _trial_rows(board, seed: int) -> list:
    """The seed's SST-2 optuna trial rows, oldest first (not the ensembles added later)."""
    return [
        r
        for r in board.rows(searcher="optuna", seed=seed, order="time")
        if r.extra and r.extra.get("optuna") and r.task == "sst-2" and "ensemble" not in r.prompt
    ]


def score(seeds: list[int], config: Path, storage: str, out: Path) -> None:
    import torch

    torch.set_num_threads(1)
    from exp_optuna import BASELINES  # the same manual prompts as the experiments

    from miner.prompts import Prompt

    scorer, data, board = _setup(config, storage)
    labels = data[SEEDS[0]].label_names
    res = []
    for s in seeds:
        V = validation_set(data, s)
        rows = _trial_rows(board, s)
        for tpl, neg, pos in BASELINES:
            for cal in (False, True):
                r = scorer.score(
                    Prompt.create(tpl, {labels[0]: neg, labels[1]: pos}, labels, calibrate=cal), V
                )
                res.append(
                    {
                        "seed": s,
                        "kind": "manual",
                        "template": tpl,
                        "calibrate": cal,
                        "V": r.metrics["accuracy"],
                        "V_loglik": r.loglik,
                        "nV": len(V),
                    }
                )
        for row in rows:
            t0 = time.time()
            r = scorer.score(Prompt.from_dict(row.prompt, labels), V)
            res.append(
                {
                    "seed": s,
                    "kind": "trial",
                    "id": row.id,
                    "trial": row.extra["optuna"]["trial"],
                    "params": row.extra["optuna"]["params"],
                    "train": row.train_score,
                    "dev": row.dev_score,
                    "dev_loglik": row.dev_loglik,
                    "V": r.metrics["accuracy"],
                    "V_loglik": r.loglik,
                    "nV": len(V),
                }
            )
            print(s, row.id, f"{time.time() - t0:.1f}s", row.dev_score, r.metrics["accuracy"], flush=True)
            out.write_text(json.dumps(res))
        scorer.clear_cache()
    out.write_text(json.dumps(res))


CANDIDATES = {
    "demonstrations": {"[0, 1]": (0, 1), "[1]": (1,), "[0]": (0,)},
    "pool_sizes": {"[0, 2]": (0, 2), "[0]": (0,), "[2]": (2,)},
    "calibration": {"[false, true]": (False, True), "[true]": (True,), "[false]": (False,)},
    "n_trials": {"32": None, "16": 16},  # None: every trial of the run
}
CURRENT = ("[0, 1]", "[0, 2]", "[false, true]", "32")


# ----------------------------------------------------------------- the pick rule (results/plans/optuna_selection_plan.md)
_NEG = float("-inf")


def _v(x):
    return _NEG if x is None else x


RULES = {
    "R0": (
        "dev accuracy, then dev log-likelihood, then train accuracy (current)",
        lambda t, ts: (_v(t["dev"]), _v(t["dev_loglik"]), _v(t["train"])),
    ),
    "R1": ("dev log-likelihood", lambda t, ts: (_v(t["dev_loglik"]),)),
    "R2": (
        "mean of train and dev accuracy, then dev log-likelihood",
        lambda t, ts: ((_v(t["train"]) + _v(t["dev"])) / 2, _v(t["dev_loglik"])),
    ),
    "R3": (
        "dev accuracy within one example (1/32) of the best, then dev log-likelihood",
        lambda t, ts: (_v(t["dev"]) >= max(_v(u["dev"]) for u in ts) - 1 / 32 - 1e-9, _v(t["dev_loglik"])),
    ),
}


def _pick(trials: list[dict], rule: str = "R0") -> dict | None:
    """The trial ``rule`` picks (R0 is the product's: dev, dev log-likelihood, train); the earlier trial on a tie."""
    key = RULES[rule][1]
    return max(trials, key=lambda t: (*key(t, trials), -t["id"])) if trials else None


def analyse(records: list[dict]) -> dict:
    trials = [r for r in records if r["kind"] == "trial"]
    for t in trials:
        t.pop("test", None)  # never looked at
    out = []
    for combo in itertools.product(*(CANDIDATES[k].items() for k in CANDIDATES)):
        names = tuple(c[0] for c in combo)
        demos, pools, cals, n = (c[1] for c in combo)
        picks = []
        for s in SEEDS:
            inside = [
                t
                for t in trials
                if t["seed"] == s
                and (n is None or t["trial"] < n)
                and t["params"].get("demonstrations", 0) in demos
                and t["params"].get("pool_size") in pools
                and t["params"].get("calibrate") in cals
            ]
            p = _pick(inside)
            picks.append(
                None
                if p is None
                else {"seed": s, "trial": p["trial"], "dev": p["dev"], "V": p["V"], "inside": len(inside)}
            )
        if any(p is None for p in picks):
            continue
        vs = [p["V"] for p in picks]
        out.append(
            {
                "space": dict(zip(CANDIDATES, names)),
                "current": names == CURRENT,
                "V_mean": statistics.mean(vs),
                "V_std": statistics.stdev(vs),
                "picks": picks,
            }
        )
    out.sort(key=lambda c: -c["V_mean"])
    current = next(c for c in out if c["current"])
    best = out[0]
    adopt = best["V_mean"] >= current["V_mean"] + MIN_GAIN
    manual, manual_by_seed = {}, {}
    for r in sorted((r for r in records if r["kind"] == "manual"), key=lambda r: r["seed"]):
        manual.setdefault((r["template"], r["calibrate"]), []).append(r["V"])
        manual_by_seed.setdefault((r["template"], r["calibrate"]), {})[r["seed"]] = r["V"]
    best_manual = max(manual, key=lambda k: statistics.mean(manual[k]))
    oracle = [max(t["V"] for t in trials if t["seed"] == s) for s in SEEDS]
    return {
        "candidates": out,
        "current": current,
        "best": best,
        "adopt": adopt,
        "min_gain": MIN_GAIN,
        "manual": [
            {"template": k[0], "calibrate": k[1], "V_mean": statistics.mean(v)} for k, v in manual.items()
        ],
        "oracle_V_mean": statistics.mean(oracle),
        "best_manual": {
            "template": best_manual[0],
            "calibrate": best_manual[1],
            "V_by_seed": manual_by_seed[best_manual],
            "V_mean": statistics.mean(manual[best_manual]),
        },
        "nV": sorted({r["nV"] for r in records}),
    }


def _plan_line(plan: str, command: str) -> str:
    return (
        f"Plan: `results/plans/{plan}` (committed before these numbers). Command: `{command}`, "
        f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}."
    )


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def markdown(res: dict, command: str) -> str:
    pct = _pct
    lines = [
        "# optuna on SST-2: search space chosen on validation data (not test)",
        "",
        _plan_line("optuna_validation_plan.md", command) + f" V_s: {res['nV']} SST-2 training "
        "sentences per seed from the other seeds' 16-shot splits. Trials: `results/optuna/optuna_experiments_v2.db` "
        "(`configs/optuna_sst2.yaml` as run before: demonstrations [0, 1], pool_sizes [0, 2], calibration "
        "[false, true], 32 trials).",
        "",
        "Manual baselines on V (mean over seeds): "
        + "; ".join(
            f"`{m['template']!r}`{' [cal]' if m['calibrate'] else ''} {pct(m['V_mean'])}"
            for m in res["manual"]
        )
        + ".",
        f"Best single trial per seed on V (an oracle no rule can use): {pct(res['oracle_V_mean'])}.",
        "",
        "| demonstrations | pool_sizes | calibration | n_trials | V accuracy of the prompt picked by dev (mean ± std, 5 seeds) | per seed |",
        "|---|---|---|---|---|---|",
    ]
    for c in res["candidates"]:
        sp = c["space"]
        mark = " **(current)**" if c["current"] else ""
        lines.append(
            f"| {sp['demonstrations']} | {sp['pool_sizes']} | {sp['calibration']} | {sp['n_trials']}{mark} | "
            f"{pct(c['V_mean'])} ± {pct(c['V_std'])} | " + ", ".join(pct(p["V"]) for p in c["picks"]) + " |"
        )
    b, cur = res["best"], res["current"]
    bm = res["best_manual"]
    wins = sum(p["V"] > bm["V_by_seed"][p["seed"]] for p in cur["picks"])
    lines += [
        "",
        f"The current config's picks against the best manual prompt on V (`{bm['template']!r}`"
        f"{' [cal]' if bm['calibrate'] else ''}), per seed: "
        + ", ".join(f"{p['seed']}: {pct(p['V'])} vs {pct(bm['V_by_seed'][p['seed']])}" for p in cur["picks"])
        + f"; mean {pct(cur['V_mean'])} vs {pct(bm['V_mean'])}, better on {wins} of 5 seeds.",
    ]
    lines += [
        "",
        f"Best candidate: {b['space']} at {pct(b['V_mean'])} vs current {pct(cur['V_mean'])}: "
        + (
            f"adopted (gain >= {pct(res['min_gain'])} points)."
            if res["adopt"]
            else f"NOT adopted (the plan needs a gain of at least {pct(res['min_gain'])} points); the current config stays."
        ),
    ]
    return "\n".join(lines) + "\n"


def _verdict(
    mean: float, base_mean: float, per_seed: list[dict], base_per_seed: list[dict]
) -> tuple[int, bool]:
    """The plans' bar: adopted if at least MIN_GAIN above the base and worse than it on at most 2 of the 5 seeds."""
    worse = sum(p["V"] < q["V"] - 1e-12 for p, q in zip(per_seed, base_per_seed))
    return worse, mean >= base_mean + MIN_GAIN - 1e-12 and worse <= 2


def analyse_selection(records: list[dict]) -> dict:
    """Each rule picks one trial per seed (ties: the earlier trial); its V accuracy, never test."""
    trials = [r for r in records if r["kind"] == "trial"]
    out = {}
    for name, (desc, _) in RULES.items():
        picks = []
        for s in SEEDS:
            p = _pick([t for t in trials if t["seed"] == s], name)
            picks.append(
                {
                    "seed": s,
                    "id": p["id"],
                    "trial": p["trial"],
                    "params": p["params"],
                    "train": p["train"],
                    "dev": p["dev"],
                    "dev_loglik": p["dev_loglik"],
                    "V": p["V"],
                }
            )
        vs = [p["V"] for p in picks]
        out[name] = {
            "rule": desc,
            "V_mean": statistics.mean(vs),
            "V_std": statistics.stdev(vs),
            "picks": picks,
        }
    r0 = out["R0"]
    best = max((n for n in out if n != "R0"), key=lambda n: out[n]["V_mean"])
    b = out[best]
    worse, adopt = _verdict(b["V_mean"], r0["V_mean"], b["picks"], r0["picks"])
    return {
        "rules": out,
        "best": best,
        "worse_seeds": worse,
        "adopt": adopt,
        "min_gain": MIN_GAIN,
        "nV": sorted({r["nV"] for r in records}),
    }


def markdown_selection(res: dict, command: str) -> str:
    pct = _pct
    lines = [
        "# optuna on SST-2: the rule that picks the final prompt, chosen on validation data (not test)",
        "",
        _plan_line("optuna_selection_plan.md", command) + " The same trials and "
        f"validation scores as `results/optuna/optuna_validation.md` (V_s: {res['nV']} SST-2 training sentences per seed); "
        "no model call, test never read.",
        "",
        "| rule | picks by | V accuracy of the pick (mean ± std, 5 seeds) | per seed (13, 21, 42, 87, 100) |",
        "|---|---|---|---|",
    ]
    for n, r in res["rules"].items():
        lines.append(
            f"| {n} | {r['rule']} | {pct(r['V_mean'])} ± {pct(r['V_std'])} | "
            + ", ".join(pct(p["V"]) for p in r["picks"])
            + " |"
        )
    b, r0 = res["rules"][res["best"]], res["rules"]["R0"]
    lines += [
        "",
        f"Best alternative: {res['best']} at {pct(b['V_mean'])} vs R0 {pct(r0['V_mean'])}, worse than R0 on "
        f"{res['worse_seeds']} of 5 seeds: "
        + (
            "adopted (the plan's bar: +1.0 point and worse on at most 2 seeds)."
            if res["adopt"]
            else "NOT adopted (the plan's bar: +1.0 point and worse on at most 2 seeds); R0 stays."
        ),
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- top-k ensembles (results/plans/optuna_ensemble_plan.md)
ENSEMBLE_K = (1, 3, 5)  # E1 is the current pick (R0), the sanity check


def _ranked(trials: list, key) -> list:
    """Trials best first by R0 (the earlier trial on a tie), as ``_pick`` orders them."""
    return sorted(trials, key=lambda t: (*RULES["R0"][1](key(t), None), -key(t)["id"]), reverse=True)


def ensemble_score(seeds: list[int], config: Path, storage: str, out: Path) -> None:
    """Score each seed's top ``max(ENSEMBLE_K)`` trials (by R0) on V_s, keeping every example's label probabilities."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from miner.prompts import Prompt

    scorer, data, board = _setup(config, storage)
    labels = data[SEEDS[0]].label_names
    res = []
    for s in seeds:
        V = validation_set(data, s)
        rows = _trial_rows(board, s)
        as_trial = lambda r: {
            "id": r.id,
            "dev": r.dev_score,
            "dev_loglik": r.dev_loglik,
            "train": r.train_score,
        }  # noqa: E731
        for rank, row in enumerate(_ranked(rows, as_trial)[: max(ENSEMBLE_K)]):
            t0 = time.time()
            r = scorer.score(Prompt.from_dict(row.prompt, labels), V)
            res.append(
                {
                    "seed": s,
                    "rank": rank,
                    "id": row.id,
                    "trial": row.extra["optuna"]["trial"],
                    "dev": row.dev_score,
                    "dev_loglik": row.dev_loglik,
                    "train": row.train_score,
                    "V": r.metrics["accuracy"],
                    "nV": len(V),
                    "gold": r.gold.tolist(),
                    "probs": np.exp(r.scores).round(6).tolist(),
                }
            )
            print(
                s, rank, row.id, f"{time.time() - t0:.1f}s", row.dev_score, r.metrics["accuracy"], flush=True
            )
            out.write_text(json.dumps(res))
        scorer.clear_cache()
    out.write_text(json.dumps(res))


def analyse_ensemble(records: list[dict]) -> dict:
    """E_k: the mean of the top-k trials' label probabilities, arg max; V accuracy per seed (never test)."""
    import numpy as np

    stored = {
        (r["seed"], r["id"]): r["V"]
        for r in json.loads((REPO / "results/optuna/optuna_validation_scores.json").read_text())
        if r["kind"] == "trial"
    }
    out = {}
    for k in ENSEMBLE_K:
        per_seed = []
        for s in SEEDS:
            members = sorted((r for r in records if r["seed"] == s), key=lambda r: r["rank"])[:k]
            if len(members) < k:
                raise SystemExit(f"seed {s} has {len(members)} scored trials, E{k} needs {k}")
            gold = np.array(members[0]["gold"])
            probs = np.mean([np.array(m["probs"]) for m in members], axis=0)
            per_seed.append(
                {
                    "seed": s,
                    "V": float((probs.argmax(1) == gold).mean()),
                    "members": [
                        {"id": m["id"], "trial": m["trial"], "dev": m["dev"], "V": m["V"]} for m in members
                    ],
                }
            )
        vs = [p["V"] for p in per_seed]
        out[f"E{k}"] = {
            "k": k,
            "V_mean": statistics.mean(vs),
            "V_std": statistics.stdev(vs),
            "per_seed": per_seed,
        }
    e1 = out["E1"]
    sane = all(abs(p["V"] - stored[(p["seed"], p["members"][0]["id"])]) < 1e-9 for p in e1["per_seed"])
    best = max((n for n in out if n != "E1"), key=lambda n: out[n]["V_mean"])
    worse, adopt = _verdict(out[best]["V_mean"], e1["V_mean"], out[best]["per_seed"], e1["per_seed"])
    adopt = adopt and sane
    return {
        "ensembles": out,
        "sane": sane,
        "best": best,
        "worse_seeds": worse,
        "adopt": adopt,
        "min_gain": MIN_GAIN,
        "nV": sorted({r["nV"] for r in records}),
    }


def markdown_ensemble(res: dict, command: str) -> str:
    pct = _pct
    lines = [
        "# optuna on SST-2: an ensemble of the top trials, checked on validation data (not test)",
        "",
        _plan_line("optuna_ensemble_plan.md", command) + " The same trials "
        f"(`results/optuna/optuna_experiments_v2.db`) and V_s ({res['nV']} SST-2 training sentences per seed) as "
        "`results/optuna/optuna_validation.md`; test never read. Members are ranked by the product's pick rule R0 "
        "(dev accuracy, dev log-likelihood, train accuracy); an ensemble averages its members' label "
        "probabilities (each calibrated when its trial chose calibration).",
        "",
        "| candidate | V accuracy (mean ± std, 5 seeds) | per seed (13, 21, 42, 87, 100) | members' own V per seed |",
        "|---|---|---|---|",
    ]
    for n, e in res["ensembles"].items():
        lines.append(
            f"| {n} | {pct(e['V_mean'])} ± {pct(e['V_std'])} | "
            + ", ".join(pct(p["V"]) for p in e["per_seed"])
            + " | "
            + "; ".join("/".join(pct(m["V"]) for m in p["members"]) for p in e["per_seed"])
            + " |"
        )
    b, e1 = res["ensembles"][res["best"]], res["ensembles"]["E1"]
    lines += [
        "",
        "Sanity check (E1 equals the stored V of the current pick): "
        + ("passed." if res["sane"] else "FAILED."),
        "",
        f"Best ensemble: {res['best']} at {pct(b['V_mean'])} vs E1 {pct(e1['V_mean'])}, worse than E1 on "
        f"{res['worse_seeds']} of 5 seeds: "
        + (
            "adopted (the plan's bar: +1.0 point and worse on at most 2 seeds)."
            if res["adopt"]
            else "NOT adopted (the plan's bar: +1.0 point and worse on at most 2 seeds); nothing changes."
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scores", nargs="*", help="score files written by --score (analysis mode)")
    ap.add_argument("--score", help="comma-separated seeds to score on their validation sets")
    ap.add_argument("-o", "--output", help="score file to write (with --score)")
    ap.add_argument("--config", default=str(REPO / "configs/optuna_sst2.yaml"))
    ap.add_argument("--storage", default=f"sqlite:///{REPO / 'results/optuna/optuna_experiments_v2.db'}")
    ap.add_argument(
        "--selection",
        action="store_true",
        help="compare the pick rules of results/plans/optuna_selection_plan.md on the stored validation scores",
    )
    ap.add_argument(
        "--ensemble-score", help="comma-separated seeds: score their top trials on V, per example"
    )
    ap.add_argument(
        "--ensemble",
        action="store_true",
        help="analyse the top-k ensembles of results/plans/optuna_ensemble_plan.md from the given --ensemble-score files",
    )
    args = ap.parse_args(argv)
    if args.ensemble_score:
        ensemble_score(
            [int(x) for x in args.ensemble_score.split(",")],
            Path(args.config),
            args.storage,
            Path(args.output),
        )
        return 0
    if args.ensemble:
        records = [r for f in args.scores for r in json.loads(Path(f).read_text())]
        res = analyse_ensemble(records)
        (REPO / "results/optuna/optuna_ensemble.json").write_text(json.dumps(res, indent=1))
        md = markdown_ensemble(
            res,
            "python benchmarks/exp_optuna_validation.py --ensemble-score 13,42,100 -o "
            "results/optuna/optuna_ensemble_scores_a.json (and --ensemble-score 21,87 -o "
            "results/optuna/optuna_ensemble_scores_b.json in a second process); python "
            "benchmarks/exp_optuna_validation.py --ensemble results/optuna/optuna_ensemble_scores_{a,b}.json",
        )
        (REPO / "results/optuna/optuna_ensemble.md").write_text(md)
        print(md)
        return 0
    if args.selection:
        res = analyse_selection(
            json.loads((REPO / "results/optuna/optuna_validation_scores.json").read_text())
        )
        (REPO / "results/optuna/optuna_selection.json").write_text(json.dumps(res, indent=1))
        md = markdown_selection(res, "python benchmarks/exp_optuna_validation.py --selection")
        (REPO / "results/optuna/optuna_selection.md").write_text(md)
        print(md)
        return 0
    if args.score:
        score([int(x) for x in args.score.split(",")], Path(args.config), args.storage, Path(args.output))
        return 0
    records, seen = [], set()
    for f in args.scores:  # several processes may have scored the same rows: keep one of each
        for r in json.loads(Path(f).read_text()):
            key = (r["kind"], r["seed"], r.get("id"), r.get("template"), r.get("calibrate"))
            if key not in seen:
                seen.add(key)
                records.append(r)
    res = analyse(records)
    (REPO / "results/optuna/optuna_validation_scores.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k != "test"} for r in records])
    )
    (REPO / "results/optuna/optuna_validation.json").write_text(json.dumps(res, indent=1))
    command = (
        "python benchmarks/exp_optuna_validation.py --score 13,42,100 -o a.json (and --score 21,87 -o b.json "
        "in a second process); python benchmarks/exp_optuna_validation.py a.json b.json"
    )
    (REPO / "results/optuna/optuna_validation.md").write_text(markdown(res, command))
    print(markdown(res, " ".join(shlex.quote(a) for a in sys.argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
