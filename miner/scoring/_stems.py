"""Key/value cache of causal-LM *stems*, reused across scoring calls.

A stem is the token sequence of a filled prompt up to its first trigger slot: the lead
tokens and the example text, which do not depend on the trigger tokens. In a causal LM
the keys and values of a stem depend on the stem alone, so once they are computed every
later prompt that differs only from the first trigger on (every candidate and every dev
evaluation of a trigger search, on the same examples) runs just its few remaining tokens
on top of them. The scorer keeps them per job in a byte-bounded LRU
(``Scorer(stem_cache_mb=...)``); the gradient and candidate passes of a trigger search
(:class:`~miner.scoring.TriggerScorer`, ``_candidates.py``) read the same store, so a training
example's text is run once per search, not once per step.

Stems are stored from a pass that ran anyway: the first time a row is seen it runs whole
(one pass, as without this cache) and its stem's slice of the pass's key/value cache is
kept; only rows whose stems are *all* cached run on top of them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

TokenIds = tuple[int, ...]
Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each [B, kv_heads, T, head_dim]


@dataclass
class StemRun:
    """What :func:`run_rows` returns: the kept logits (``None`` when nothing ran), and the
    key/value cache of every row's stem and tail with its attention mask and token counts."""

    logits: torch.Tensor | None
    layers: Layers
    mask: torch.Tensor  # [B, T] 1 on real tokens (padding may sit between stem and tail)
    lens: torch.Tensor  # [B] real tokens per row: the next position id

    def cache(self):
        return self.layers, self.mask


class StemCache:
    """Byte-bounded LRU: stem token ids -> that stem's per-layer keys and values ``[kv_heads, s, head_dim]``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[TokenIds, Layers] = OrderedDict()
        self._bytes = 0
        self.hits = 0  # rows whose stem came from the cache

    def __contains__(self, stem: TokenIds) -> bool:
        return stem in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def all_cached(self, stems: Sequence[TokenIds]) -> bool:
        return all(s in self._items for s in stems)

    def get(self, stem: TokenIds) -> Layers:
        self._items.move_to_end(stem)
        return self._items[stem]

    def put(self, stem: TokenIds, layers: Layers) -> None:
        if stem in self._items:
            return
        size = _nbytes(layers)
        if size > self.max_bytes:
            return
        self._items[stem] = layers
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= _nbytes(old)

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def stack(self, stems: Sequence[TokenIds], device) -> tuple[Layers, torch.Tensor]:
        """The cached stems as one left-padded batch: per-layer ``[B, kv_heads, S, head_dim]`` and mask ``[B, S]``."""
        entries = [self.get(s) for s in stems]
        self.hits += len(stems)
        return stack_layers(entries, device)


def stack_layers(entries: Sequence[Layers], device) -> tuple[Layers, torch.Tensor]:
    """Per-layer ``(keys, values)`` of several sequences ``[kv_heads, s, head_dim]`` as one left-padded
    batch ``[B, kv_heads, S, head_dim]``, and its mask ``[B, S]``. One entry for every row (a shared
    prefix) is expanded, not copied: the model's cache concatenates it with the new tokens anyway."""
    lens = [e[0][0].shape[1] for e in entries]
    width = max(lens)
    mask = torch.zeros((len(entries), width), dtype=torch.long, device=device)
    for r, n in enumerate(lens):
        mask[r, width - n :] = 1
    if all(e is entries[0] for e in entries):
        b = len(entries)
        return [(k[None].expand(b, -1, -1, -1), v[None].expand(b, -1, -1, -1)) for k, v in entries[0]], mask
    layers = []
    for li in range(len(entries[0])):
        k0, v0 = entries[0][li]
        k = k0.new_zeros((len(entries), k0.shape[0], width, k0.shape[2]))
        v = v0.new_zeros((len(entries), v0.shape[0], width, v0.shape[2]))
        for r, e in enumerate(entries):
            n = lens[r]
            k[r, :, width - n :] = e[li][0]
            v[r, :, width - n :] = e[li][1]
        layers.append((k, v))
    return layers, mask


def _nbytes(layers: Layers) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)


def run_rows(
    backend,
    counter,
    stems: Sequence[TokenIds],
    tails: Sequence[TokenIds],
    cache: StemCache | None,
    *,
    logits_to_keep: int = 1,
) -> StemRun:
    """Forward rows ``stem + tail`` of a causal LM, with their key/value cache.

    When every stem is in ``cache``, only the tails run, on top of the cached stems (and when
    every tail is empty, nothing runs). Otherwise the rows run whole, in one pass, and the
    stems missing from ``cache`` are stored from that pass. The pass is charged to ``counter``.
    """
    device = backend.device
    n = len(stems)
    if cache is not None and cache.all_cached(stems) and (all(tails) or not any(tails)):
        layers, smask = cache.stack(stems, device)
        if not any(tails):
            return StemRun(None, layers, smask, smask.sum(-1))
        tb = backend.pad(tails)  # left-padded: the pad sits between stem and tail, masked out
        pos = smask.sum(-1)[:, None] + tb.position_ids
        mask = torch.cat([smask, tb.attention_mask], dim=1)
        with counter.forward(n, int(tb.attention_mask.sum()), tb.input_ids.numel()):
            logits, out = backend.forward_cached(
                tb.input_ids, mask, pos, past=layers, logits_to_keep=logits_to_keep
            )
        return StemRun(logits, out, mask, mask.sum(-1))
    rows = [tuple(s) + tuple(t) for s, t in zip(stems, tails)]
    batch = backend.pad(rows)
    width = batch.input_ids.shape[1]
    with counter.forward(n, int(batch.attention_mask.sum()), width * n):
        logits, out = backend.forward_cached(
            batch.input_ids, batch.attention_mask, batch.position_ids, logits_to_keep=logits_to_keep
        )
    if cache is not None:
        store(cache, stems, rows, width, out)
    return StemRun(logits, out, batch.attention_mask, batch.attention_mask.sum(-1))


def store(
    cache: StemCache, stems: Sequence[TokenIds], rows: Sequence[Sequence[int]], width: int, layers: Layers
) -> None:
    """Keep each row's stem slice of a left-padded pass's key/value cache (rows of ``width`` tokens)."""
    # Cloned outside inference mode: a stem stored while scoring serves gradient passes later.
    with torch.inference_mode(False), torch.no_grad():
        for r, (s, row) in enumerate(zip(stems, rows)):
            if s and tuple(s) not in cache:
                a = width - len(row)
                cache.put(
                    tuple(s),
                    [(k[r, :, a : a + len(s)].clone(), v[r, :, a : a + len(s)].clone()) for k, v in layers],
                )
