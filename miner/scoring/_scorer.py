"""The scorer: (prompt, examples) -> per-label log-probabilities, metrics and cost.

Every prompt is reduced to *requests* the model has to answer:

- ``next``: the next-token distribution after a prefix (causal LM, answer slot at the
  end, single-token words). One pass with ``logits_to_keep=1`` serves every label word.
- ``cont``: the summed log-probability of the last ``n`` tokens given the rest (causal
  LM; multi-token words with teacher forcing, or an answer slot followed by more text,
  scored as the likelihood of the filled-in text after the shared prefix).
- ``mask``: the distributions at ``n`` mask tokens (masked LM). A word of ``n`` tokens is
  scored in a sequence with ``n`` masks as the sum of its tokens' log-probabilities at
  their positions, all masks predicted in one pass (the PET/LM-BFF style "independent
  masks" approximation; exact for single-token words).

Identical requests are answered once: requests are deduplicated within a call and
cached across calls (a byte-bounded LRU), so re-scoring a template with another
verbalizer costs no forward pass. Uncached requests are sorted by length and packed
into batches bounded by ``batch_size`` sequences and ``max_batch_tokens`` padded tokens.
A label's score is the log of the summed probability of its words.

Causal LMs: a token prefix that many requests of a prompt share runs once (``_prefix.py``): the
demonstrations before every example's text, or one example's prompt before its many candidate
words. Its pass is charged once, with its tokens, and its key/values are kept for later calls
(``prefix_cache_mb``); the requests' tails run on top of them, charged per batch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from miner.errors import PromptError
from miner.models import Backend
from miner.prompts import Prompt, PromptEnsemble
from miner.scoring._cost import Cost, CostCounter
from miner.scoring._encode import CompiledPrompt, Encoded, compile_prompt, encode
from miner.scoring._metrics import compute_metrics
from miner.scoring._prefix import PREFIX, mark, pack, run_prefixes, run_tails
from miner.scoring._request import Request
from miner.scoring._stems import Layers, StemCache, TokenIds, run_rows

logger = logging.getLogger(__name__)

CONTENT_FREE = ("N/A", "", "[MASK]")  # Zhao et al. 2021


@dataclass
class ScoreResult:
    scores: np.ndarray  # [N, L] label log-probs normalised over labels (calibrated if asked)
    raw: np.ndarray  # [N, L] log of the summed word probabilities, before normalisation
    preds: np.ndarray  # [N]
    gold: np.ndarray | None
    metrics: dict[str, float]
    loglik: float | None  # mean log-prob of the gold label under ``scores``
    cost: Cost = field(default_factory=Cost)

    def metric(self, name: str) -> float | None:
        return self.metrics.get(name)


def _members(prompt: Prompt | PromptEnsemble) -> tuple[Prompt, ...]:
    return prompt.members if isinstance(prompt, PromptEnsemble) else (prompt,)


def _mix(member_logprobs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Label log-probabilities of a weighted ensemble: log of the weighted mean (float64) of the
    members' probabilities."""
    P = np.stack([np.exp(np.asarray(lp, dtype=np.float64)) for lp in member_logprobs])
    w = np.asarray(weights, dtype=np.float64)
    probs = np.tensordot(w / w.sum(), P, axes=1)
    return np.log(np.clip(probs, 1e-30, None)).astype(np.float32)


def _empty_result(n_labels: int) -> ScoreResult:
    empty = np.zeros((0, n_labels))
    return ScoreResult(empty, empty, np.zeros(0, dtype=int), None, {}, None)


def _fields_of(example: Any) -> Mapping[str, str]:
    return example.fields if hasattr(example, "fields") else example


class Scorer:
    """Scores prompts on a frozen backend, charging every model call to ``counter``."""

    def __init__(
        self,
        backend: Backend,
        *,
        batch_size: int = 32,
        max_batch_tokens: int = 8192,
        cache_mb: int = 512,
        progress: bool = True,
        content_free: Sequence[str] = CONTENT_FREE,
        counter: CostCounter | None = None,
        soft_resolver: Callable[[str], torch.Tensor] | None = None,
        stem_cache_mb: int = 1024,
        prefix_cache_mb: int = 256,
        prefix_min_tokens: int = 32,
        prefix_min_words: int = 8,
    ) -> None:
        self.backend = backend
        self.soft_resolver = soft_resolver  # soft-prompt reference -> tensor [n_soft, hidden]
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.cache_bytes = cache_mb * 2**20
        self.progress = progress
        self.content_free = tuple(content_free)
        self.counter = counter or CostCounter()
        self._cache: OrderedDict[Request, Any] = OrderedDict()
        self._cache_size = 0
        self._compiled: dict[str, CompiledPrompt] = {}
        # Causal LMs: the text before a prompt's first trigger is run once per example, not per prompt.
        self.stem_cache_mb = stem_cache_mb
        self.stems = (
            StemCache(stem_cache_mb * 2**20) if backend.kind == "causal" and stem_cache_mb > 0 else None
        )
        # Causal LMs: a prefix many requests share (demonstrations; one example's prompt before many
        # candidate words) runs once and its key/values serve them all (_prefix.py). 0 turns it off.
        self.prefix_min_tokens = prefix_min_tokens
        self.prefix_min_words = prefix_min_words
        self.prefixes = (
            StemCache(prefix_cache_mb * 2**20) if backend.kind == "causal" and prefix_cache_mb > 0 else None
        )

    # ------------------------------------------------------------------ public
    def compile(self, prompt: Prompt) -> CompiledPrompt:
        if isinstance(prompt, PromptEnsemble):
            raise PromptError(
                "a prompt ensemble has no single compiled form: score it with Scorer.score, or use its members"
            )
        cp = self._compiled.get(prompt.key)
        if cp is None:
            cp = compile_prompt(prompt, self.backend)
            self._compiled[prompt.key] = cp
        return cp

    def plan(self, prompt: Prompt | PromptEnsemble, examples: Sequence[Any]) -> int:
        """Forward passes that scoring ``prompt`` on ``examples`` would spend now."""
        return self.plan_many([prompt], examples)

    def plan_many(
        self, prompts: Sequence[Prompt | PromptEnsemble], examples: Sequence[Any], *, distinct: bool = False
    ) -> int:
        """Forward passes that ``score_many(prompts, examples)`` would spend now.

        ``distinct``: plan as if no two prompts shared a request and none were cached, the bound for
        prompts that stand in for candidates not drawn yet (copies of one prompt, say).
        """
        return len(self.batches_for(prompts, examples, distinct=distinct))

    def batches_for(
        self, prompts: Sequence[Prompt | PromptEnsemble], examples: Sequence[Any], *, distinct: bool = False
    ) -> list[list[Request]]:
        """The batches of requests that scoring ``prompts`` on ``examples`` together would run now
        (uncached requests, deduplicated and packed as :meth:`score_many` packs them)."""
        reqs: list[Request] = []
        for i, member in enumerate(m for p in prompts for m in _members(p)):
            cp = self.compile(member)
            rs = self._requests(cp, self._all_fields(cp, examples))[0]
            if distinct:  # a marker no real request has keeps each prompt's requests its own
                rs = [dataclasses.replace(r, soft=r.soft + ((-1, i),)) for r in rs]
            reqs += rs
        return self._batches(
            [r for r in dict.fromkeys(reqs) if distinct or r not in self._cache], uncached=distinct
        )

    def requests(self, prompt: Prompt, examples: Sequence[Any]) -> tuple[list[Request], list]:
        """The requests that score ``prompt`` on ``examples`` (one per example and word, repeats kept;
        no content-free rows), and the *plan*: per example, per label, per word, ``(request, word ids)``,
        which :meth:`label_scores` turns into label scores given the requests' answers."""
        cp = self.compile(prompt)
        return self._requests(cp, self._rows(cp, examples))

    def label_scores(self, plan: list, answers: Mapping[Request, Any]) -> torch.Tensor:
        """Raw label scores ``[N, L]`` (log of the summed word probabilities) of a :meth:`requests` plan,
        from the answers to its requests (see :class:`Request`); differentiable if the answers are."""
        return self._assemble(plan, answers)

    def plan_label_logprobs(self, prompt: Prompt, examples: Sequence[Any]) -> int:
        """Forward passes :meth:`label_logprobs` spends on ``examples`` (it never reads the cache)."""
        cp = self.compile(prompt)
        return len(
            self._batches(dict.fromkeys(self._requests(cp, self._rows(cp, examples))[0]), prefixes=False)
        )

    def score(
        self,
        prompt: Prompt | PromptEnsemble,
        examples: Sequence[Any],
        *,
        desc: str | None = None,
        soft_embeds: torch.Tensor | None = None,
    ) -> ScoreResult:
        """Score one prompt on examples (labels, if the examples have them, give metrics).

        A :class:`PromptEnsemble` is scored member by member (requests pooled, as in
        ``score_many``) and its label distribution is the mean of the members'.
        """
        if isinstance(prompt, PromptEnsemble):
            return self._score_ensemble(prompt, examples, desc)
        before = self.counter.snapshot()
        cp = self.compile(prompt)
        if not examples:
            return _empty_result(len(prompt.verbalizer.labels))
        if soft_embeds is None and prompt.soft is not None:
            soft_embeds = self._resolve_soft(prompt.soft)
        with torch.inference_mode():
            raw_all = self._label_scores(
                cp, self._all_fields(cp, examples), soft_embeds, grad=False, desc=desc
            )
        return self._finish(prompt, raw_all.float().cpu(), examples, self.counter.snapshot() - before)

    def score_many(
        self, prompts: Sequence[Prompt], examples: Sequence[Any], *, desc: str | None = None
    ) -> list[ScoreResult]:
        """Score several discrete prompts with their requests pooled into shared batches.

        Cheaper than one ``score`` call per prompt when prompts share work (the same
        template with other verbalizers) or are many and small (trigger candidates).
        The call's cost is reported on the first result; the others carry none.
        """
        if any(isinstance(p, PromptEnsemble) for p in prompts):
            return [self.score(p, examples, desc=desc) for p in prompts]
        before = self.counter.snapshot()
        cps = [self.compile(p) for p in prompts]
        if any(p.soft is not None or p.parsed.n_soft for p in prompts):
            raise PromptError("score_many scores discrete prompts only; score soft prompts one at a time")
        collected = [self._requests(cp, self._all_fields(cp, examples)) for cp in cps]
        with torch.inference_mode():
            results = self._execute([r for reqs, _ in collected for r in reqs], None, False, desc)
            raws = [self._assemble(plan, results).float().cpu() for _, plan in collected]
        cost = self.counter.snapshot() - before
        return [
            self._finish(p, raw, examples, cost if i == 0 else Cost())
            for i, (p, raw) in enumerate(zip(prompts, raws))
        ]

    def distributions(
        self, prompt: Prompt, examples: Sequence[Any], *, desc: str | None = None
    ) -> torch.Tensor:
        """Log-probabilities ``[N, V]`` of every vocabulary token as the first answer token.

        One forward pass per batch serves every single-token verbalizer at once (causal LM
        with the answer at the end, or a masked LM with one mask). Cached like any request.
        """
        cp = self.compile(prompt)
        be = self.backend
        if be.kind == "causal" and not cp.answer_at_end:
            raise PromptError(
                f"answer-slot distributions need the answer at the end of the template for causal LMs: {prompt.template!r}"
            )
        reqs = []
        for fields in (_fields_of(e) for e in examples):
            enc = encode(cp, be, fields)
            if be.kind == "causal":
                reqs.append(Request("next", enc.prefix, stem=_stem(enc, enc.prefix, 1)))
            else:
                assert be.mask_id is not None  # Backend refuses a masked LM without a mask token
                ids = enc.prefix + (be.mask_id,) + enc.suffix
                reqs.append(Request("mask", ids, 0, (len(enc.prefix),)))
        reqs = [r for row in self._mark([[r] for r in reqs]) for r in row]
        with torch.inference_mode():
            results = self._execute(reqs, None, False, desc)
        rows = [results[r] if r.kind == "next" else results[r][0] for r in reqs]
        return torch.stack(rows) if rows else torch.zeros(0, be.vocab_size)

    def _score_ensemble(self, ens: PromptEnsemble, examples: Sequence[Any], desc: str | None) -> ScoreResult:
        before = self.counter.snapshot()
        if not examples:
            return _empty_result(len(ens.verbalizer.labels))
        parts = self.score_many(ens.members, examples, desc=desc)
        if ens.weights is None:
            probs = np.mean([np.exp(r.scores) for r in parts], axis=0)
            scores = torch.log(torch.as_tensor(probs, dtype=torch.float32).clamp_min(1e-30))
        else:  # the learned ensemble
            scores = torch.from_numpy(_mix([r.scores for r in parts], ens.weights))
        return self._result(
            scores, scores, examples, len(ens.verbalizer.labels), self.counter.snapshot() - before
        )

    def _finish(
        self, prompt: Prompt, raw_all: torch.Tensor, examples: Sequence[Any], cost: Cost
    ) -> ScoreResult:
        raw = raw_all[: len(examples)]
        scores = torch.log_softmax(raw, dim=-1)
        if prompt.calibrate:
            scores = calibrate(scores, raw_all[len(examples) :])
        return self._result(scores, raw, examples, len(prompt.verbalizer.labels), cost)

    @staticmethod
    def _result(
        scores: torch.Tensor, raw: torch.Tensor, examples: Sequence[Any], n_labels: int, cost: Cost
    ) -> ScoreResult:
        gold = None
        metrics: dict[str, float] = {}
        loglik = None
        preds = scores.argmax(-1).numpy()
        labels = [getattr(e, "label", None) for e in examples]
        if all(label is not None for label in labels):
            gold = np.asarray(labels, dtype=int)
            metrics = compute_metrics(gold, preds, n_labels, scores=scores.numpy())
            loglik = float(scores[torch.arange(len(gold)), torch.as_tensor(gold)].mean())
        return ScoreResult(scores.numpy(), raw.numpy(), preds, gold, metrics, loglik, cost)

    def _resolve_soft(self, ref: str) -> torch.Tensor:
        if self.soft_resolver is None:
            raise PromptError(
                f"prompt refers to soft prompt {ref!r} but no artifact store was given to load it"
            )
        return self.soft_resolver(ref).to(self.backend.device)

    def label_logprobs(
        self, prompt: Prompt, examples: Sequence[Any], soft_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Differentiable ``[N, L]`` raw label log-probs (no cache), for gradient searchers."""
        cp = self.compile(prompt)
        return self._label_scores(cp, [dict(_fields_of(e)) for e in examples], soft_embeds, grad=True)

    # ------------------------------------------------------------------ internals
    def _rows(self, cp: CompiledPrompt, examples: Sequence[Any]) -> list[Mapping[str, str]]:
        rows = [_fields_of(e) for e in examples]
        missing = [f for f in cp.template.fields if f not in rows[0]] if rows else []
        if missing:
            raise PromptError(
                f"template {cp.prompt.template!r} uses field {{{missing[0]}}} but the examples have fields {sorted(rows[0])}"
            )
        return rows

    def _all_fields(self, cp: CompiledPrompt, examples: Sequence[Any]) -> list[Mapping[str, str]]:
        """The examples' fields, and the content-free rows after them if the prompt is calibrated."""
        rows = self._rows(cp, examples)
        if cp.prompt.calibrate:
            rows = rows + [{f: text for f in cp.template.fields} for text in self.content_free]
        return rows

    def _requests(self, cp: CompiledPrompt, rows: Sequence[Mapping[str, str]]):
        """All requests plus, per example, per label, per word, the request that scores it."""
        be = self.backend
        per_row: list[list[Request]] = []
        plan: list[list[list[tuple[Request, tuple[int, ...]]]]] = []
        for fields in rows:
            enc = encode(cp, be, fields)
            per_label = []
            row: list[Request] = []
            for words in cp.word_ids:
                per_word = []
                for w in words:
                    req = self._request_for(cp, enc, w)
                    row.append(req)
                    per_word.append((req, w))
                per_label.append(per_word)
            plan.append(per_label)
            per_row.append(row)
        # The plan keeps the unmarked requests: a request's prefix mark takes no part in its identity.
        return [r for row in self._mark(per_row) for r in row], plan

    def _mark(self, rows: list[list[Request]]) -> list[list[Request]]:
        if self.prefixes is None:
            return rows
        return mark(rows, min_tokens=self.prefix_min_tokens, min_words=self.prefix_min_words)

    def _request_for(self, cp: CompiledPrompt, enc: Encoded, w: tuple[int, ...]) -> Request:
        pre_soft = tuple(zip(enc.prefix_soft_pos, enc.prefix_soft))
        if self.backend.kind == "masked":
            assert self.backend.mask_id is not None  # Backend refuses a masked LM without a mask token
            ids = enc.prefix + (self.backend.mask_id,) * len(w) + enc.suffix
            off = len(enc.prefix) + len(w)
            soft = pre_soft + tuple((p + off, i) for p, i in zip(enc.suffix_soft_pos, enc.suffix_soft))
            return Request("mask", ids, 0, tuple(range(len(enc.prefix), len(enc.prefix) + len(w))), soft)
        if cp.answer_at_end and len(w) == 1:
            return Request("next", enc.prefix, 0, (), pre_soft, _stem(enc, enc.prefix, 1))
        tail = w if cp.answer_at_end else w + enc.suffix
        off = len(enc.prefix) + len(w)
        soft = pre_soft + (
            ()
            if cp.answer_at_end
            else tuple((p + off, i) for p, i in zip(enc.suffix_soft_pos, enc.suffix_soft))
        )
        ids = enc.prefix + tail
        return Request("cont", ids, len(tail), (), soft, _stem(enc, ids, len(tail) + 1))

    def _label_scores(self, cp, rows, soft_embeds, grad: bool, desc: str | None = None) -> torch.Tensor:
        reqs, plan = self._requests(cp, rows)
        if any(r.soft for r in reqs) and soft_embeds is None:
            raise PromptError(
                f"template {cp.prompt.template!r} has soft tokens but no soft embeddings were given"
            )
        results = self._execute(reqs, soft_embeds, grad, desc)
        return self._assemble(plan, results)

    def _execute(
        self, reqs: Sequence[Request], soft_embeds, grad: bool, desc: str | None = None
    ) -> dict[Request, Any]:
        """Answer requests: from the cache where possible, the rest in length-sorted batches."""
        use_cache = not grad and soft_embeds is None
        results: dict[Request, Any] = {}
        todo = []
        for r in dict.fromkeys(reqs):
            if use_cache and r in self._cache:
                self._cache.move_to_end(r)
                results[r] = self._cache[r]
                self.counter.total.cache_hits += 1
            else:
                todo.append(r)
        batches = self._batches(todo, prefixes=use_cache)  # packed whatever the stem cache holds
        held, last = self._hold_prefixes(batches) if use_cache else ({}, {})
        show = self.progress and len(batches) >= 4
        for bi, batch in enumerate(
            tqdm(batches, desc=desc or "scoring", leave=False, disable=not show, unit="batch")
        ):
            if batch[0].kind == PREFIX:
                computed = run_prefixes(self.backend, self.counter, batch)
                held.update(computed)
                assert self.prefixes is not None  # prefix passes are packed only with the prefix cache on
                for p, layers in computed.items():
                    self.prefixes.put(p, layers)
                continue
            for r, value in zip(batch, self._run(batch, soft_embeds, grad, held if use_cache else None)):
                results[r] = value
                if use_cache:
                    self._remember(r, value)
            for p in last.pop(bi, ()):  # its last tails have run: let the key/values go
                held.pop(p, None)
        return results

    def _hold_prefixes(
        self, batches: list[list[Request]]
    ) -> tuple[dict[TokenIds, Layers], dict[int, list[TokenIds]]]:
        """The cached prefixes the batches' tails need, taken from the cache now (so that storing others
        on the way cannot evict them after the plan counted them as cached), and, per batch index, the
        prefixes whose last tails run in it."""
        held: dict[TokenIds, Layers] = {}
        last_at: dict[TokenIds, int] = {}
        computed = set()
        for bi, batch in enumerate(batches):
            for r in batch:
                if r.kind == PREFIX:
                    computed.add(r.ids)
                elif r.prefix:
                    last_at[r.ids[: r.prefix]] = bi
        if self.prefixes is not None:
            for p in last_at:
                if p not in computed:
                    held[p] = self.prefixes.get(p)
                    self.prefixes.hits += 1
        last: dict[int, list[TokenIds]] = {}
        for p, bi in last_at.items():
            last.setdefault(bi, []).append(p)
        return held, last

    def _assemble(self, plan, results: Mapping[Request, Any]) -> torch.Tensor:
        """Label scores ``[N, L]``: each word's score read off its request's answer, log-sum-exp per label.

        A few tensor operations per call, not several per word: a next-token answer serves all its
        words in one gather, and the words go into an ``[N, L, most words]`` grid padded with -inf
        (a GPU pays a kernel launch per operation, more than a candidate pass's tokens cost).
        """
        if not plan:
            return torch.zeros(0, 0)
        n_labels = len(plan[0])
        width = max(len(per_word) for per_label in plan for per_word in per_label)
        parts: list[torch.Tensor] = []
        slots: list[int] = []  # place of each score of ``parts`` in the flat grid
        picks: dict[Request, tuple[list[int], list[int]]] = {}  # next-token request -> (tokens, slots)
        for i, per_label in enumerate(plan):
            for li, per_word in enumerate(per_label):
                for k, (r, w) in enumerate(per_word):
                    slot = (i * n_labels + li) * width + k
                    if r.kind == "next":
                        toks, at = picks.setdefault(r, ([], []))
                        toks.append(w[0])
                        at.append(slot)
                    else:
                        parts.append(self._word_score(results[r], r, w).reshape(1))
                        slots.append(slot)
        for r, (toks, at) in picks.items():
            value = results[r]
            parts.append(value[torch.as_tensor(toks, device=value.device)])
            slots += at
        scores = torch.cat(parts)
        grid = scores.new_full((len(plan) * n_labels * width,), -float("inf"))
        grid = grid.index_put((torch.as_tensor(slots, device=scores.device),), scores)
        return grid.view(len(plan), n_labels, width).logsumexp(-1)

    @staticmethod
    def _word_score(value: Any, req: Request, w: tuple[int, ...]) -> torch.Tensor:
        if req.kind == "next":
            return value[w[0]]
        if req.kind == "cont":
            return value
        return value[torch.arange(len(w)), torch.as_tensor(w)].sum()

    def _remember(self, r: Request, value: Any) -> None:
        size = value.numel() * value.element_size() if isinstance(value, torch.Tensor) else 8
        self._cache[r] = value
        self._cache_size += size + 64
        while self._cache_size > self.cache_bytes and self._cache:
            old_r, old_v = self._cache.popitem(last=False)
            self._cache_size -= (
                old_v.numel() * old_v.element_size() if isinstance(old_v, torch.Tensor) else 8
            ) + 64

    def clear_cache(self) -> None:
        self._cache.clear()
        self._cache_size = 0
        if self.stems is not None:
            self.stems.clear()
        if self.prefixes is not None:
            self.prefixes.clear()

    def _batches(
        self, reqs: Iterable[Request], *, prefixes: bool = True, uncached: bool = False
    ) -> list[list[Request]]:
        """Passes for ``reqs``: requests marked with a prefix (when ``prefixes``) go to their prefix's
        passes (``_prefix.pack``; ``uncached``: as if no prefix were cached), the rest are packed whole,
        by kind, longest first."""
        by_kind: dict[str, list[Request]] = {}
        shared: list[Request] = []
        for r in reqs:
            if prefixes and r.prefix and self.prefixes is not None:
                shared.append(r)
            else:
                by_kind.setdefault(r.kind, []).append(r)
        batches = []
        for kind in sorted(by_kind):
            # Longest first: a too-large batch fails at once, and similar lengths share padding.
            items = sorted(by_kind[kind], key=lambda r: (-len(r.ids), r.ids))
            cur: list[Request] = []
            for r in items:
                width = len(cur[0].ids) if cur else len(r.ids)
                if cur and (len(cur) >= self.batch_size or width * (len(cur) + 1) > self.max_batch_tokens):
                    batches.append(cur)
                    cur = []
                cur.append(r)
            if cur:
                batches.append(cur)
        if shared:
            assert self.prefixes is not None  # only marked with the prefix cache on
            batches += pack(
                shared,
                (lambda p: False) if uncached else self.prefixes.__contains__,
                batch_size=self.batch_size,
                max_batch_tokens=self.max_batch_tokens,
                make=lambda p: Request(PREFIX, p),
            )
        return batches

    def _run(
        self,
        batch: list[Request],
        soft_embeds: torch.Tensor | None,
        grad: bool,
        held: Mapping[TokenIds, Layers] | None = None,
    ) -> list[Any]:
        be = self.backend
        kind = batch[0].kind
        keep = 0
        has_soft = any(r.soft for r in batch)
        # A continuation's last token scores nothing (its n scored tokens are read at the n positions
        # before each), so it is not run: one token fewer per request (a third of a fact task's
        # candidate tails). With soft slots the rows run whole (their positions index the ids).
        trimmed = kind == "cont" and not has_soft
        answers = batch  # what the answers are read for; ``batch`` becomes what runs
        if kind == "next":
            keep = 1
        elif kind == "cont":
            keep = max(r.n for r in batch) + (0 if trimmed else 1)
        if trimmed:
            batch = [dataclasses.replace(r, ids=r.ids[:-1]) for r in batch]
        if held is not None and batch[0].prefix:  # tails on top of their prefixes (_prefix.py)
            tails = run_tails(be, self.counter, batch, held, keep)
            return self._answers(answers, tails, kind, grad, trimmed=trimmed)
        stemmed = (
            self.stems is not None
            and not grad
            and not has_soft
            and kind in ("next", "cont")
            and any(r.stem for r in batch)
        )
        charge: AbstractContextManager[Any]
        if stemmed:  # run_rows pads and charges its own pass (a cached stem's tokens are not run)
            padded, charge = None, nullcontext()
        else:
            padded = be.pad([r.ids for r in batch])
            inputs_embeds = _inject_soft(be, padded, batch, soft_embeds) if has_soft else None
            width = padded.input_ids.shape[1]
            charge = self.counter.forward(len(batch), int(padded.attention_mask.sum()), width * len(batch))
        with charge:
            if stemmed:
                logits = run_rows(
                    be,
                    self.counter,
                    [r.ids[: r.stem] for r in batch],
                    [r.ids[r.stem :] for r in batch],
                    self.stems,
                    logits_to_keep=keep,
                ).logits
                assert logits is not None  # _stem leaves every tail at least ``keep`` tokens, so the rows ran
            else:
                assert padded is not None  # padded whenever not stemmed, above
                if kind == "mask":  # the head computes only the masks' logits
                    logits = be.forward(
                        padded, inputs_embeds=inputs_embeds, positions=[r.mask_pos for r in batch]
                    )
                    return self._answers(batch, logits, kind, grad, at_masks=True)
                logits = be.forward(padded, inputs_embeds=inputs_embeds, logits_to_keep=keep)
            return self._answers(answers, logits, kind, grad, trimmed=trimmed)

    @staticmethod
    def _answers(
        batch: list[Request],
        logits: torch.Tensor,
        kind: str,
        grad: bool,
        at_masks: bool = False,
        trimmed: bool = False,
    ) -> list[Any]:
        """Each request's answer (see :class:`Request`) from its batch's kept logits (``at_masks``: a
        masked batch's logits are already those of each row's masks, in order; ``trimmed``: a ``cont``
        batch ran without each row's last token, so its kept logits end at the last scored position)."""
        logits = logits.float()
        if kind == "next":
            lp = torch.log_softmax(logits[:, -1, :], dim=-1)
            out = [lp[i] if grad else lp[i].cpu().clone() for i in range(len(batch))]
        elif kind == "cont":
            lp = torch.log_softmax(logits, dim=-1)
            end = lp.shape[1] - (0 if trimmed else 1)
            out = []
            for i, r in enumerate(batch):
                targets = torch.as_tensor(r.ids[-r.n :], device=lp.device)
                rows = lp[i, end - r.n : end]
                val = rows.gather(-1, targets[:, None]).sum()
                out.append(val if grad else val.cpu())
        else:
            out = []
            for i, r in enumerate(batch):
                at = logits[i, : len(r.mask_pos)] if at_masks else logits[i, list(r.mask_pos)]
                rows = torch.log_softmax(at, dim=-1)
                out.append(rows if grad else rows.cpu().clone())
        return out


def _stem(enc: Encoded, ids: Sequence[int], keep: int) -> int:
    """The request's reusable stem length: the tokens before the first trigger, if the logits it
    needs (its last ``keep`` positions) all come after them."""
    return enc.stem if 0 < enc.stem <= len(ids) - keep else 0


def _inject_soft(be: Backend, padded, batch: list[Request], soft_embeds: torch.Tensor | None) -> torch.Tensor:
    if soft_embeds is None:
        raise PromptError("prompt has soft tokens but no soft embeddings were given")
    embeds = be.embed(padded.input_ids).clone()
    width = padded.input_ids.shape[1]
    rows, cols, idx = [], [], []
    for i, r in enumerate(batch):
        offset = width - len(r.ids) if be.kind == "causal" else 0
        for pos, j in r.soft:
            rows.append(i)
            cols.append(pos + offset)
            idx.append(j)
    embeds[rows, cols] = soft_embeds[idx].to(embeds.dtype)
    return embeds


def calibrate(scores: torch.Tensor, cf_raw: torch.Tensor) -> torch.Tensor:
    """Content-free calibration (Zhao et al. 2021): divide by the mean content-free label probability."""
    p_cf = torch.softmax(cf_raw, dim=-1).mean(0)
    return torch.log_softmax(scores - torch.log(p_cf), dim=-1)
