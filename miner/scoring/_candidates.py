"""Many trigger candidates of one prompt on a batch of examples, and the gradient w.r.t. its triggers.

A trigger search (``autoprompt``'s HotFlip step) asks two things of the model per step: the
gradient of a loss w.r.t. the trigger embeddings on one batch, and the label scores of tens of
candidate triggers on another. Both are here, behind :class:`TriggerScorer`, so that a searcher
only chooses the candidates and accepts or rejects them.

Every candidate is scored through the scorer's own requests (:meth:`Scorer.requests`) and label
aggregation (:meth:`Scorer.label_scores`), so its numbers are :meth:`Scorer.score`'s. What differs
is how the requests run:

- **KV path** (a causal LM whose triggers all come after the text and before the answer): the
  text before the first trigger (the requests' *stem*, ``_stems.py``) runs once per example, or
  comes from the scorer's stem cache, extended through the current trigger up to the latest
  position where a candidate starts to differ. A candidate's rows then run only from its first
  changed trigger to the end of the request, left-padded so that the tokens whose logits are
  read come last (``logits_to_keep`` stays small), as many rows per pass as ``max_tokens`` slots
  allow.
- **pooled path** (masked LMs, an answer before a trigger, ``kv_cache=False``): the candidates'
  prompts go through :meth:`Scorer.score_many`.

The gradient takes the same two routes: on the KV path the text's keys and values are computed
without autograd (or come from the stem cache) and only the rows from the first trigger on run,
with the trigger tokens' embeddings replaced by a differentiable copy; otherwise the template's
trigger slots become soft slots (:func:`gradient_prompt`) and :meth:`Scorer.label_logprobs` runs
whole sequences. The backend's model has ``requires_grad_(False)``, so backward builds no
parameter gradients; the backward pass is charged with ``counter.backward()``.

:meth:`TriggerScorer.plan` and :meth:`TriggerScorer.plan_gradient` count the passes a call will
take (exactly, once the candidates are known), so a searcher can stop before a step its budget
cannot pay for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from miner.errors import PromptError
from miner.prompts import Answer, Field, Literal, Prompt, Soft, Template, Trigger
from miner.scoring._scorer import Request, Scorer
from miner.scoring._stems import run_rows

TokenIds = tuple[int, ...]
Loss = Callable[[torch.Tensor], torch.Tensor]  # raw label scores [N, L] (examples' order) -> scalar
GRAD_SOFT_REF = "trigger-embeddings"  # the soft tensor that stands for the triggers in a gradient prompt


# --------------------------------------------------------------------------- gradient prompt
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
            raise PromptError(
                f"template {tpl.text!r} already has soft slots; a trigger gradient needs a discrete template"
            )
    return "".join(out)


def gradient_prompt(prompt: Prompt) -> Prompt:
    """``prompt`` with its triggers as soft slots (the trigger embeddings are passed as ``soft_embeds``)."""
    return Prompt(template=soft_template(prompt.parsed), verbalizer=prompt.verbalizer, soft=GRAD_SOFT_REF)


def _trigger_embeddings(backend, triggers: Sequence[int]) -> torch.Tensor:
    E = backend.input_embeddings()
    return E[torch.as_tensor(tuple(triggers), device=E.device)].detach().clone().requires_grad_(True)


def trigger_gradient(
    scorer: Scorer, prompt: Prompt, examples: Sequence[Any], loss: Loss
) -> tuple[torch.Tensor, float]:
    """Gradient ``[n_triggers, hidden]`` of ``loss(raw label scores)`` w.r.t. the trigger embeddings of
    ``prompt``, and the loss, through whole sequences (:meth:`Scorer.label_logprobs`)."""
    soft = _trigger_embeddings(scorer.backend, prompt.triggers)
    with torch.enable_grad():
        value = loss(scorer.label_logprobs(gradient_prompt(prompt), examples, soft_embeds=soft))
        with scorer.counter.backward():
            (grad,) = torch.autograd.grad(value, soft)
    return grad.float(), float(value.detach())


# --------------------------------------------------------------------------- candidates
@dataclass(frozen=True)
class _Layout:
    """One example's requests as the KV path sees them (from the scorer's requests of the base prompt)."""

    stem: TokenIds  # tokens before the first trigger
    suffix: TokenIds  # from the first trigger to the answer slot, with the base prompt's triggers
    trig_pos: tuple[int, ...]  # index in ``suffix`` of each trigger token
    rows: int  # distinct requests per candidate (rows of a pass)
    extra: int  # most tokens a request scores after the answer slot (its word, and text after it)


class TriggerScorer:
    """Raw label scores of many trigger candidates of ``prompt`` on a batch of examples, and the
    gradient w.r.t. the triggers (module doc: the KV and pooled paths).

    Candidates are tuples of trigger token ids; every call takes the current trigger first (the
    KV path extends the text's cache through it, so a candidate that swaps the last of three
    triggers recomputes one token, not three). ``max_tokens`` bounds rows x width of a KV pass
    (default ``4 * scorer.max_batch_tokens``: each row also copies its text's keys and values).
    """

    def __init__(
        self, scorer: Scorer, prompt: Prompt, *, kv_cache: bool = True, max_tokens: int | None = None
    ) -> None:
        self.scorer = scorer
        self.backend = scorer.backend
        self.prompt = prompt
        scorer.compile(prompt)  # a prompt that does not fit the model fails here, not mid-search
        tpl = prompt.parsed
        trig_idx = [i for i, s in enumerate(tpl.segments) if isinstance(s, Trigger)]
        self.kv_path = (
            kv_cache and self.backend.kind == "causal" and bool(trig_idx) and tpl.answer_index > max(trig_idx)
        )
        self.max_tokens = max_tokens or 4 * scorer.max_batch_tokens

    # ------------------------------------------------------------------ public
    def plan(self, candidates: Sequence[Sequence[int]] | int, examples: Sequence[Any]) -> int:
        """Forward passes :meth:`score` will take on ``examples``: exact for a list of candidates
        (current trigger first); for a number of candidates not drawn yet (the current trigger
        among them), an upper bound."""
        cands: list[Sequence[int]] | None = None
        if isinstance(candidates, int):
            n = candidates
        else:
            cands = list(candidates)
            n = len(cands)
        if n == 0 or not examples:
            return 0
        lays = self._layouts(examples) if self.kv_path else None
        if lays is None:
            if cands is not None:
                return self.scorer.plan_many([self._candidate(c) for c in cands], examples)
            return self.scorer.plan_many([self.prompt] * n, examples, distinct=True)
        total = 0
        for _, chunk in self._chunks(lays):
            if cands is not None:
                groups = self._groups(cands, chunk)
                # the text (unless cached) and the current suffix up to the last group's start: one pass
                total += int(not self._stems_cached(chunk) or max(groups) > 0)
                total += sum(len(self._row_chunks(len(rows), chunk)) for rows in groups.values())
            else:
                n_groups = min(n, len(chunk[0].trig_pos)) if _same_layout(chunk) else 1
                total += 1 + len(self._row_chunks(n, chunk)) + n_groups - 1
        return total

    def score(self, candidates: Sequence[Sequence[int]], examples: Sequence[Any]) -> torch.Tensor:
        """Raw label scores ``[C, N, L]`` (log of the summed word probabilities, as
        ``Scorer.score(...).raw``) of each candidate trigger tuple on ``examples``."""
        n_labels = len(self.prompt.verbalizer.labels)
        if not candidates or not examples:
            return torch.zeros(len(candidates), len(examples), n_labels)
        lays = self._layouts(examples) if self.kv_path else None
        if lays is None:
            results = self.scorer.score_many(
                [self._candidate(c) for c in candidates], examples, desc="candidates"
            )
            return torch.stack([torch.as_tensor(r.raw) for r in results]).float()
        with torch.inference_mode():
            return self._score_kv(candidates, examples, lays, n_labels)

    def plan_gradient(self, examples: Sequence[Any]) -> int:
        """Forward passes :meth:`gradient` will take on ``examples``."""
        lays = self._layouts(examples) if self.kv_path and examples else None
        if lays is None:
            return self.scorer.plan_label_logprobs(gradient_prompt(self.prompt), examples)
        return sum(1 + int(not self._stems_cached(chunk)) for _, chunk in self._chunks(lays))

    def gradient(
        self, triggers: Sequence[int], examples: Sequence[Any], loss: Loss
    ) -> tuple[torch.Tensor, float]:
        """Gradient ``[n_triggers, hidden]`` of ``loss(raw [N, L])`` w.r.t. the embeddings of ``triggers``
        on ``examples``, and the loss (one backward pass, charged to the scorer's counter)."""
        triggers = tuple(int(t) for t in triggers)
        lays = self._layouts(examples) if self.kv_path and examples else None
        if lays is None:
            return trigger_gradient(self.scorer, self._candidate(triggers), examples, loss)
        be, counter = self.backend, self.scorer.counter
        soft = _trigger_embeddings(be, triggers)
        prompt = self._candidate(triggers)
        parts = []
        with torch.enable_grad():
            for idx, chunk in self._chunks(lays):
                plan = self.scorer.requests(prompt, [examples[i] for i in idx])[1]
                with torch.no_grad():
                    run = run_rows(
                        be, counter, [lay.stem for lay in chunk], [()] * len(chunk), self.scorer.stems
                    )
                rows = [
                    (r, e, r.ids[len(chunk[e].stem) :]) for e, blk in enumerate(plan) for r in _block(blk)
                ]
                parts.append(
                    self.scorer.label_scores(plan, self._run(rows, chunk, run.cache(), run.lens, 0, soft))
                )
            value = loss(torch.cat(parts))
            with counter.backward():
                (grad,) = torch.autograd.grad(value, soft)
        return grad.float(), float(value.detach())

    # ------------------------------------------------------------------ layout
    def _candidate(self, triggers: Sequence[int]) -> Prompt:
        return self.prompt.with_(triggers=tuple(int(t) for t in triggers))

    def _layouts(self, examples: Sequence[Any]) -> list[_Layout] | None:
        """Each example's stem, suffix and trigger positions, read off the scorer's requests for the
        prompt and for the prompt with every trigger changed; None when an example has no text before
        its first trigger (then the pooled path serves it)."""
        base = self.prompt
        alt = self._candidate(tuple((t + 1) % self.backend.vocab_size for t in base.triggers))
        plans_a, plans_b = self.scorer.requests(base, examples)[1], self.scorer.requests(alt, examples)[1]
        out = []
        for pa, pb in zip(plans_a, plans_b):
            ra, rb = pa[0][0][0], pb[0][0][0]
            if not ra.stem or ra.stem != rb.stem or len(ra.ids) != len(rb.ids):
                return None
            end = len(ra.ids) - ra.n  # the answer slot
            a, b = ra.ids[ra.stem : end], rb.ids[ra.stem : end]
            diff = tuple(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
            if len(diff) != len(base.triggers) or diff[0] != 0:
                return None
            blk = _block(pa)
            out.append(_Layout(ra.ids[: ra.stem], a, diff, len(blk), max(r.n for r in blk)))
        return out

    def _chunks(self, lays: list[_Layout]) -> list[tuple[list[int], list[_Layout]]]:
        """Examples in order, cut into chunks of at most ``batch_size`` whose stems fit ``max_batch_tokens``."""
        s = self.scorer
        chunks: list[list[int]] = []
        cur: list[int] = []
        width = 0
        for i, lay in enumerate(lays):
            w = max(width, len(lay.stem))
            if cur and (len(cur) >= s.batch_size or w * (len(cur) + 1) > s.max_batch_tokens):
                chunks.append(cur)
                cur, w = [], len(lay.stem)
            cur.append(i)
            width = w
        if cur:
            chunks.append(cur)
        return [(c, [lays[i] for i in c]) for c in chunks]

    def _stems_cached(self, chunk: list[_Layout]) -> bool:
        """Whether the chunk's texts will come from the stem cache. Planned as not cached when the
        cache is close to full (storing other stems on the way might evict these): then the plan is
        an upper bound instead of the exact count."""
        stems = self.scorer.stems
        if stems is None or not stems.all_cached([lay.stem for lay in chunk]):
            return False
        return stems.nbytes <= stems.max_bytes // 2

    def _row_chunks(self, n_candidates: int, chunk: list[_Layout]) -> list[range]:
        """Candidates per pass: as many as ``max_tokens`` slots of the widest row allow."""
        width = (
            max(len(lay.stem) for lay in chunk)
            + max(len(lay.suffix) for lay in chunk)
            + max(lay.extra for lay in chunk)
        )
        rows_per_pass = max(1, self.max_tokens // max(1, width))
        per_pass = max(1, rows_per_pass // max(1, sum(lay.rows for lay in chunk)))
        return [range(i, min(i + per_pass, n_candidates)) for i in range(0, n_candidates, per_pass)]

    @staticmethod
    def _groups(candidates, chunk: list[_Layout]) -> dict[int, list[int]]:
        """Candidates by where their rows can start: at the first trigger that differs from
        ``candidates[0]`` (the current trigger, whose suffix tokens before it are in the KV cache)."""
        if not _same_layout(chunk):
            return {0: list(range(len(candidates)))}
        base, trig_pos = tuple(int(t) for t in candidates[0]), chunk[0].trig_pos
        groups: dict[int, list[int]] = {}
        for i, cand in enumerate(candidates):
            first = next((j for j, (a, b) in enumerate(zip(cand, base)) if int(a) != int(b)), len(base) - 1)
            groups.setdefault(trig_pos[first], []).append(i)
        return dict(sorted(groups.items()))

    # ------------------------------------------------------------------ KV path
    def _score_kv(self, candidates, examples, lays: list[_Layout], n_labels: int) -> torch.Tensor:
        out = torch.zeros(len(candidates), len(examples), n_labels)
        counter = self.scorer.counter
        for idx, chunk in self._chunks(lays):
            exs = [examples[i] for i in idx]
            plans = [self.scorer.requests(self._candidate(c), exs)[1] for c in candidates]
            groups = self._groups(candidates, chunk)
            ext = max(groups)  # the current suffix up to the last group's start goes into the cache
            tails = [blk[0][0][0].ids[len(lay.stem) :][:ext] for blk, lay in zip(plans[0], chunk)]
            run = run_rows(self.backend, counter, [lay.stem for lay in chunk], tails, self.scorer.stems)
            (layers, pmask), lens = run.cache(), run.lens
            cols = torch.as_tensor(idx)[None, :]
            for start, members in groups.items():
                cut = ext - start  # the cached suffix tokens this group recomputes
                sliced = [(k[:, :, : k.shape[2] - cut], v[:, :, : v.shape[2] - cut]) for k, v in layers]
                cache = (sliced, pmask[:, : pmask.shape[1] - cut])
                for part in self._row_chunks(len(members), chunk):
                    cands = [members[i] for i in part]
                    rows = [
                        (r, e, r.ids[len(chunk[e].stem) + start :])
                        for c in cands
                        for e, blk in enumerate(plans[c])
                        for r in _block(blk)
                    ]
                    answers = self._run(rows, chunk, cache, lens - cut, start)
                    vals = self.scorer.label_scores(
                        [e for c in cands for e in plans[c]], answers
                    )  # one call per pass
                    out[torch.as_tensor(cands)[:, None], cols] = (
                        vals.view(len(cands), len(idx), n_labels).float().cpu()
                    )
        return out

    def _run(
        self,
        rows: list[tuple[Request, int, TokenIds]],
        chunk: list[_Layout],
        cache,
        lens: torch.Tensor,
        start: int,
        soft: torch.Tensor | None = None,
    ) -> dict[Request, torch.Tensor]:
        """One pass of ``rows`` (request, example index in the chunk, its tokens from ``start`` on) on
        top of the chunk's cached keys and values: each request's answer (see :class:`Request`).

        With ``soft`` (``[n_triggers, H]``) the trigger tokens' input embeddings are replaced by it,
        differentiably (the gradient path).
        """
        be, counter = self.backend, self.scorer.counter
        layers, pmask = cache
        seqs = [list(t) for _, _, t in rows]
        # Left-padded: the pad sits between the cached text and the row, masked out, so the tokens
        # whose logits are read come last in every row.
        padded = be.pad(seqs)
        ids, smask = padded.input_ids, padded.attention_mask
        n_rows, width = ids.shape
        assert padded.position_ids is not None  # a causal LM's batch has them
        ex = torch.as_tensor([e for _, e, _ in rows], device=be.device)
        pos = lens.to(be.device)[ex][:, None] + padded.position_ids
        mask = torch.cat([pmask[ex], smask], dim=1)
        past = [(k.index_select(0, ex), v.index_select(0, ex)) for k, v in layers]
        keep = max(1 if r.kind == "next" else r.n + 1 for r, _, _ in rows)
        embeds = None
        if soft is not None:
            r_idx, c_idx, which = [], [], []
            for i, (_, e, t) in enumerate(rows):
                for j, tp in enumerate(chunk[e].trig_pos):
                    if tp >= start:
                        r_idx.append(i)
                        c_idx.append(width - len(t) + tp - start)
                        which.append(j)
            emb = be.embed(ids)
            place = (torch.as_tensor(r_idx, device=emb.device), torch.as_tensor(c_idx, device=emb.device))
            embeds = emb.index_put(place, soft[torch.as_tensor(which, device=soft.device)].to(emb.dtype))
        with counter.forward(n_rows, int(smask.sum()), n_rows * width):
            logits, _ = be.forward_cached(
                ids, mask, pos, past=past, logits_to_keep=keep, inputs_embeds=embeds
            )
        lp = torch.log_softmax(logits.float(), dim=-1)  # [R, keep, V]
        answers: dict[Request, torch.Tensor] = {}
        for i, (r, _, _) in enumerate(rows):
            if r.kind == "next":
                answers[r] = lp[i, -1]
            else:
                targets = torch.as_tensor(r.ids[-r.n :], device=lp.device)
                answers[r] = lp[i, keep - r.n - 1 : keep - 1].gather(-1, targets[:, None]).sum()
        return answers


def _block(per_label) -> list[Request]:
    """One example's distinct requests (a plan entry), the next-token request first."""
    reqs = list(dict.fromkeys(r for per_word in per_label for r, _ in per_word))
    return sorted(reqs, key=lambda r: r.kind != "next")


def _same_layout(chunk: list[_Layout]) -> bool:
    first = chunk[0]
    return all(lay.suffix == first.suffix and lay.trig_pos == first.trig_pos for lay in chunk)
