"""Shared-prefix key/value reuse: a prefix that many requests start with runs once.

Two shapes of prompt make many causal-LM requests start with the same tokens:

- **shared prefix**: in-context demonstrations (or a long instruction) before the first text
  slot. Every example of a split starts with the same few hundred tokens; they run once, in a
  pass of their own, and every example's *tail* (its own text, the cue and the answer words) runs
  on top of their keys and values, expanded over the batch.
- **per-example prefix**: a prompt with many multi-token answer words (a fact probe's hundreds
  of candidate objects). Each example's filled prompt runs once, and every candidate's few
  tokens run on top of it, many examples' candidates to a pass.

:func:`mark` picks, per prompt, whichever of the two runs fewer tokens (or neither, when the
saving is too small to pay for an extra pass) and records it in each request's ``prefix``: the
number of its leading tokens that come from a prefix pass. :func:`pack` turns marked requests
into passes: the prefix passes first (unless the prefix is already cached from an earlier call),
then their tails, in chunks whose prefixes fit a token bound so that the key/values held at once
stay bounded. In a causal LM the keys and values of a prefix depend on the prefix alone, so the
scores equal the whole-sequence ones up to float rounding (the tests check 1e-5).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import torch

from miner.scoring._request import Request
from miner.scoring._stems import Layers, TokenIds, stack_layers

PREFIX = "prefix"  # the kind of the pseudo-request whose pass computes a prefix's key/values
KV_FACTOR = 4  # a tail pass holds at most KV_FACTOR * max_batch_tokens keys and values per layer


def _keep(r: Request) -> int:
    """Positions whose logits the request reads: they must come after its prefix."""
    return 1 if r.kind == "next" else r.n + 1


def _common(seqs: Sequence[TokenIds]) -> int:
    """Length of the longest common prefix (the lexicographic extremes bound everyone's)."""
    lo, hi = min(seqs), max(seqs)
    n = min(len(lo), len(hi))
    i = 0
    while i < n and lo[i] == hi[i]:
        i += 1
    return i


def eligible(r: Request) -> bool:
    return r.kind in ("next", "cont") and not r.soft and not r.stem


def mark(rows: Sequence[Sequence[Request]], *, min_tokens: int, min_words: int) -> list[list[Request]]:
    """``rows`` (one example's requests each) with ``prefix`` set where a prefix pass pays off.

    Shared prefix: the longest token prefix of all requests, if it has at least ``min_tokens``
    tokens. Per-example prefix: an example's own longest common prefix, for examples with at
    least ``min_words`` distinct requests. Of the two, the one that runs fewer tokens in all.
    """
    flat = [r for row in rows for r in row]
    if not flat or not all(eligible(r) for r in flat):
        return [list(row) for row in rows]
    whole = sum(len(r.ids) for r in dict.fromkeys(flat))
    best: tuple[int, Callable[[Request, int], int] | None] = (whole, None)

    distinct = list(dict.fromkeys(flat))
    if len(distinct) >= 2:
        shared = min(_common([r.ids for r in distinct]), min(len(r.ids) - _keep(r) for r in distinct))
        if shared >= min_tokens and whole - (len(distinct) - 1) * shared < best[0]:
            best = (whole - (len(distinct) - 1) * shared, lambda r, i: shared)

    per_row: list[int] = []
    for row in rows:
        d = list(dict.fromkeys(row))
        p = 0
        if len(d) >= min_words:
            p = min(_common([r.ids for r in d]), min(len(r.ids) - _keep(r) for r in d))
        per_row.append(max(p, 0))
    seen: set[TokenIds] = set()
    b_cost = 0
    for row, p in zip(rows, per_row):
        for r in dict.fromkeys(row):
            b_cost += len(r.ids) - p
        if p and row[0].ids[:p] not in seen:
            seen.add(row[0].ids[:p])
            b_cost += p
    if any(per_row) and b_cost < best[0]:
        best = (b_cost, lambda r, i: per_row[i])

    choose = best[1]
    if choose is None:
        return [list(row) for row in rows]
    return [[dataclasses.replace(r, prefix=choose(r, i)) for r in row] for i, row in enumerate(rows)]


def pack(
    reqs: Sequence[Request],
    cached: Callable[[TokenIds], bool],
    *,
    batch_size: int,
    max_batch_tokens: int,
    make: Callable[[TokenIds], Request],
) -> list[list[Request]]:
    """Passes for marked requests: per chunk of prefixes, the passes computing the uncached ones
    (pseudo-requests ``make(prefix ids)`` of kind :data:`PREFIX`), then the tails' passes."""
    # Keyed by the prefix and the request's soft marker too: the planner's stand-ins for prompts not
    # drawn yet carry a marker (Scorer.batches_for, distinct=True) and must not share a prefix pass.
    groups: dict[tuple[TokenIds, tuple], list[Request]] = {}
    for r in reqs:
        groups.setdefault((r.ids[: r.prefix], r.soft), []).append(r)
    chunks: list[list[tuple[TokenIds, tuple]]] = []
    held = 0
    for key in groups:
        n = len(key[0])
        if chunks and held + n <= max_batch_tokens:
            chunks[-1].append(key)
            held += n
        else:
            chunks.append([key])
            held = n
    out: list[list[Request]] = []
    for chunk in chunks:
        todo = sorted((key for key in chunk if not cached(key[0])), key=lambda key: (-len(key[0]), key))
        out += _fill(
            [make(key[0]) for key in todo], lambda r: len(r.ids), lambda r: 0, batch_size, max_batch_tokens
        )
        for kind in ("cont", "next"):
            tails = [r for key in chunk for r in groups[key] if r.kind == kind]
            tails.sort(key=lambda r: (-(len(r.ids) - r.prefix), -r.prefix, r.ids))
            out += _fill(
                tails, lambda r: len(r.ids) - r.prefix, lambda r: r.prefix, batch_size, max_batch_tokens
            )
    return out


def _fill(
    items: Sequence[Request],
    width: Callable[[Request], int],
    past: Callable[[Request], int],
    batch_size: int,
    max_batch_tokens: int,
) -> list[list[Request]]:
    """Greedy packing of items sorted widest first: rows, padded tokens and held key/values bounded."""
    batches: list[list[Request]] = []
    cur: list[Request] = []
    w = deep = 0
    for r in items:
        nw, nd = (max(w, width(r)), max(deep, past(r))) if cur else (width(r), past(r))
        n = len(cur) + 1
        if cur and (
            n > batch_size or nw * n > max_batch_tokens or (nw + nd) * n > KV_FACTOR * max_batch_tokens
        ):
            batches.append(cur)
            cur, nw, nd = [], width(r), past(r)
        cur.append(r)
        w, deep = nw, nd
    if cur:
        batches.append(cur)
    return batches


def run_prefixes(backend, counter, batch: Sequence[Request]) -> dict[TokenIds, Layers]:
    """One pass over prefix rows; each row's keys and values ``[kv_heads, len, head_dim]`` per layer."""
    padded = backend.pad([r.ids for r in batch])
    width = padded.input_ids.shape[1]
    with counter.forward(len(batch), int(padded.attention_mask.sum()), width * len(batch)):
        _, layers = backend.forward_cached(
            padded.input_ids, padded.attention_mask, padded.position_ids, logits_to_keep=1
        )
    out = {}
    for i, r in enumerate(batch):
        a = width - len(r.ids)  # left-padded
        out[r.ids] = [(k[i, :, a:].clone(), v[i, :, a:].clone()) for k, v in layers]
    return out


def run_tails(
    backend, counter, batch: Sequence[Request], prefixes: Mapping[TokenIds, Layers], keep: int
) -> torch.Tensor:
    """Logits ``[B, keep, V]`` of the requests' tails run on top of their prefixes' keys and values.

    The tails are left-padded, so the pad sits between prefix and tail (masked out) and the
    positions whose logits are read come last; position ids continue after each row's prefix.
    """
    past, pmask = stack_layers([prefixes[r.ids[: r.prefix]] for r in batch], backend.device)
    tb = backend.pad([r.ids[r.prefix :] for r in batch])
    pos = pmask.sum(-1)[:, None] + tb.position_ids
    mask = torch.cat([pmask, tb.attention_mask], dim=1)
    with counter.forward(len(batch), int(tb.attention_mask.sum()), tb.input_ids.numel()):
        logits, _ = backend.forward_cached(tb.input_ids, mask, pos, past=past, logits_to_keep=keep)
    return logits
