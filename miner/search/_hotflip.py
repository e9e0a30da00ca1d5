"""The machinery of gradient-guided trigger search, kept free of the searcher contract.

- :func:`allowed_tokens`: the vocabulary HotFlip may propose (no special tokens, no label
  words, optionally real words only, optionally no capitalised words), each token one that
  survives decode -> re-encode on its own.
- :func:`trigger_gradient`: the loss gradient w.r.t. the trigger *input embeddings* only.
  The template's trigger slots are rewritten as soft slots and the current trigger
  embeddings are injected there, so the scorer's differentiable path computes the label
  log-probs; the backend's model has ``requires_grad_(False)``, so backward builds no
  parameter gradients (AutoPrompt's reference backpropagates through the whole model).
- :func:`hotflip_topk` and :func:`sample_candidates`: first-order scores ``-(E . g)`` and
  GCG-style sampling of single swaps spread over all positions.
- :class:`CandidateScorer`: the objective of many candidate triggers on a batch of
  examples. For causal LMs whose triggers come after the example text, the text's
  key/value cache is computed once per example and reused by every candidate, whose rows
  then only run the few tokens from the first trigger to the answer; otherwise the
  candidates' requests are pooled through ``Scorer.score_many``.

This module imports only torch and ``miner.models`` / ``miner.prompts`` / ``miner.scoring``,
so the GPU benchmark can load it on a machine without the searcher contract's dependencies.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from miner.prompts import Answer, Field, Literal, Prompt, Soft, Template, Trigger
from miner.scoring import Scorer, encode
from miner.scoring._stems import run_rows

logger = logging.getLogger(__name__)

GRAD_SOFT_REF = "autoprompt:trigger-embeddings"  # name of the soft tensor that stands for the triggers


# --------------------------------------------------------------------------- templates
def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def soft_template(tpl: Template) -> str:
    """The same template with every ``{trigger}`` slot turned into a ``{soft}`` slot."""
    out = []
    for s in tpl.segments:
        if isinstance(s, Literal):
            out.append(_escape(s.text))
        elif isinstance(s, Field):
            out.append("{" + s.name + "}")
        elif isinstance(s, Answer):
            out.append("{answer}")
        elif isinstance(s, Trigger):
            out.append("{soft}")
        elif isinstance(s, Soft):
            raise ValueError(f"template {tpl.text!r} already has soft slots; trigger search needs a discrete template")
    return "".join(out)


def gradient_prompt(prompt: Prompt) -> Prompt:
    """``prompt`` with its triggers as soft slots (the trigger embeddings are passed as soft_embeds)."""
    return Prompt(template=soft_template(prompt.parsed), verbalizer=prompt.verbalizer, soft=GRAD_SOFT_REF)


def round_trips(backend, ids: Sequence[int]) -> bool:
    """True when decoding ``ids`` and encoding the text again gives ``ids`` back."""
    ids = tuple(int(i) for i in ids)
    return backend.tokenize(backend.decode(ids)) == ids


# --------------------------------------------------------------------------- vocabulary
_TOKEN_INFO: "weakref.WeakKeyDictionary[Any, tuple[list[str], np.ndarray]]" = weakref.WeakKeyDictionary()


def _token_info(backend) -> tuple[list[str], np.ndarray]:
    """Decoded text of every token and whether it round-trips alone (memoised per tokenizer: ~seconds)."""
    tok = backend.tokenizer
    info = _TOKEN_INFO.get(tok)
    if info is None or len(info[0]) != backend.vocab_size:
        texts = [backend.decode([i]) for i in range(backend.vocab_size)]
        ok = np.array([bool(t) and backend.tokenize(t) == (i,) for i, t in enumerate(texts)])
        info = (texts, ok)
        _TOKEN_INFO[tok] = info
    return info


def label_token_ids(backend, prompt: Prompt) -> set[int]:
    """Every token of every label word, with and without a leading space."""
    ids: set[int] = set()
    for words in prompt.verbalizer.words:
        for w in words:
            for variant in (w, " " + w, w.lower(), " " + w.lower(), w.capitalize(), " " + w.capitalize()):
                ids.update(backend.tokenize(variant))
    return ids


def allowed_tokens(backend, prompt: Prompt, *, words_only: bool = True, allow_capitalized: bool = False,
                   exclude: Sequence[int] = ()) -> torch.Tensor:
    """Boolean mask ``[V]`` of the tokens a trigger may use."""
    texts, ok = _token_info(backend)
    mask = ok.copy()
    for i in set(backend.tokenizer.all_special_ids) | label_token_ids(backend, prompt) | set(exclude):
        if 0 <= i < len(mask):
            mask[i] = False
    for i, t in enumerate(texts):
        if not mask[i]:
            continue
        core = t.strip()
        if not core or (words_only and not core.isalpha()) or (not allow_capitalized and core[0].isupper()):
            mask[i] = False
    return torch.from_numpy(mask)


# --------------------------------------------------------------------------- objective
def objective_from_raw(raw: torch.Tensor, gold: torch.Tensor, objective: str) -> torch.Tensor:
    """Per-example gold log-prob: ``vocab`` = log of the summed word probabilities (AutoPrompt's loss),
    ``label`` = the same normalised over the labels (the classifier's log-likelihood)."""
    if objective == "label":
        raw = torch.log_softmax(raw, dim=-1)
    return raw.gather(-1, gold[..., None].expand(*raw.shape[:-1], 1)).squeeze(-1)


def trigger_gradient(scorer: Scorer, prompt: Prompt, examples: Sequence[Any], objective: str) -> tuple[torch.Tensor, float]:
    """Gradient ``[n_triggers, hidden]`` of the mean loss w.r.t. the trigger embeddings, and the loss.

    The forward is charged by the scorer; the backward is charged here, with its time.
    """
    be = scorer.backend
    E = be.input_embeddings()
    soft = E[torch.as_tensor(prompt.triggers, device=E.device)].detach().clone().requires_grad_(True)
    gold = torch.as_tensor([e.label for e in examples], device=be.device)
    with torch.enable_grad():
        raw = scorer.label_logprobs(gradient_prompt(prompt), examples, soft_embeds=soft)
        loss = -objective_from_raw(raw, gold.to(raw.device), objective).mean()
        start = time.perf_counter()
        (grad,) = torch.autograd.grad(loss, soft)
        scorer.counter.charge_backward(time.perf_counter() - start)
    return grad.float(), float(loss.detach())


def hotflip_topk(grad: torch.Tensor, embeddings: torch.Tensor, allowed: torch.Tensor, k: int) -> torch.Tensor:
    """Top-``k`` replacement tokens per position by the first-order loss decrease ``-(E . g)``."""
    scores = -(grad.to(embeddings.device, torch.float32) @ embeddings.float().T)  # [n, V]
    scores[:, ~allowed.to(scores.device)] = -float("inf")
    k = max(1, min(k, int(allowed.sum())))
    return scores.topk(k, dim=-1).indices.cpu()


def sample_candidates(triggers: Sequence[int], topk: torch.Tensor, n: int, rng: np.random.Generator,
                      backend=None, tries: int = 4) -> list[tuple[int, ...]]:
    """Up to ``n`` distinct single-swap candidates, positions spread evenly over the triggers (as
    GCG does) and tokens drawn from each position's top-k; candidates that do not survive
    decode -> re-encode are rejected and redrawn."""
    base = tuple(int(t) for t in triggers)
    n_pos, k = topk.shape
    seen = {base}
    out: list[tuple[int, ...]] = []
    offset = int(rng.integers(n_pos))
    for j in range(n * tries):
        if len(out) >= n:
            break
        pos = (offset + j) % n_pos
        cand = list(base)
        cand[pos] = int(topk[pos, int(rng.integers(k))])
        cand_t = tuple(cand)
        if cand_t in seen:
            continue
        seen.add(cand_t)
        if backend is not None and not round_trips(backend, cand_t):
            continue
        out.append(cand_t)
    return out


# --------------------------------------------------------------------------- candidate scoring
@dataclass
class _Prefix:
    ids: tuple[int, ...]  # tokens before the first trigger (shared by all candidates)
    suffix: tuple[int, ...]  # tokens from the first trigger to the answer slot, with the base triggers
    trig_pos: tuple[int, ...]  # index in ``suffix`` of each trigger token


def _with_triggers(p: _Prefix, triggers: Sequence[int]) -> list[int]:
    suf = list(p.suffix)
    for pos, t in zip(p.trig_pos, triggers):
        suf[pos] = int(t)
    return suf


class CandidateScorer:
    """Summed gold objective of many candidate triggers on one batch of examples."""

    def __init__(self, scorer: Scorer, prompt: Prompt, *, objective: str = "vocab", kv_cache: bool = True,
                 max_tokens: int | None = None) -> None:
        self.scorer = scorer
        self.backend = scorer.backend
        self.prompt = prompt
        self.objective = objective
        self.cp = scorer.compile(prompt)
        tpl = prompt.parsed
        trig_idx = [i for i, s in enumerate(tpl.segments) if isinstance(s, Trigger)]
        self.use_kv = (
            kv_cache and self.backend.kind == "causal" and bool(trig_idx) and tpl.answer_index > max(trig_idx)
        )
        # The KV copy per row costs memory like a full sequence would; bound rows x width like a batch.
        self.max_tokens = max_tokens or 4 * scorer.max_batch_tokens
        self._planner: Scorer | None = None

    # ------------------------------------------------------------------ planning
    def passes(self, n_candidates: int, examples: Sequence[Any], candidates: Sequence[tuple[int, ...]] | None = None) -> int:
        """Forward passes that scoring ``n_candidates`` candidates (plus the current trigger) will take.

        Exact when ``candidates`` (the current trigger first, as :meth:`score` gets them) are
        given; otherwise an upper bound (every trigger position may start its own group).
        """
        if not self.use_kv:
            prompts = [self.prompt] * (n_candidates + 1)
            return _plan_many(self.scorer, prompts, examples, distinct=True)
        total = 0
        for chunk, prefixes in self._example_chunks(examples):
            cached = self._stems_cached(prefixes)
            if candidates is not None:
                groups = self._groups(candidates, prefixes)
                # the text (unless cached) and the current suffix up to the last group's start: one pass
                total += int(not cached or max(groups) > 0)
                total += sum(len(self._row_chunks(len(rows), prefixes)) for rows in groups.values())
            else:
                n_groups = min(n_candidates + 1, len(prefixes[0].trig_pos)) if self._same_layout(prefixes) else 1
                total += 1 + len(self._row_chunks(n_candidates + 1, prefixes)) + n_groups - 1
        return total

    def _stems_cached(self, prefixes: list[_Prefix]) -> bool:
        """Whether the chunk's texts will come from the stem cache. Planned as not cached when the
        cache is close to full (storing other stems on the way might evict these): then the
        planners give an upper bound instead of the exact count."""
        stems = self.scorer.stems
        if stems is None or not stems.all_cached([p.ids for p in prefixes]):
            return False
        return stems.nbytes <= stems.max_bytes // 2

    # ------------------------------------------------------------------ scoring
    def score(self, candidates: Sequence[tuple[int, ...]], examples: Sequence[Any]) -> np.ndarray:
        """Objective summed over ``examples`` for each candidate trigger tuple: ``[C]``.

        Put the current trigger first: on the KV-cache path the text *and* its suffix up to each
        candidate's first changed trigger are computed once, so a candidate that swaps the last
        of three triggers recomputes one token, not three.
        """
        gold = torch.as_tensor([e.label for e in examples])
        if not self.use_kv:
            prompts = [self.prompt.with_(triggers=tuple(c)) for c in candidates]
            results = self.scorer.score_many(prompts, examples, desc="candidates")
            raw = torch.stack([torch.as_tensor(r.raw) for r in results])  # [C, N, L]
        else:
            with torch.inference_mode():
                raw = self._score_kv(candidates, examples)
        return objective_from_raw(raw.float(), gold.expand(raw.shape[0], -1), self.objective).sum(-1).numpy()

    # ------------------------------------------------------------------ gradient
    def gradient_passes(self, examples: Sequence[Any]) -> int:
        """Forward passes :meth:`gradient` will take on ``examples``."""
        if not self.use_kv:  # an empty scorer plans it exactly: the gradient path never uses the cache
            if self._planner is None:
                self._planner = Scorer(self.backend, batch_size=self.scorer.batch_size,
                                       max_batch_tokens=self.scorer.max_batch_tokens, progress=False)
            return self._planner.plan(gradient_prompt(self.prompt), examples)
        return sum(1 + int(not self._stems_cached(prefixes)) for _, prefixes in self._example_chunks(examples))

    def gradient(self, triggers: Sequence[int], examples: Sequence[Any]) -> tuple[torch.Tensor, float]:
        """Like :func:`trigger_gradient`, with the text's KV cache on the KV-cache path.

        In a causal LM the text before the first trigger does not depend on the triggers, so its
        keys and values are computed without autograd (or taken from the scorer's stem cache) and
        only the rows from the first trigger to the answer run with gradients: backward goes
        through a few tokens per example, not through the whole sequence.
        """
        triggers = tuple(int(t) for t in triggers)
        if not self.use_kv:
            return trigger_gradient(self.scorer, self.prompt.with_(triggers=triggers), examples, self.objective)
        be = self.backend
        E = be.input_embeddings()
        soft = E[torch.as_tensor(triggers, device=E.device)].detach().clone().requires_grad_(True)
        order, parts = [], []
        with torch.enable_grad():
            for chunk, prefixes in self._example_chunks(examples):
                with torch.no_grad():
                    cache, lens = self._run_prefix(prefixes)
                parts.append(self._run_candidates([triggers], prefixes, cache, lens, 0, soft=soft)[0])
                order += chunk
            raw = torch.cat(parts)
            gold = torch.as_tensor([examples[i].label for i in order])
            loss = -objective_from_raw(raw.float(), gold, self.objective).mean()
            start = time.perf_counter()
            (grad,) = torch.autograd.grad(loss, soft)
            self.scorer.counter.charge_backward(time.perf_counter() - start)
        return grad.float(), float(loss.detach())

    # ------------------------------------------------------------------ KV-cache path
    def _prefix(self, fields) -> _Prefix | None:
        be, cp = self.backend, self.cp
        base = tuple(self.prompt.triggers)
        # Encode with every trigger swapped: the positions that change are exactly the trigger
        # tokens, the first of them is where the shared text prefix ends.
        alt = tuple((t + 1) % be.vocab_size for t in base)
        a = encode(cp, be, fields).prefix
        b = encode(self.scorer.compile(self.prompt.with_(triggers=alt)), be, fields).prefix
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        if len(a) != len(b) or len(diff) != len(base):
            return None
        p = diff[0]
        return _Prefix(a[:p], a[p:], tuple(i - p for i in diff))

    def _example_chunks(self, examples):
        prefixes = [self._prefix(dict(getattr(e, "fields", e))) for e in examples]
        if any(p is None for p in prefixes):
            raise RuntimeError("trigger positions could not be located for the KV-cache path")
        chunks, cur, width = [], [], 0
        for i, p in enumerate(prefixes):
            w = max(width, len(p.ids))
            if cur and (len(cur) >= self.scorer.batch_size or w * (len(cur) + 1) > self.scorer.max_batch_tokens):
                chunks.append(cur)
                cur, w = [], len(p.ids)
            cur.append(i)
            width = w
        if cur:
            chunks.append(cur)
        return [(c, [prefixes[i] for i in c]) for c in chunks]

    def _rows_per_pass(self, prefixes: list[_Prefix]) -> int:
        words = [w for ws in self.cp.word_ids for w in ws]
        extra = max((len(w) for w in words if len(w) > 1), default=0)
        width = max(len(p.ids) for p in prefixes) + max(len(p.suffix) for p in prefixes) + extra
        return max(1, self.max_tokens // max(1, width))

    def _row_chunks(self, n_candidates: int, prefixes: list[_Prefix]) -> list[range]:
        rows_per_cand = len(prefixes) * (1 + sum(len(w) > 1 for ws in self.cp.word_ids for w in ws))
        per_pass = max(1, self._rows_per_pass(prefixes) // max(1, rows_per_cand))
        return [range(i, min(i + per_pass, n_candidates)) for i in range(0, n_candidates, per_pass)]

    @staticmethod
    def _same_layout(prefixes: list[_Prefix]) -> bool:
        first = prefixes[0]
        return all(p.suffix == first.suffix and p.trig_pos == first.trig_pos for p in prefixes)

    def _groups(self, candidates, prefixes: list[_Prefix]) -> dict[int, list[int]]:
        """Candidates by where their rows can start: at the first trigger that differs from
        ``candidates[0]`` (the current trigger, whose suffix tokens before it are in the KV cache)."""
        if not self._same_layout(prefixes):
            return {0: list(range(len(candidates)))}
        base, trig_pos = tuple(int(t) for t in candidates[0]), prefixes[0].trig_pos
        groups: dict[int, list[int]] = {}
        for i, cand in enumerate(candidates):
            first = next((j for j, (a, b) in enumerate(zip(cand, base)) if int(a) != int(b)), len(base) - 1)
            groups.setdefault(trig_pos[first], []).append(i)
        return dict(sorted(groups.items()))

    def _score_kv(self, candidates, examples) -> torch.Tensor:
        n_labels = len(self.cp.word_ids)
        out = torch.zeros(len(candidates), len(examples), n_labels)
        for chunk, prefixes in self._example_chunks(examples):
            groups = self._groups(candidates, prefixes)
            ext = max(groups)  # the current suffix up to the last group's start goes into the cache
            (layers, pmask), lens = self._run_prefix(prefixes, ext, candidates[0])
            for start, rows in groups.items():
                cut = ext - start  # the cached suffix tokens this group recomputes
                sliced = [(k[:, :, : k.shape[2] - cut], v[:, :, : v.shape[2] - cut]) for k, v in layers]
                cache = (sliced, pmask[:, : pmask.shape[1] - cut])
                for part in self._row_chunks(len(rows), prefixes):
                    idx = [rows[i] for i in part]
                    vals = self._run_candidates([candidates[c] for c in idx], prefixes, cache, lens - cut, start)
                    out[torch.as_tensor(idx)[:, None], torch.as_tensor(chunk)[None, :]] = vals
        return out

    def _run_prefix(self, prefixes: list[_Prefix], ext: int = 0, base: Sequence[int] = ()):
        """The text and the first ``ext`` tokens of the suffix with triggers ``base``, with their KV cache.

        The text's keys and values come from the scorer's stem cache when every example's are
        there (then at most the ``ext`` tokens run); otherwise text and suffix run in one pass,
        which stores them.
        """
        tails = [tuple(_with_triggers(p, base)[:ext]) for p in prefixes]
        run = run_rows(self.backend, self.scorer.counter, [p.ids for p in prefixes], tails, self.scorer.stems)
        return run.cache(), run.lens

    def _run_candidates(self, cands, prefixes: list[_Prefix], cache, lens, start: int = 0,
                        soft: torch.Tensor | None = None) -> torch.Tensor:
        """Label scores ``[len(cands), len(prefixes), L]`` of rows that continue the cached text.

        With ``soft`` (``[n_triggers, H]``, one candidate) the trigger tokens' input embeddings
        are replaced by it, differentiably (the gradient path).
        """
        be, counter = self.backend, self.scorer.counter
        (layers, pmask) = cache
        words = self.cp.word_ids
        multi = [(li, wi) for li, ws in enumerate(words) for wi, w in enumerate(ws) if len(w) > 1]
        has_single = any(len(w) == 1 for ws in words for w in ws)
        block = int(has_single) + len(multi)  # rows per (candidate, example), in this order
        seqs, ex_idx = [], []  # row tokens, example index of each row
        for cand in cands:
            for ei, p in enumerate(prefixes):
                suf = _with_triggers(p, cand)[start:]  # the tokens before ``start`` are in the cache
                if has_single:
                    seqs.append(suf), ex_idx.append(ei)
                for li, wi in multi:
                    seqs.append(suf + list(words[li][wi])), ex_idx.append(ei)
        # Left-pad the suffixes (the pad sits between prefix and suffix, masked out), so the
        # answer position is the last one in every row and logits_to_keep stays small.
        padded = be.pad(seqs)
        ids, smask = padded.input_ids, padded.attention_mask
        rows, width = ids.shape
        idx = torch.as_tensor(ex_idx, device=be.device)
        pos = lens.to(be.device)[idx][:, None] + padded.position_ids
        mask = torch.cat([pmask[idx], smask], dim=1)
        past = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in layers]
        keep = 1 + max((len(words[li][wi]) for li, wi in multi), default=0)
        embeds = None
        if soft is not None:  # the trigger tokens' embeddings replaced by ``soft`` (rows are left-padded)
            r_idx, c_idx, which = [], [], []
            for r, s in enumerate(seqs):
                for j, tp in enumerate(prefixes[ex_idx[r]].trig_pos):
                    if tp >= start:
                        r_idx.append(r), c_idx.append(width - len(s) + tp - start), which.append(j)
            emb = be.model.get_input_embeddings()(ids)
            place = (torch.as_tensor(r_idx, device=emb.device), torch.as_tensor(c_idx, device=emb.device))
            embeds = emb.index_put(place, soft[torch.as_tensor(which, device=soft.device)].to(emb.dtype))
        with counter.forward(rows, int(smask.sum()), rows * width):
            logits, _ = be.forward_cached(ids, mask, pos, past=past, logits_to_keep=keep, inputs_embeds=embeds)
        lp = torch.log_softmax(logits.float(), dim=-1)  # [R, keep, V]
        # Per (candidate, example) row block: every word's log-prob, then log-sum-exp per label,
        # vectorised (a Python loop over rows costs more than the pass itself on a GPU).
        n_blocks = rows // block
        cols: dict[tuple[int, int], torch.Tensor] = {}
        if has_single:
            last = lp[torch.arange(0, rows, block, device=lp.device), -1]  # [n_blocks, V]
            for li, ws in enumerate(words):
                for wi, wt in enumerate(ws):
                    if len(wt) == 1:
                        cols[(li, wi)] = last[:, wt[0]]
        for off, (li, wi) in enumerate(multi, start=int(has_single)):
            wt = words[li][wi]
            tgt = torch.as_tensor(wt, device=lp.device)
            part = lp[torch.arange(off, rows, block, device=lp.device), keep - len(wt) - 1 : keep - 1]
            cols[(li, wi)] = part.gather(-1, tgt[None, :, None].expand(n_blocks, -1, 1)).squeeze(-1).sum(-1)
        per_label = [torch.logsumexp(torch.stack([cols[(li, wi)] for wi in range(len(ws))], -1), -1)
                     for li, ws in enumerate(words)]
        return torch.stack(per_label, -1).view(len(cands), len(prefixes), len(words)).cpu()


def _plan_many(scorer: Scorer, prompts: Sequence[Prompt], examples: Sequence[Any], distinct: bool = False) -> int:
    """Forward passes ``score_many(prompts, examples)`` would spend (an upper bound when
    ``distinct``: the prompts stand for candidates not known yet, none of them cached).

    Uses the scorer's request planner; a public ``Scorer.plan_many`` would replace this.
    """
    reqs = []
    for i, p in enumerate(prompts):
        cp = scorer.compile(p)
        rs, _ = scorer._requests(cp, scorer._all_fields(cp, examples))
        if distinct:  # give each stand-in prompt its own requests, as distinct candidates would have
            rs = [dataclasses.replace(r, soft=r.soft + ((-1, i),)) for r in rs]
        reqs.extend(rs)
    todo = [r for r in dict.fromkeys(reqs) if distinct or r not in scorer._cache]
    return len(scorer._batches(todo))
