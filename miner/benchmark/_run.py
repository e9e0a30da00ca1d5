"""Running a bench: every job through the runner, every test score once, then the report.

Per task, in this order (each step skips what an earlier, killed attempt finished):

1. the ``manual`` job of each seed and k (the hand-written prompts, raw and calibrated, on train
   and dev): its best prompt by dev is the reference every other row is compared with;
2. each searcher's jobs, through :func:`miner.runner.run` at the bench's budget (``resume``, so a
   killed job continues from its stored rows; a finished job has its record and is not re-run);
3. the baselines of each seed and k (oracle, zero-shot, demonstrations, linear probe, PEFT).

Test scores come from the bench's test cache: each distinct prompt is scored once on the task's
test sample (the same for every seed: it depends on the task spec only), and kept in
``<out>/tests/<task>.jsonl``, so a resumed bench scores nothing twice either. A job's seconds
are everything it caused: its search and the test scoring done for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from miner.benchmark._config import BenchConfig, BenchTask, load_bench_config, parse_bench_config
from miner.benchmark._util import machine, now, safe_name, write_json
from miner.errors import ConfigError, DataError, MinerError
from miner.scoring import measure_backward_cost

logger = logging.getLogger(__name__)
phase = logging.getLogger("miner.status")

REFERENCE = "manual (best by dev)"
ORACLE = "manual (oracle by test)"
RECORD_VERSION = 1


# ----------------------------------------------------------------------------- test cache


def _fingerprint(test: Sequence[Any]) -> str:
    """A test sample's identity: its examples' fields and labels, in order."""
    return hashlib.sha1(
        json.dumps([[e.fields, e.label] for e in test], sort_keys=True, default=str).encode()
    ).hexdigest()[:16]


class TestCache:
    """Test results of distinct prompts on one task's test sample, scored once per bench (append-only)."""

    def __init__(self, path: Path, test: Sequence[Any], metric: str) -> None:
        self.path = path
        self.test = test
        self.metric = metric
        self.fingerprint = _fingerprint(test)
        self.entries: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill: scored again
                    continue
                if e.get("fingerprint") == self.fingerprint:
                    self.entries[e["key"]] = e

    def get(self, prompt: Any, scorer_factory) -> tuple[dict[str, Any], float]:
        """The prompt's entry (test metric, per-example correctness) and the seconds spent on it now."""
        key = prompt.key
        if key in self.entries:
            return self.entries[key], 0.0
        from miner import selection

        t0 = time.perf_counter()
        res = selection.score(scorer_factory(), prompt, self.test, desc="test")
        seconds = time.perf_counter() - t0
        correct = (np.asarray(res.preds) == np.asarray(res.gold)).astype(int)
        e = {
            "key": key,
            "fingerprint": self.fingerprint,
            "test": float(res.metrics[self.metric]),
            "metrics": {k: float(v) for k, v in res.metrics.items()},
            "correct": "".join(map(str, correct.tolist())),
            "seconds": seconds,
            "forward_passes": res.cost.forward_passes,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(e) + "\n")
        self.entries[key] = e
        return e, seconds


# ----------------------------------------------------------------------------- the cost model


# ----------------------------------------------------------------------------- the bench


@dataclass
class BenchResult:
    """What a bench produced: its folder, every job record, the summary rows and the report files."""

    out: Path
    jobs: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _TaskPlan:
    spec: BenchTask
    datasets: dict[tuple[Any, int], Any]  # (k, seed) -> TaskData, test included
    prompts: list[Any]  # raw and calibrated Prompt objects, in order
    cache: TestCache | None = None


def _expand(prompts: Iterable[Any]) -> list[Any]:
    """Each prompt as written, then the ones not yet there calibrated (``calibrate`` flipped on)."""
    out: list[Any] = []
    for p in prompts:
        if all(p.key != q.key for q in out):
            out.append(p)
    for p in list(out):
        if not p.calibrate:
            c = dataclasses.replace(p, calibrate=True)
            if all(c.key != q.key for q in out):
                out.append(c)
    return out


def _run_config(
    cfg: BenchConfig, plan: _TaskPlan, searcher: Any, seeds: list[int], k: Any, bc: float
) -> dict:
    return {
        "name": f"bench:{cfg.name}",
        "task": plan.spec.task.model_dump(mode="json"),
        "model": cfg.model.model_dump(mode="json"),
        "prompts": [p.to_dict() for p in plan.prompts],
        "searchers": [searcher.model_dump(mode="json")],
        "seeds": seeds,
        "k": [k],
        "budget": {"max_forward_passes": cfg.budget.max_forward_passes, "backward_cost": bc},
        "storage": cfg.storage_url,
        "selection": cfg.selection.model_dump(mode="json"),
        "pick": cfg.pick,
        "ensemble": cfg.ensemble.model_dump(mode="json"),
        "content_free": cfg.content_free,
        "progress": cfg.progress,
        "parallel": cfg.parallel.model_dump(mode="json"),
        "resume": True,
    }


class Bench:
    """One bench: the checked config, its folder, the model and the test caches."""

    def __init__(
        self,
        cfg: BenchConfig,
        *,
        backend=None,
        resume: bool = False,
        progress: bool | None = None,
        command: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = cfg.out_dir
        self.resume = resume
        self.show = cfg.progress if progress is None else progress
        self.backend = backend
        self.command = command or " ".join(
            ["miner", "bench", *sys.argv[1:]] if sys.argv else ["miner", "bench"]
        )
        self.plans: list[_TaskPlan] = []
        self.backward_cost = 0.0
        self.cost_model: dict[str, Any] = {}
        self.test_seconds: dict[str, float] = {}

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Everything that can fail, before any job: data, test splits, the model, every run config."""
        from miner import runner
        from miner.models import load_backend
        from miner.prompts import Prompt
        from miner.tasks import load_task

        cfg = self.cfg
        if cfg.parallel.n_jobs > 1 and cfg.storage_url.startswith("sqlite:///:memory:"):
            raise ConfigError("parallel.n_jobs > 1 needs a shared storage, not an in-memory database")
        self._check_folder()
        safe_names: dict[str, str] = {}
        for t in cfg.tasks:
            other = safe_names.setdefault(safe_name(t.task.name), t.task.name)
            if other != t.task.name:
                raise ConfigError(
                    f"tasks {other!r} and {t.task.name!r} would share one record file name "
                    f"({safe_name(t.task.name)!r}): give one of them another name"
                )
        raw: list[tuple[BenchTask, dict]] = []
        for t in cfg.tasks:
            if t.task.source == "files" and not t.task.test:
                raise ConfigError(
                    f"task {t.task.name!r} has no test split (source files: give test: a path); "
                    "a bench compares held-out test scores, not a split carved from the training file"
                )
            try:
                datasets = {(k, s): load_task(t.task, k, s) for k in cfg.k for s in cfg.seeds}
            except (DataError, ConfigError) as exc:
                raise type(exc)(f"task {t.task.name!r}: {exc}") from None
            empty = next((d for d in datasets.values() if not d.test), None)
            if empty is not None:
                raise ConfigError(
                    f"task {t.task.name!r} has no test split: a bench compares held-out test scores"
                )
            samples = {_fingerprint(d.test) for d in datasets.values()}
            if len(samples) > 1:
                raise ConfigError(
                    f"task {t.task.name!r}: its test sample changes with the seed or k (e.g. a fact task "
                    "splits its pairs per seed), so a seed's training examples would be another seed's test: "
                    "a bench needs one fixed test split per task (give the task a test file)"
                )
            raw.append((t, datasets))
        if self.backend is None:
            m = cfg.model
            phase.info("loading model %s ...", m.name)
            self.backend = load_backend(
                m.name, kind=m.kind, device=m.device, dtype=m.dtype, max_length=m.max_length
            )
        from miner.search import default_prompts

        for t, datasets in raw:
            first = next(iter(datasets.values()))
            if t.prompts:
                prompts = [
                    Prompt.create(
                        p.template,
                        p.verbalizer,
                        first.label_names,
                        calibrate=p.calibrate,
                        triggers=tuple(p.triggers),
                    )
                    for p in t.prompts
                ]
            else:
                prompts = default_prompts(first, self.backend)
            self.plans.append(_TaskPlan(t, datasets, _expand(prompts)))
        # every run config of the grid, checked as `miner validate` checks one (nothing written)
        for plan in self.plans:
            for spec in [self._manual_spec(), *cfg.searcher_specs()]:
                rc = _run_config(cfg, plan, spec, list(cfg.seeds), cfg.k[0], 0.0)
                rc["k"] = list(cfg.k)
                rc["parallel"]["n_jobs"] = 1  # checked here, on this process's model
                try:
                    runner.prepare(rc, backend=self.backend, dry_run=True)
                except MinerError as exc:
                    raise type(exc)(f"task {plan.spec.task.name!r}, searcher {spec.name!r}: {exc}") from None
        self._cost_model()  # last: the prompts it renders are checked now

    def _manual_spec(self):
        from miner.config import SearcherSpec

        return SearcherSpec(name="manual")

    def _manifest(self) -> dict[str, Any]:
        return {"name": self.cfg.name, "config": self.cfg.model_dump(mode="json")}

    def _check_folder(self) -> dict[str, Any] | None:
        """Refuse a folder this bench cannot continue; return the stored ``bench.json`` (None: a new bench)."""
        path = self.out / "bench.json"
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"bench folder {str(self.out)!r} is not a folder")
        if not path.exists():
            if self.out.exists() and any((self.out / "jobs").glob("*.json")):
                raise ConfigError(f"bench folder {str(self.out)!r} holds job records but no bench.json")
            return None
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"bench folder {str(self.out)!r}: bench.json is unreadable ({exc})") from None
        if not self.resume:
            raise ConfigError(
                f"bench folder {str(self.out)!r} already holds bench {stored.get('name')!r}: "
                "--resume continues it; remove the folder (or set out:) to start again"
            )
        mine = self._manifest()["config"]
        theirs = stored.get("config", {})
        ident = (
            "tasks",
            "model",
            "searchers",
            "seeds",
            "k",
            "budget",
            "selection",
            "pick",
            "ensemble",
            "content_free",
            "test_top",
            "baselines",
        )
        changed = [
            key
            for key in ident
            if json.dumps(mine.get(key), sort_keys=True) != json.dumps(theirs.get(key), sort_keys=True)
        ]
        again = "--resume continues the same bench only (remove the folder, or set out:, to start again)"
        # adding seeds, searchers or tasks extends a bench; changing what a finished job was is refused
        refused = [key for key in changed if key not in ("seeds", "searchers", "tasks")]
        if refused:
            raise ConfigError(f"bench folder {str(self.out)!r} was run with another {refused[0]}: {again}")

        def by_name(items: Any, name_of) -> dict[str, str]:
            return (
                {name_of(x): json.dumps(x, sort_keys=True) for x in items} if isinstance(items, list) else {}
            )

        for key, name_of in (
            ("tasks", lambda x: x["task"]["name"]),
            ("searchers", lambda x: x["name"]),
        ):
            old, new = by_name(theirs.get(key), name_of), by_name(mine.get(key), name_of)
            for name in old.keys() & new.keys():
                if old[name] != new[name]:
                    what = "task" if key == "tasks" else "searcher"
                    raise ConfigError(
                        f"bench folder {str(self.out)!r} ran {what} {name!r} with other settings: {again}"
                    )
        return stored

    def _cost_model(self) -> None:
        b = self.cfg.budget
        if b.backward_cost != "measure":
            self.backward_cost = float(b.backward_cost)
            self.cost_model = {"backward_cost": self.backward_cost, "source": "config"}
            return
        stored = self._stored_cost_model()
        if stored is not None and stored.get("model") == self.cfg.model.name:
            self.cost_model = stored
            self.backward_cost = float(stored["backward_cost"])
            return
        plan = self.plans[0]
        data = next(iter(plan.datasets.values()))
        p = plan.prompts[0]
        texts = [
            p.parsed.render({f: str(e.fields[f]) for f in p.parsed.fields}, answer="").rstrip()
            for e in data.train[: self.cfg.model.batch_size]
        ]
        phase.info("measuring the cost of a backward pass on %d training examples ...", len(texts))
        m = measure_backward_cost(self.backend, texts)
        m.update(model=self.cfg.model.name, machine=machine(), date=now(), source="measured")
        self.cost_model = m
        self.backward_cost = float(m["backward_cost"])

    def _stored_cost_model(self) -> dict[str, Any] | None:
        """The bench folder's cost_model.json (None when there is none); a one-line error when it is
        unreadable or has no backward cost, so a damaged folder is named instead of raising a traceback."""
        path = self.out / "cost_model.json"
        if not path.exists():
            return None
        try:
            stored = json.loads(path.read_text())
            float(stored["backward_cost"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"bench folder {str(self.out)!r}: cost_model.json is unreadable ({type(exc).__name__}: {exc})"
            ) from None
        return dict(stored)

    # ------------------------------------------------------------------ run
    def run(self) -> BenchResult:
        t0 = time.perf_counter()
        self.check()
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "bench.json", {**self._manifest(), "started": now(), "command": self.command})
        write_json(self.out / "cost_model.json", self.cost_model)
        phase.info(
            "bench %s: %d task(s) x %d searcher(s) x %d seed(s) x %d k at %d forward-pass equivalents "
            "per job (a backward pass = %.2f forward) -> %s",
            self.cfg.name,
            len(self.plans),
            len(self.cfg.searcher_specs()),
            len(self.cfg.seeds),
            len(self.cfg.k),
            self.cfg.budget.max_forward_passes,
            self.backward_cost,
            self.out,
        )
        for plan in self.plans:
            self._run_task(plan)
        jobs = self.records()
        from miner.benchmark._report_build import build_report

        summary, files = build_report(self, jobs, time.perf_counter() - t0)
        return BenchResult(self.out, jobs, summary, files, time.perf_counter() - t0)

    def report(self) -> BenchResult:
        """Write the report from the job records already on disk, running nothing (no model is loaded):
        a look at a bench that is still running, or was stopped, in another process."""
        t0 = time.perf_counter()
        if not (self.out / "bench.json").exists():
            raise ConfigError(f"no bench in {str(self.out)!r} (no bench.json): run the bench first")
        self.resume = True
        stored = self._check_folder() or {}  # the same bench: the same tasks, model, budget and rules
        started = stored.get("command")
        if started and started != self.command:
            self.command = f"{started} (this report: {self.command})"
        stored_cm = self._stored_cost_model()
        if stored_cm is not None:
            self.cost_model = stored_cm
            self.backward_cost = float(stored_cm.get("backward_cost", 0.0))
        elif self.cfg.budget.backward_cost != "measure":
            self.backward_cost = float(self.cfg.budget.backward_cost)
        jobs = self.records()
        if not jobs:
            raise ConfigError(f"bench folder {str(self.out)!r} holds no job record of this config yet")
        from miner.benchmark._report_build import build_report

        summary, files = build_report(self, jobs, None)
        return BenchResult(self.out, jobs, summary, files, time.perf_counter() - t0)

    def grid_done(self, jobs: Sequence[dict[str, Any]]) -> tuple[int, int]:
        """How many of the grid's manual and searcher jobs ``jobs`` holds, and how many a finished bench
        has (the baselines come with the manual jobs)."""
        cfg = self.cfg
        expected = len(cfg.tasks) * len(cfg.seeds) * len(cfg.k) * (1 + len(cfg.searcher_specs()))
        done = sum(1 for j in jobs if j.get("family") != "baseline" or j.get("name") == REFERENCE)
        return done, expected

    def records(self) -> list[dict[str, Any]]:
        """Every job record of this bench's grid (tasks, rows and seeds of the config), in grid order."""
        names = {t.task.name for t in self.cfg.tasks}
        keep = {str(s) for s in self.cfg.seeds}
        ks = {str(k) for k in self.cfg.k}
        rows = [
            REFERENCE,
            *[s.name for s in self.cfg.searcher_specs()],
            ORACLE,
            "zero-shot",
            "demonstrations",
            "linear probe",
            "peft prompt tuning",
        ]
        out = []
        for path in sorted((self.out / "jobs").glob("*.json")):
            rec = json.loads(path.read_text())
            if (
                rec["task"] in names
                and str(rec["seed"]) in keep
                and str(rec["k"]) in ks
                and rec["name"] in rows  # a searcher dropped from the config is not this bench's row
            ):
                out.append(rec)
        order = {n: i for i, n in enumerate(rows)}
        tasks = {t.task.name: i for i, t in enumerate(self.cfg.tasks)}
        out.sort(key=lambda r: (tasks[r["task"]], order.get(r["name"], len(order)), str(r["k"]), r["seed"]))
        return out

    def _record_path(self, task: str, name: str, seed: int, k: Any) -> Path:
        return self.out / "jobs" / f"{safe_name(task)}__{safe_name(name)}__{seed}__k{k}.json"

    def _done(self, task: str, name: str, seed: int, k: Any) -> bool:
        return self._record_path(task, name, seed, k).exists()

    def _save(self, rec: dict[str, Any]) -> None:
        rec["version"] = RECORD_VERSION
        rec["id"] = f"{rec['task']}|{rec['name']}|{rec['seed']}|{rec['k']}"
        write_json(self._record_path(rec["task"], rec["name"], rec["seed"], rec["k"]), rec)

    def _scorer_factory(self):
        from miner.artifacts import artifacts_for_storage
        from miner.scoring import Scorer

        m = self.cfg.model
        artifacts = artifacts_for_storage(self.cfg.storage_url)
        return lambda: Scorer(
            self.backend,
            batch_size=m.batch_size,
            max_batch_tokens=m.max_batch_tokens,
            stem_cache_mb=m.stem_cache_mb,
            progress=self.show,
            content_free=self.cfg.content_free,
            soft_resolver=artifacts.get_tensor,
        )

    def _test(self, plan: _TaskPlan, prompt: Any) -> tuple[dict[str, Any], float]:
        assert plan.cache is not None
        return plan.cache.get(prompt, self._scorer_factory())

    def _run_task(self, plan: _TaskPlan) -> None:
        cfg = self.cfg
        name = plan.spec.task.name
        first = next(iter(plan.datasets.values()))
        plan.cache = TestCache(self.out / "tests" / f"{safe_name(name)}.jsonl", first.test, first.metric)
        for k in cfg.k:
            for spec in [self._manual_spec(), *cfg.searcher_specs()]:
                row = REFERENCE if spec.name == "manual" else spec.name
                todo = [s for s in cfg.seeds if not self._done(name, row, s, k)]
                if not todo:
                    continue
                self._run_jobs(plan, spec, todo, k)
            for seed in cfg.seeds:
                self._baselines(plan, seed, k)

    def _run_jobs(self, plan: _TaskPlan, spec: Any, seeds: list[int], k: Any) -> None:
        from miner import runner

        rc = _run_config(self.cfg, plan, spec, seeds, k, self.backward_cost)
        parallel = self.cfg.parallel.n_jobs > 1 and len(seeds) > 1
        result = runner.run(
            rc, backend=None if parallel else self.backend, progress=self.show, score_test=False
        )
        for res in result.jobs:
            data = plan.datasets[(res.job.k, res.job.seed)]
            if spec.name == "manual":
                self._save_manual(plan, res, data)
            else:
                self._save_searcher(plan, spec.name, res, data)

    # ------------------------------------------------------------------ records
    def _base(self, plan: _TaskPlan, name: str, family: str, data) -> dict[str, Any]:
        return {
            "task": plan.spec.task.name,
            "name": name,
            "family": family,
            "oracle": False,
            "seed": data.seed,
            "k": data.k,
            "metric": data.metric,
            "n_test": len(data.test),
            "budget": self.cfg.budget.max_forward_passes,
            "backward_cost": self.backward_cost,
        }

    def _cost(self, res) -> dict[str, Any]:
        evs = res.evaluations
        fwd = max(res.cost.forward_passes, sum(e.cost.forward_passes for e in evs))
        bwd = max(res.cost.backward_passes, sum(e.cost.backward_passes for e in evs))
        return {
            "forward_passes": fwd,
            "backward_passes": bwd,
            "forward_equivalents": fwd + self.backward_cost * bwd,
            "stopped_by_budget": res.stopped_by_budget,
            "n_evaluations": sum(1 for e in evs if not e.baseline),
        }

    def _curve(self, res) -> list[list[float]]:
        spent, best, out = 0.0, -1.0, []
        for e in res.evaluations:
            spent += e.cost.forward_passes + self.backward_cost * e.cost.backward_passes
            if e.dev is not None and e.dev.score > best:
                best = e.dev.score
            if best >= 0:
                out.append([round(spent, 3), best])
        return out

    def _entry(self, plan: _TaskPlan, ev) -> tuple[dict[str, Any], dict[str, Any], float]:
        entry, seconds = self._test(plan, ev.prompt)
        return (
            {
                "prompt": ev.prompt.to_dict(),
                "dev": ev.dev.score if ev.dev else None,
                "train": ev.train.score if ev.train else None,
            },
            entry,
            seconds,
        )

    def _save_manual(self, plan: _TaskPlan, res, data) -> None:
        bases = [e for e in res.evaluations if e.baseline] or list(res.evaluations)
        best = max(bases, key=lambda e: e.rank_key)  # dev, ties by dev log-likelihood, then train
        info, entry, seconds = self._entry(plan, best)
        rec = self._base(plan, REFERENCE, "baseline", data)
        rec.update(self._cost(res))
        rec.update(
            test=entry["test"],
            correct=entry["correct"],
            dev=info["dev"],
            train=info["train"],
            pick={
                "prompt": info["prompt"],
                "reason": f"the best of {len(bases)} hand-written prompts by dev",
            },
            reference_test=entry["test"],
            best_candidate_test=None,
            guard_fired=False,
            n_evaluations=len(bases),
            seconds=res.seconds + seconds,
            test_seconds=seconds,
            curve=self._curve(res),
            candidates=[
                {
                    "prompt": e.prompt.to_dict(),
                    "dev": e.dev.score if e.dev else None,
                    "train": e.train.score if e.train else None,
                }
                for e in bases
            ],
        )
        self._save(rec)

    def _reference(self, plan: _TaskPlan, seed: int, k: Any) -> dict[str, Any] | None:
        path = self._record_path(plan.spec.task.name, REFERENCE, seed, k)
        return json.loads(path.read_text()) if path.exists() else None

    def _save_searcher(self, plan: _TaskPlan, name: str, res, data) -> None:
        from miner.search import searchers

        family = "continuous" if searchers.get(name).capabilities.prompt_kind == "soft" else "discrete"
        pick = res.best
        rec = self._base(plan, name, family, data)
        rec.update(self._cost(res))
        if pick is None:  # nothing scored (the budget ran out on the baselines)
            raise MinerError(f"{res.job.label}: the job made no evaluation (is the budget too small?)")
        info, entry, seconds = self._entry(plan, pick)
        d = res.decision
        ranked = (
            d.ranked if d is not None else sorted(res.evaluations, key=lambda e: e.rank_key, reverse=True)
        )
        cands = [e for e in ranked if not e.baseline][: self.cfg.test_top]
        if (
            d is not None
            and d.unguarded is not None
            and all(d.unguarded.prompt.key != e.prompt.key for e in cands)
        ):
            cands.append(d.unguarded)
        tests = []
        for e in cands:
            ce, s = self._test(plan, e.prompt)
            seconds += s
            tests.append(ce["test"])
        ref = self._reference(plan, data.seed, data.k)
        rec.update(
            test=entry["test"],
            correct=entry["correct"],
            dev=info["dev"],
            train=info["train"],
            pick={"prompt": info["prompt"], "reason": d.reason if d else "the searcher's best by dev"},
            reference_test=ref["test"] if ref else None,
            best_candidate_test=max([entry["test"], *tests]) if tests else None,
            candidates_tested=len(tests),
            guard_fired=bool(d.fired) if d else False,
            pick_is_manual=bool(getattr(d.guarded if d else pick, "baseline", False)),
            unguarded_test=(self._test(plan, d.unguarded.prompt)[0]["test"] if d and d.unguarded else None),
            seconds=res.seconds + seconds,
            test_seconds=seconds,
            curve=self._curve(res),
        )
        self._save(rec)

    # ------------------------------------------------------------------ baselines
    def _baselines(self, plan: _TaskPlan, seed: int, k: Any) -> None:
        from miner.prompts import Prompt

        b = self.cfg.baselines
        task = plan.spec.task.name
        ref = self._reference(plan, seed, k)
        if ref is None:
            return
        data = plan.datasets[(k, seed)]
        best = Prompt.from_dict(ref["pick"]["prompt"], data.label_names)
        todo = [
            n
            for n, on in (
                (ORACLE, True),
                ("zero-shot", b.zero_shot),
                ("demonstrations", bool(b.demonstrations)),
                ("linear probe", b.linear_probe),
                ("peft prompt tuning", b.peft),
            )
            if on and not self._done(task, n, seed, k)
        ]
        if todo:
            phase.info("%s | seed=%s | k=%s: baselines: %s", task, seed, k, ", ".join(todo))
        if not self._done(task, ORACLE, seed, k):
            t0 = time.perf_counter()
            scored = [(self._test(plan, p)[0], p) for p in plan.prompts]
            entry, p = max(scored, key=lambda x: x[0]["test"])
            rec = self._base(plan, ORACLE, "baseline", data)
            rec.update(
                oracle=True,
                test=entry["test"],
                correct=entry["correct"],
                pick={
                    "prompt": p.to_dict(),
                    "reason": f"the best of {len(plan.prompts)} hand-written prompts by TEST (an oracle: not a method)",
                },
                reference_test=ref["test"],
                seconds=time.perf_counter() - t0,
                test_seconds=time.perf_counter() - t0,
                forward_passes=0,
                backward_passes=0,
                forward_equivalents=0,
                curve=[],
            )
            self._save(rec)
        if b.zero_shot and not self._done(task, "zero-shot", seed, k):
            p = plan.prompts[0]
            entry, seconds = self._test(plan, p)
            rec = self._base(plan, "zero-shot", "baseline", data)
            rec.update(
                test=entry["test"],
                correct=entry["correct"],
                reference_test=ref["test"],
                pick={
                    "prompt": p.to_dict(),
                    "reason": "the first hand-written prompt, as written: no labelled data to choose with",
                },
                seconds=seconds,
                test_seconds=seconds,
                forward_passes=0,
                backward_passes=0,
                forward_equivalents=0,
                curve=[],
            )
            self._save(rec)
        if b.demonstrations and not self._done(task, "demonstrations", seed, k):
            self._demonstrations(plan, best, data, ref)
        if b.linear_probe and not self._done(task, "linear probe", seed, k):
            self._probe(plan, best, data, ref)
        if b.peft and not self._done(task, "peft prompt tuning", seed, k):
            self._peft(plan, best, data, ref)

    def _demonstrations(self, plan: _TaskPlan, best, data, ref) -> None:
        from miner.prompts import Prompt, with_demonstrations

        draws = self.cfg.baselines.demonstrations
        answers = [ws[0] for ws in best.verbalizer.words]
        t0 = time.perf_counter()
        vecs, tests, templates = [], [], []
        for draw in range(draws):
            rng = random.Random(f"{data.seed}-bench-demonstrations-{draw}")
            shown = []
            for c in range(len(data.label_names)):
                pool = [e for e in data.train if e.label == c]
                if pool:
                    shown.append(rng.choice(pool))
            rng.shuffle(shown)
            template = with_demonstrations(best.template, shown, answers)
            p = Prompt.create(template, best.verbalizer.to_dict(), data.label_names, calibrate=best.calibrate)
            entry, _ = self._test(plan, p)
            vecs.append(np.frombuffer(entry["correct"].encode(), dtype=np.uint8) - ord("0"))
            tests.append(entry["test"])
            templates.append(template)
        seconds = time.perf_counter() - t0
        rec = self._base(plan, "demonstrations", "baseline", data)
        rec.update(
            test=float(np.mean(tests)),
            correct=[round(float(v), 4) for v in np.mean(vecs, axis=0)],
            draw_tests=tests,
            reference_test=ref["test"],
            pick={
                "prompt": best.to_dict(),
                "reason": f"the best hand-written prompt by dev with one training example per class before the query; mean of {draws} seeded draws",
                "templates": templates,
            },
            seconds=seconds,
            test_seconds=seconds,
            forward_passes=0,
            backward_passes=0,
            forward_equivalents=0,
            curve=[],
        )
        self._save(rec)

    def _probe(self, plan: _TaskPlan, best, data, ref) -> None:
        from miner.benchmark._probe import linear_probe
        from miner.scoring import CostCounter

        counter = CostCounter()
        t0 = time.perf_counter()
        r = linear_probe(
            self.backend, best, list(data.train) + list(data.dev), data.test, seed=data.seed, counter=counter
        )
        seconds = time.perf_counter() - t0
        correct = (np.asarray(r.preds) == np.asarray(r.gold)).astype(int)
        rec = self._base(plan, "linear probe", "baseline", data)
        rec.update(
            test=_metric(data, r.preds),
            correct="".join(map(str, correct.tolist())),
            reference_test=ref["test"],
            pick={
                "prompt": best.to_dict(),
                "reason": f"logistic regression (C={r.C:g}, cross-validated) on {r.n_features} hidden units at the answer position, fitted on train + dev",
            },
            forward_passes=counter.total.forward_passes,
            backward_passes=0,
            forward_equivalents=counter.total.forward_passes,
            seconds=seconds,
            test_seconds=0.0,
            curve=[],
        )
        self._save(rec)

    def _peft(self, plan: _TaskPlan, best, data, ref) -> None:
        import importlib.util

        if importlib.util.find_spec("peft") is None:
            logger.warning("peft is not installed: the PEFT prompt-tuning baseline is left out")
            return
        if self.backend.kind != "causal":
            logger.warning("PEFT prompt tuning baseline: causal LMs only; left out for %s", self.backend.name)
            return
        from miner.benchmark._probe import peft_prompt_tuning

        t0 = time.perf_counter()
        r = peft_prompt_tuning(
            self.backend,
            best,
            data.train,
            data.dev,
            data.test,
            budget_forward_equivalents=self.cfg.budget.max_forward_passes,
            backward_cost=self.backward_cost,
            seed=data.seed,
            n_tokens=self.cfg.baselines.peft_tokens,
        )
        seconds = time.perf_counter() - t0
        correct = (np.asarray(r.preds) == np.asarray(r.gold)).astype(int)
        rec = self._base(plan, "peft prompt tuning", "baseline", data)
        rec.update(
            test=_metric(data, r.preds),
            correct="".join(map(str, correct.tolist())),
            dev=r.dev_accuracy,
            reference_test=ref["test"],
            pick={
                "prompt": best.to_dict(),
                "reason": f"PEFT PromptTuningConfig, {self.cfg.baselines.peft_tokens} virtual tokens, {r.steps} steps at the bench's budget",
            },
            forward_passes=r.forward_passes,
            backward_passes=r.steps,
            forward_equivalents=r.forward_equivalents,
            seconds=seconds,
            test_seconds=None,
            curve=[],
        )
        self._save(rec)


def _metric(data, preds) -> float:
    """The task's metric of predictions on its test split."""
    from miner.scoring import compute_metrics

    gold = [e.label for e in data.test]
    return compute_metrics(gold, np.asarray(preds), len(data.label_names))[data.metric]


def bench(
    config: BenchConfig | dict | str | Path,
    *,
    resume: bool = False,
    n_jobs: int | None = None,
    out: str | Path | None = None,
    backend=None,
    progress: bool | None = None,
    command: str | None = None,
    report_only: bool = False,
) -> BenchResult:
    """Run a bench (``miner bench CONFIG``): every job, the baselines, the statistics and the report.

    ``resume`` continues a bench whose folder exists (finished jobs are not re-run, a killed job
    continues from its stored rows); ``n_jobs`` runs each searcher's seeds on that many joblib
    workers (``parallel:`` in the config says which joblib backend: loky or Dask). ``report_only``
    writes the report from the job records already in the folder and runs nothing (a partial report
    while the bench runs elsewhere, or after it was stopped).
    """
    cfg = load_bench_config(config) if isinstance(config, (str, Path)) else parse_bench_config(config)
    update: dict[str, Any] = {}
    if out is not None:
        update["out"] = str(out)
    if n_jobs is not None:
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
            raise ConfigError(f"n_jobs must be a positive int, got {n_jobs!r}")
        update["parallel"] = cfg.parallel.model_copy(update={"n_jobs": n_jobs})
    if update:
        cfg = cfg.model_copy(update=update)
    b = Bench(cfg, backend=backend, resume=resume, progress=progress, command=command)
    return b.report() if report_only else b.run()
