"""The trial loop of the ``optuna`` searcher (ask -> distributions -> inner search -> evaluate -> tell)."""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from miner.errors import BudgetExhausted, ConfigError, PromptError
from miner.prompts import Prompt, with_demonstrations
from miner.search._base import Evaluate, SearchContext, rank_key
from miner.search._labelwords import candidate_pool, decoded_vocab, search_verbalizers, word_mask
from miner.search._optuna_space import TemplateSpace, build_space
from miner.search._optuna_study import (
    FINISHED,
    SharedStudy,
    known_dead,
    make_pruner,
    make_sampler,
    open_study,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


class _Pruned(Exception):
    pass


@dataclass
class _Job:
    """Run state of one search call (never stored on the searcher)."""

    s: Any  # the searcher (hyperparameters)
    ctx: SearchContext
    evaluate: Evaluate
    space: TemplateSpace
    order: list[Any]  # train examples, stratified by label, seeded
    user_words: list[list[str]]  # per label
    vocabulary: frozenset[str] | None = None
    masks: dict[bool, torch.Tensor] = field(default_factory=dict)
    multi: dict[tuple[str, str, bool], torch.Tensor] = field(
        default_factory=dict
    )  # (template, word, content_free) -> [N_all] scores
    multi_objective: bool = False
    seed: int = 0  # of the sampler and of the demonstration draws


def _stratified(train: Sequence[Any], n_labels: int, seed: int) -> list[Any]:
    """Round-robin over labels of a seeded shuffle: every prefix has every label, balanced."""
    rng = random.Random(seed)
    groups = [[e for e in train if e.label == c] for c in range(n_labels)]
    for g in groups:
        rng.shuffle(g)
    out = []
    for i in range(max((len(g) for g in groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out


def _single_token(be, word: str, space: bool) -> int | None:
    ids = be.tokenize((" " if space else "") + word)
    return ids[0] if len(ids) == 1 else None


def _placeholder(be, space: bool, vocab) -> str:
    """A word that is one token in this context (for planning 'next'-token passes)."""
    for w in ("a", "the", "x", "I"):
        if _single_token(be, w, space) is not None:
            return w
    for s in vocab:
        w = s.strip()
        if w and re.match(r"^\w+$", w) and _single_token(be, w, space) is not None:
            return w
    raise PromptError("no single-token word found in the vocabulary")  # pragma: no cover


@dataclass(frozen=True)
class JobSetup:
    """What a job's parameters resolve to against its task (see :func:`check_job`)."""

    space: TemplateSpace
    user_words: list[list[str]]  # per label: label_words, then the seed prompts' words
    vocabulary: frozenset[str] | None


def check_job(s, ctx: SearchContext) -> JobSetup:
    """Resolve the parameters against one job before its first trial; a bad one is a ``ConfigError``.

    ``OptunaSearcher.validate`` calls it for every job before any row is written, ``run_study`` before
    its first trial, so a parameter that only fails against the task fails the same way in both.
    """
    labels = ctx.label_names
    space = build_space(s, ctx.backend.kind, ctx.text_fields, ctx.prompts, ctx.logger, label_names=labels)
    unknown = [k for k in s.label_words if k not in labels]
    if unknown:
        raise ConfigError(
            f"optuna searcher: label_words names unknown label {unknown[0]!r}; the labels are {list(labels)}"
        )
    vocabulary = _vocabulary(s.vocabulary)
    if not ctx.task.train:
        raise ConfigError("optuna searcher: the task has no training examples to find label words with")
    user_words = [list(dict.fromkeys(s.label_words.get(lab, []))) for lab in labels]
    for p in ctx.prompts:
        if p.verbalizer.labels == tuple(labels):
            for c, ws in enumerate(p.verbalizer.words):
                user_words[c] = list(dict.fromkeys(user_words[c] + list(ws)))
    if not any(user_words):  # no words anywhere (no prompts either): the label names seed the pool
        from miner.search._defaults import label_words

        named = label_words(labels)
        user_words = [list(named.get(lab, [])) for lab in labels]
    return JobSetup(space, user_words, vocabulary)


def run_study(s, ctx: SearchContext, evaluate: Evaluate) -> None:
    labels = ctx.label_names
    be = ctx.backend
    setup = check_job(s, ctx)
    seed = s.seed if s.seed is not None else ctx.seed
    job = _Job(
        s,
        ctx,
        evaluate,
        setup.space,
        _stratified(ctx.task.train, len(labels), seed),
        setup.user_words,
        vocabulary=setup.vocabulary,
        multi_objective=s.sampler == "nsga2",
        seed=seed,
    )

    persistent = ctx.storage_url is not None and bool(ctx.job_key or s.study_name)
    name = s.study_name or f"miner-{ctx.job_key}"
    resumed = ctx.budget is not None and ctx.budget.evaluations > 0
    directions = ["maximize", "minimize"] if job.multi_objective else ["maximize"]
    shared = open_study(
        ctx.storage_url if persistent else None,
        name,
        directions,
        make_sampler(s.sampler, seed, s.n_startup_trials),
        make_pruner(s.pruner, s.n_startup_trials),
        s.n_trials,
        resumed,
        ctx.started_at,
        s.heartbeat_grace_s,
        sampler_for=lambda offset: make_sampler(
            s.sampler, (seed + 7919 * offset) % 2**32, s.n_startup_trials
        ),
    )
    study = shared.study
    study.set_user_attr(
        "miner",
        {
            "job_key": ctx.job_key,
            "task": ctx.task.name,
            "model": be.name,
            "objective": "dev score + tie_weight * exp(dev loglik)",
            "tie_weight": s.tie_weight,
        },
    )
    ctx.logger.info(
        "optuna: study %r (%s), %d finished trials",
        study.study_name,
        "in the leaderboard database" if persistent else "in memory",
        shared.finished(),
    )
    mine: set[int] = set()  # trials this call finished
    arrived_done = None  # the study needed nothing from this call when it started
    waiting_logged = False
    settled = shared.created  # a joined study's trials in flight are settled before this worker draws
    while True:
        shared.recover()
        counts = shared.counts()
        finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        running, queued = counts[TrialState.RUNNING], counts[TrialState.WAITING]
        dead = [
            t for t in shared.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if known_dead(t)
        ]
        if not settled and dead and shared.storage is not None:
            # A killed run's trial stays RUNNING until its heartbeat goes stale: wait for it to be failed
            # and queued again, so that every new trial is drawn from the same history as in an
            # uninterrupted run (see SharedStudy.sampler_for). Live workers' trials are not waited for.
            if not waiting_logged:
                ctx.logger.info(
                    "optuna: %d trial(s) of a killed worker in flight; waiting up to %d s for them "
                    "to turn stale and be queued again",
                    len(dead),
                    shared.grace,
                )
                waiting_logged = True
            time.sleep(min(1.0, shared.interval))
            continue
        if not settled:
            settled, waiting_logged = True, False
        if arrived_done is None:
            arrived_done = finished >= s.n_trials and not running and not queued
        # Trials in flight count towards n_trials: their workers finish them, or they turn stale and
        # come back queued. A queued trial (a retry, or one a user enqueued) is always run.
        if finished + running >= s.n_trials and not queued:
            if not running or shared.storage is None:
                break
            if not waiting_logged:
                ctx.logger.info(
                    "optuna: waiting for %d trial(s) of other workers (re-run here if their worker died)",
                    running,
                )
                waiting_logged = True
            time.sleep(min(1.0, shared.interval))
            continue
        trial, beat = shared.ask()
        try:
            values = _trial(job, study, trial)
        except _Pruned:
            _tell(shared, trial, beat, mine, ctx.logger, state=TrialState.PRUNED)
            continue
        except UpdateFinishedTrialError:
            # Another worker failed the trial: no heartbeat of it reached the database within the grace period.
            _stop(beat)
            ctx.logger.warning(
                "optuna: trial %d was failed by another worker (no heartbeat within %d s); "
                "its parameters were queued again",
                trial.number,
                shared.grace,
            )
            continue
        except BaseException:
            # Budget exhausted, interrupted or a real error: the trial did not finish.
            _tell(shared, trial, beat, mine, ctx.logger, state=TrialState.FAIL)
            raise
        _tell(shared, trial, beat, mine, ctx.logger, values=values)
    # ensemble_top: the runner builds the job's ensemble after the search (Searcher.ensemble_request).


def _stop(beat) -> None:
    if beat is not None:
        beat.stop()


def _tell(shared: SharedStudy, trial: optuna.Trial, beat, mine: set[int], log, **kw) -> None:
    _stop(beat)
    frozen = shared.study.tell(trial, skip_if_finished=True, **kw)
    if frozen.state in FINISHED:
        mine.add(trial.number)
    wanted = kw.get("state", TrialState.COMPLETE)
    if frozen.state != wanted:
        log.warning(
            "optuna: trial %d had been failed by another worker (no heartbeat within %d s); its result is not in the "
            "study",
            trial.number,
            shared.grace,
        )


def top_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The study's ``k`` best finished trials with distinct prompts, best first.

    Ranked by the runner's own ``rank_key`` (dev score, dev log-likelihood, train score; the
    earlier trial on a tie); trials without a scored prompt are skipped.
    """

    def rank(t):
        a = t.user_attrs
        return (*rank_key(a.get("dev_score"), a.get("dev_loglik"), a.get("train_score")), -t.number)

    done = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "prompt" in t.user_attrs
    ]
    out, keys = [], set()
    for t in sorted(done, key=rank, reverse=True):
        if t.user_attrs.get("prompt_key") not in keys:
            keys.add(t.user_attrs.get("prompt_key"))
            out.append(t)
    return out[:k]


def _vocabulary(value) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        from pathlib import Path

        path = Path(value)
        if not path.is_file():
            raise ConfigError(f"optuna searcher: vocabulary file {value!r} does not exist")
        try:
            value = path.read_text(encoding="utf-8").split()
        except UnicodeDecodeError:
            raise ConfigError(f"optuna searcher: vocabulary file {value!r} is not UTF-8") from None
    words = frozenset(w.strip() for w in value if w.strip())
    if not words:
        raise ConfigError("optuna searcher: vocabulary is empty")
    return words


def _choose(s, trial: optuna.Trial):
    def choose(name: str, options: Sequence[Any]) -> Any:
        options = list(options)
        if len(options) == 1:
            return options[0]
        if s.sampler == "cmaes":  # CMA-ES models integers, not categories
            return options[trial.suggest_int(name, 0, len(options) - 1)]
        return trial.suggest_categorical(name, options)

    return choose


def _demonstrations(job: _Job, template: str, n_per_label: int, draw: int) -> tuple[str, list[Any]]:
    """``template`` with ``n_per_label`` seeded training examples per label put before the query.

    Each example is rendered with the template itself and its label's first user word (the
    label name when there is none). Returns the new template and the examples shown.
    """
    if n_per_label <= 0:
        return template, []
    ctx = job.ctx
    labels = ctx.label_names
    rng = random.Random(f"{job.seed}-demos-{draw}")
    shown: list[Any] = []
    for c in range(len(labels)):
        pool = [e for e in ctx.task.train if e.label == c]
        shown += rng.sample(pool, min(n_per_label, len(pool)))
    rng.shuffle(shown)
    words = [job.user_words[c][0] if job.user_words[c] else labels[c] for c in range(len(labels))]
    return with_demonstrations(template, shown, words, job.s.demo_separator), shown


def _trial(job: _Job, study: optuna.Study, trial: optuna.Trial):
    s, ctx = job.s, job.ctx
    be, scorer = ctx.backend, ctx.scorer
    choose = _choose(s, trial)
    template = job.space.sample(choose)
    n_demos = int(choose("demonstrations", sorted(set(s.demonstrations))))
    shown: list[Any] = []
    if max(s.demonstrations) > 0:
        draw = trial.suggest_int("demo_set", 0, s.demo_sets - 1) if s.demo_sets > 1 else 0
        template, shown = _demonstrations(job, template, n_demos, draw)
    order = [e for e in job.order if all(e is not d for d in shown)]  # the examples shown fit no words
    calibrate = bool(choose("calibrate", s.calibration))
    n_words = trial.suggest_int("n_words", 1, s.max_words) if s.max_words > 1 else 1
    pool_size = int(choose("pool_size", sorted(set(s.pool_sizes))))
    select = choose("select", s.select)

    labels = ctx.label_names
    probe = Prompt.create(template, {lab: ["x"] for lab in labels}, labels)
    space = scorer.compile(probe).space_to_word
    vocab = decoded_vocab(be)
    ph = _placeholder(be, space, vocab)
    plan_prompt = Prompt.create(template, {lab: [ph] for lab in labels}, labels)
    cf_rows = [{f: text for f in plan_prompt.parsed.fields} for text in scorer.content_free]

    # Plan the whole trial's forward passes first: a trial that cannot finish is not started.
    n = len(order)
    cuts = sorted({max(1, min(n, math.ceil(share * n))) for share in s.train_shares})
    chunks = [order[a:b] for a, b in zip([0] + cuts[:-1], cuts)]
    planned = sum(scorer.plan(plan_prompt, c) for c in chunks) + scorer.plan(plan_prompt, ctx.task.dev)
    if calibrate:
        planned += scorer.plan(plan_prompt, cf_rows)
    multi = [(c, w) for c, ws in enumerate(job.user_words) for w in ws if _single_token(be, w, space) is None]
    for c, w in multi:
        mp = _multi_prompt(template, labels, c, w, ph)
        planned += scorer.plan(mp, order) + (scorer.plan(mp, cf_rows) if calibrate else 0)
    budget = ctx.budget
    if budget is not None and not budget.can_afford(forward_passes=planned, evaluations=1):
        raise BudgetExhausted(
            f"the next optuna trial needs {planned} forward passes and an evaluation; left: "
            f"{budget.forward_passes_left:g} passes, {budget.evaluations_left:g} evaluations, "
            f"{max(0.0, budget.seconds_left):g} s"
        )

    if space not in job.masks:
        job.masks[space] = word_mask(be, s.word_pattern, space, job.vocabulary)
    allowed = job.masks[space]
    gold_all = torch.as_tensor([e.label for e in order])
    multiobj = job.multi_objective
    seen = 0
    dists = []
    res = pool = None
    for step, chunk in enumerate(chunks):
        dists.append(scorer.distributions(plan_prompt, chunk, desc="answer distributions"))
        seen += len(chunk)
        D = torch.cat(dists)  # [seen, V]
        gold = gold_all[:seen]
        X, user_cols = _with_multi(job, template, D, multi, space, seen, order)
        pool = candidate_pool(
            D,
            gold,
            len(labels),
            allowed,
            pool_size,
            s.likely_top,
            lambda w: _single_token(be, w, space),
            vocab,
            _user_pool(job, be, space, user_cols),
        )
        if any(not ws for ws in pool.words):
            ctx.logger.info(
                "optuna: trial %d has a label without candidate words (pool_size=%d, no user words); pruned",
                trial.number,
                pool_size,
            )
            raise _Pruned()
        Xcf = None
        if calibrate:
            Dcf = scorer.distributions(plan_prompt, cf_rows)
            Xcf, _ = _with_multi(job, template, Dcf, multi, space, None, cf_rows, content_free=True)
        res = search_verbalizers(
            X,
            gold,
            pool,
            n_words,
            Wcf=Xcf,
            metric=ctx.task.metric,
            select=select,
            max_verbalizers=s.max_verbalizers,
        )
        trial.set_user_attr(f"examined_step{step}", res.examined)
        if not multiobj and step < len(chunks) - 1:
            trial.report(res.metric + s.tie_weight * math.exp(min(0.0, res.loglik)), step)
            if trial.should_prune():
                ctx.logger.info(
                    "optuna: trial %d pruned at %d/%d train examples: %r", trial.number, seen, n, template
                )
                raise _Pruned()

    assert pool is not None and res is not None  # chunks is never empty, so the loop ran
    words = {lab: [pool.words[c][j] for j in res.choice[c]] for c, lab in enumerate(labels)}
    prompt = Prompt.create(template, words, labels, calibrate=calibrate)
    examined = sum(v for k, v in trial.user_attrs.items() if k.startswith("examined_step"))
    extra = {
        "optuna": {
            "study": study.study_name,
            "trial": trial.number,
            "params": dict(trial.params),
            "demonstrations": len(shown),
            "verbalizers_examined": examined,
            "train_fit": {"metric": res.metric, "loglik": res.loglik},
            "pool": {lab: pool.words[c] for c, lab in enumerate(labels)},
        },
    }
    ev = job.evaluate([prompt], extra=extra)[0]
    split = ev.dev or ev.train
    assert split is not None  # the runner always scores dev
    value = split.score + s.tie_weight * math.exp(min(0.0, split.loglik))
    trial.set_user_attr("prompt", prompt.to_dict())
    trial.set_user_attr("prompt_key", prompt.key)
    trial.set_user_attr("row_id", ev.row_id)
    trial.set_user_attr("duplicate", ev.duplicate)
    trial.set_user_attr("dev_score", ev.dev.score if ev.dev else None)
    trial.set_user_attr("dev_loglik", ev.dev.loglik if ev.dev else None)
    trial.set_user_attr("train_score", ev.train.score if ev.train else None)
    trial.set_user_attr("verbalizers_examined", examined)
    trial.set_user_attr("forward_passes", ev.cost.forward_passes)
    trial.set_user_attr("pool", {lab: pool.words[c][:20] for c, lab in enumerate(labels)})
    ctx.logger.info(
        "optuna: trial %d dev %.3f (loglik %.3f) %d verbalizers examined: %s",
        trial.number,
        split.score,
        split.loglik,
        examined,
        prompt.describe(),
    )
    if multiobj:
        return [
            value,
            float(len(be.tokenize(prompt.parsed.render({f: "" for f in prompt.parsed.fields}, answer="")))),
        ]
    return value


def _multi_prompt(template: str, labels, c: int, word: str, ph: str) -> Prompt:
    return Prompt.create(template, {lab: [word if i == c else ph] for i, lab in enumerate(labels)}, labels)


def _with_multi(
    job: _Job,
    template: str,
    D: torch.Tensor,
    multi,
    space: bool,
    seen: int | None,
    examples,
    content_free: bool = False,
):
    """Append columns for multi-token user words, scored on ``examples`` (the rows of ``D``: the
    trial's training order, or the content-free rows) once by the scorer, then cached."""
    if not multi:
        return D, {}
    ctx = job.ctx
    cols: dict[str, int] = {}
    extra: list[torch.Tensor] = []
    labels = ctx.label_names
    vocab = decoded_vocab(ctx.backend)
    ph = _placeholder(ctx.backend, space, vocab)
    for c, w in multi:
        key = (template, w, content_free)
        if key not in job.multi:
            mp = _multi_prompt(template, labels, c, w, ph)
            job.multi[key] = torch.as_tensor(ctx.scorer.score(mp, examples).raw[:, c], dtype=torch.float32)
        vec = job.multi[key] if seen is None else job.multi[key][:seen]
        cols[w] = D.shape[1] + len(extra)
        extra.append(vec)
    return torch.cat([D, torch.stack(extra, dim=1).to(D.dtype)], dim=1), cols


def _user_pool(job: _Job, be, space: bool, multi_cols: dict[str, int]):
    out = []
    for ws in job.user_words:
        pairs = []
        for w in ws:
            tid = _single_token(be, w, space)
            col = tid if tid is not None else multi_cols.get(w)
            if col is not None:
                pairs.append((w, col))
        out.append(pairs)
    return out
