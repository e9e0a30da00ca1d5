"""The search side of gradient-guided trigger search, kept free of the searcher contract.

- :func:`allowed_tokens`: the vocabulary HotFlip may propose (no special tokens, no label
  words, optionally real words only, optionally no capitalised words), each token one that
  survives decode -> re-encode on its own.
- :func:`objective_from_raw`, :func:`candidate_objectives`, :func:`objective_gradient`: the
  search's objective (the gold label's log-probability) on the raw label scores that
  :class:`miner.scoring.TriggerScorer` computes for many candidates, and its gradient w.r.t.
  the trigger embeddings. The model is called only there, in the scoring layer (the text's
  key/value cache reused across candidates, the scorer's own requests and label aggregation).
- :func:`hotflip_topk` and :func:`sample_candidates`: first-order scores ``-(E . g)`` and
  GCG-style sampling of single swaps spread over all positions.

This module imports only numpy, torch, ``miner.prompts`` / ``miner.scoring`` and the decoded-vocabulary
memo of ``miner.search._labelwords`` (itself torch and the standard library), so the GPU benchmark can
load it on a machine without the searcher contract's dependencies.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from miner.prompts import Prompt
from miner.scoring import TriggerScorer
from miner.search._labelwords import decoded_vocab

logger = logging.getLogger(__name__)


def round_trips(backend, ids: Sequence[int]) -> bool:
    """True when decoding ``ids`` and encoding the text again gives ``ids`` back."""
    ids = tuple(int(i) for i in ids)
    return backend.tokenize(backend.decode(ids)) == ids


# --------------------------------------------------------------------------- vocabulary
_TOKEN_INFO: weakref.WeakKeyDictionary[Any, tuple[list[str], np.ndarray]] = weakref.WeakKeyDictionary()


def _token_info(backend) -> tuple[list[str], np.ndarray]:
    """Decoded text of every token and whether it round-trips alone (memoised per tokenizer: ~seconds)."""
    tok = backend.tokenizer
    info = _TOKEN_INFO.get(tok)
    if info is None or len(info[0]) != backend.vocab_size:
        texts = decoded_vocab(backend)
        ok = np.array(
            [bool(t) and ids == (i,) for i, (t, ids) in enumerate(zip(texts, backend.tokenize_many(texts)))]
        )
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


def allowed_tokens(
    backend,
    prompt: Prompt,
    *,
    words_only: bool = True,
    allow_capitalized: bool = False,
    exclude: Sequence[int] = (),
) -> torch.Tensor:
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


def _gold(examples: Sequence[Any]) -> torch.Tensor:
    return torch.as_tensor([e.label for e in examples])


def objective_loss(examples: Sequence[Any], objective: str):
    """The loss a trigger gradient descends: minus the mean gold objective of ``examples``."""
    gold = _gold(examples)
    return lambda raw: -objective_from_raw(raw.float(), gold.to(raw.device), objective).mean()


def objective_gradient(
    scorer: TriggerScorer, triggers: Sequence[int], examples: Sequence[Any], objective: str
) -> tuple[torch.Tensor, float]:
    """Gradient ``[n_triggers, hidden]`` of the loss w.r.t. the trigger embeddings, and the loss."""
    return scorer.gradient(triggers, examples, objective_loss(examples, objective))


def candidate_objectives(
    scorer: TriggerScorer, candidates: Sequence[Sequence[int]], examples: Sequence[Any], objective: str
) -> np.ndarray:
    """Gold objective summed over ``examples`` for each candidate trigger tuple: ``[C]`` (the
    current trigger first, as :meth:`TriggerScorer.score` wants it)."""
    raw = scorer.score(candidates, examples)
    gold = _gold(examples).expand(raw.shape[0], -1)
    return objective_from_raw(raw.float(), gold, objective).sum(-1).numpy()


def hotflip_topk(grad: torch.Tensor, embeddings: torch.Tensor, allowed: torch.Tensor, k: int) -> torch.Tensor:
    """Top-``k`` replacement tokens per position by the first-order loss decrease ``-(E . g)``."""
    scores = -(grad.to(embeddings.device, torch.float32) @ embeddings.float().T)  # [n, V]
    scores[:, ~allowed.to(scores.device)] = -float("inf")
    k = max(1, min(k, int(allowed.sum())))
    return scores.topk(k, dim=-1).indices.cpu()


def sample_candidates(
    triggers: Sequence[int],
    topk: torch.Tensor,
    n: int,
    rng: np.random.Generator,
    backend=None,
    tries: int = 4,
) -> list[tuple[int, ...]]:
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
