"""Model reads that are not label scores: answer-position hidden states (the linear probe) and the
measured cost of a backward pass relative to a forward pass (``miner bench``'s one cost unit).

Here, in the scoring layer, because only this layer and the models call the model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

from miner.scoring._cost import CostCounter
from miner.scoring._encode import CompiledPrompt, encode


def answer_states(
    backend: Any,
    cp: CompiledPrompt,
    examples: Sequence[Any],
    batch_size: int,
    counter: CostCounter | None,
) -> tuple[np.ndarray, int]:
    """Last-layer hidden states ``[N, hidden]`` (float64) at the answer position of compiled prompt
    ``cp`` for each example, and the forward passes spent (one per batch, charged to ``counter``).

    Causal LM: the last token before the answer (left padding, as the scorer pads); masked LM: the
    mask token put in the answer slot. The linear-probe baseline of ``miner bench`` reads these.
    """
    seqs: list[tuple[int, ...]] = []
    at: list[int] = []  # answer position in the unpadded sequence
    for ex in examples:
        enc = encode(cp, backend, ex.fields)
        if backend.kind == "causal":
            seqs.append(enc.prefix)
            at.append(len(enc.prefix) - 1)
        else:
            assert backend.mask_id is not None  # Backend refuses a masked LM without a mask token
            seqs.append(enc.prefix + (backend.mask_id,) + enc.suffix)
            at.append(len(enc.prefix))
    order = sorted(range(len(seqs)), key=lambda i: (-len(seqs[i]), i))  # similar lengths share padding
    hidden = int(backend.input_embeddings().shape[1])
    out = np.zeros((len(seqs), hidden), dtype=np.float64)
    passes = 0
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = backend.pad([seqs[i] for i in rows])
            width = batch.input_ids.shape[1]
            kwargs: dict[str, Any] = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
            if backend.kind == "causal":
                kwargs.update(position_ids=batch.position_ids, use_cache=False, logits_to_keep=1)
            charge: AbstractContextManager[Any] = (
                counter.forward(len(rows), int(batch.attention_mask.sum()), width * len(rows))
                if counter is not None
                else nullcontext()
            )
            with charge:
                states = backend.model(**kwargs, output_hidden_states=True).hidden_states[-1]
            passes += 1
            # causal rows are left-padded: the answer position is the last column of every row
            cols = [width - 1 if backend.kind == "causal" else at[i] for i in rows]
            picked = states[torch.arange(len(rows), device=states.device), torch.as_tensor(cols)]
            out[rows] = picked.float().cpu().numpy()
    return out, passes


def measure_backward_cost(backend, texts: Sequence[str], repeats: int = 3) -> dict[str, Any]:
    """Seconds of a forward pass and of a forward plus backward pass (gradient on the input
    embeddings, as the gradient searchers take it) on the same batch: ``repeats`` rounds of one of
    each, interleaved so both see the same machine, and the fastest of each (the least disturbed by
    other work, as ``timeit`` reports; on a shared machine a median still moves with the load).

    ``backward_cost`` = (forward + backward) / forward - 1: what one backward pass costs in forward
    passes, so that a gradient step is charged 1 + backward_cost forward-pass equivalents.
    """
    seqs = [backend.tokenize(t) for t in texts]
    batch = backend.pad(seqs)
    emb = backend.embed(batch.input_ids).detach()

    def fwd() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            backend.forward(batch, inputs_embeds=emb, logits_to_keep=1)
        return time.perf_counter() - t0

    def fwd_bwd() -> float:
        x = emb.clone().requires_grad_(True)
        t0 = time.perf_counter()
        logits = backend.forward(batch, inputs_embeds=x, logits_to_keep=1)
        logits[:, -1].logsumexp(-1).sum().backward()
        return time.perf_counter() - t0

    fwd()  # warm-up
    fwd_bwd()
    rounds = [(fwd(), fwd_bwd()) for _ in range(repeats)]
    f = min(r[0] for r in rounds)
    fb = min(r[1] for r in rounds)
    return {
        "backward_cost": round(max(fb / f - 1.0, 0.0), 3),
        "forward_seconds": f,
        "forward_backward_seconds": fb,
        "batch": len(seqs),
        "tokens": int(sum(len(s) for s in seqs)),
        "repeats": repeats,
    }
