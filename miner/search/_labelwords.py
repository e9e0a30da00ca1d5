"""Label words from cached answer distributions: candidate pools and a vectorized verbalizer search.

For a fixed template, one forward pass per batch gives every vocabulary word's log-probability
at the answer slot (``Scorer.distributions``). Everything here works on those tensors only:

- :func:`candidate_pool` picks, per label, words that are likely for that label's training
  examples *and* more likely there than for any other label (LM-BFF's top-k-per-class idea,
  with a contrast so that "the" or "very" do not win every class), restricted to real words;
- :func:`search_verbalizers` scores every combination of pool words (one word or a set of
  several per label) on the same examples as a batch of tensor operations, with the scorer's
  own label arithmetic (log of summed word probabilities, softmax over labels, optional
  content-free calibration), and returns the best by metric then gold log-likelihood.

No model call happens in this module, so a verbalizer costs no forward pass.
"""

from __future__ import annotations

import itertools
import math
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

_DECODED: weakref.WeakKeyDictionary[object, list[str]] = weakref.WeakKeyDictionary()


def decoded_vocab(backend) -> list[str]:
    """Every token id decoded on its own (memoised per tokenizer: ~1 s for 50k tokens)."""
    tok = backend.tokenizer
    try:
        return _DECODED[tok]
    except (KeyError, TypeError):
        pass
    ids = [[i] for i in range(backend.vocab_size)]
    fast = getattr(tok, "backend_tokenizer", None)  # a fast tokenizer's Rust side decodes a batch at once
    if fast is not None:
        out = fast.decode_batch(ids, skip_special_tokens=False)
    else:
        out = tok.batch_decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    try:
        _DECODED[tok] = out
    except TypeError:  # not weak-referenceable: just don't memoise
        pass
    return out


def word_mask(backend, pattern: str, space: bool, vocabulary: frozenset[str] | None = None) -> torch.Tensor:
    """``[V]`` bool: tokens that decode to a whole word matching ``pattern``.

    ``space`` is whether the answer slot follows a space in the template (the word then
    has to be the space-prefixed token, as BPE tokenizers see a word in running text).
    ``vocabulary``, when given, is a word list the word must also be in (a BPE token such as
    " incent" matches any letters-only pattern but is not a word; a list rules it out).
    The final tokenize round trip is checked later, on the few candidates that matter.
    """
    rx = re.compile(pattern)
    vocab = decoded_vocab(backend)
    special = set(getattr(backend.tokenizer, "all_special_ids", []) or [])
    need_space = space and backend.kind == "causal"
    hits = []
    for i, s in enumerate(vocab):
        if need_space and (not s.startswith(" ") or s.startswith("  ")):
            continue
        word = s.strip()
        if word and rx.match(word) and (vocabulary is None or word in vocabulary) and i not in special:
            hits.append(i)
    keep = torch.zeros(len(vocab), dtype=torch.bool)
    keep[torch.tensor(hits, dtype=torch.long)] = True  # one indexed write, not one per token
    return keep


@dataclass
class Pool:
    """Candidate words per label: ``columns`` index the score matrix, ``words`` are the strings."""

    words: list[list[str]]  # [label][j]
    columns: list[list[int]]  # [label][j] -> column of the word-score matrix
    scores: list[list[float]] = field(
        default_factory=list
    )  # contrast score of each auto candidate (nan: user word)

    def describe(self, top: int = 10) -> dict[str, list[str]]:
        return {str(i): ws[:top] for i, ws in enumerate(self.words)}


def candidate_pool(
    logp: torch.Tensor,
    gold: torch.Tensor,
    n_labels: int,
    allowed: torch.Tensor,
    size: int,
    likely_top: int,
    round_trip,
    vocab: Sequence[str],
    user: Sequence[Sequence[tuple[str, int]]] = (),
) -> Pool:
    """LM-BFF-style pool from answer-slot log-probs ``logp`` ``[N, V]`` of labelled examples.

    Per label: the ``likely_top`` allowed words with the highest mean log-prob on that label's
    examples, ranked by contrast (that mean minus the highest mean of any other label), the
    best ``size`` kept. A word goes to at most one label. ``round_trip(word) -> token id | None``
    rejects words that would not tokenize back to that single token. ``user`` words
    (``(word, column)`` per label) are always in their label's pool, first.
    """
    means = torch.stack(
        [
            logp[gold == c].mean(0) if bool((gold == c).any()) else torch.full((logp.shape[1],), -1e4)
            for c in range(n_labels)
        ]
    )  # [L, V]
    means = torch.where(allowed[None, :], means, torch.full_like(means, -1e9))
    taken: set[int] = set()
    words: list[list[str]] = []
    cols: list[list[int]] = []
    scores: list[list[float]] = []
    for c in range(n_labels):
        ws = [w for w, _ in (user[c] if c < len(user) else ())]
        cs = [col for _, col in (user[c] if c < len(user) else ())]
        sc = [math.nan] * len(ws)
        words.append(ws)
        cols.append(cs)
        scores.append(sc)
    user_cols = {col for cs in cols for col in cs}
    ranked = []
    for c in range(n_labels):
        top = torch.topk(means[c], min(likely_top, means.shape[1])).indices
        others = torch.cat([means[:c], means[c + 1 :]]) if n_labels > 1 else means[:0]
        contrast = means[c, top] - (others[:, top].max(0).values if len(others) else 0)
        order = torch.argsort(contrast, descending=True)
        ranked.append([(int(top[i]), float(contrast[i])) for i in order])
    # Round-robin over labels so that a word claimed by two labels goes to the stronger one first.
    pos = [0] * n_labels
    auto = [0] * n_labels
    while any(auto[c] < size and pos[c] < len(ranked[c]) for c in range(n_labels)):
        for c in range(n_labels):
            while auto[c] < size and pos[c] < len(ranked[c]):
                tid, con = ranked[c][pos[c]]
                pos[c] += 1
                if tid in taken or tid in user_cols:
                    continue
                word = vocab[tid].strip()
                if round_trip(word) != tid:
                    continue
                taken.add(tid)
                words[c].append(word)
                cols[c].append(tid)
                scores[c].append(con)
                auto[c] += 1
                break
    return Pool(words, cols, scores)


@dataclass
class VerbalizerResult:
    choice: list[tuple[int, ...]]  # per label: indices into that label's pool
    metric: float
    loglik: float
    examined: int  # verbalizers scored


def _label_sets(pool_cols: Sequence[int], n_words: int, W: torch.Tensor, Wcf: torch.Tensor | None):
    """All ``n_words``-subsets of one label's pool: their label scores ``[S, N]`` (and ``[S, C]``)."""
    n = min(n_words, len(pool_cols))
    subsets = list(itertools.combinations(range(len(pool_cols)), n))
    idx = torch.as_tensor([[pool_cols[j] for j in s] for s in subsets], dtype=torch.long)  # [S, n]
    raw = torch.logsumexp(W[:, idx], dim=-1).T  # [S, N]
    raw_cf = torch.logsumexp(Wcf[:, idx], dim=-1).T if Wcf is not None else None
    return subsets, raw, raw_cf


def _evaluate(raw: torch.Tensor, raw_cf: torch.Tensor | None, gold: torch.Tensor, metric: str):
    """Metric and gold log-likelihood of a batch of verbalizers.

    ``raw`` ``[B, L, N]`` (log summed word probability per label), ``raw_cf`` ``[B, L, C]``.
    Same arithmetic as the scorer: log-softmax over labels, then calibration.
    """
    scores = torch.log_softmax(raw, dim=1)
    if raw_cf is not None:
        p_cf = torch.softmax(raw_cf, dim=1).mean(-1, keepdim=True)  # [B, L, 1]
        scores = torch.log_softmax(scores - torch.log(p_cf), dim=1)
    n_labels = raw.shape[1]
    gold_scores = scores.gather(1, gold.view(1, 1, -1).expand(scores.shape[0], 1, -1)).squeeze(1)
    loglik = gold_scores.mean(-1)
    pred = scores.argmax(1)  # [B, N]
    hit = pred == gold.view(1, -1)
    if metric == "macro_f1":
        f1s = []
        for k in range(n_labels):
            pk, gk = pred == k, (gold == k).view(1, -1)
            tp = (pk & gk).sum(-1).double()
            denom = 2 * tp + (pk & ~gk).sum(-1) + (~pk & gk).sum(-1)
            f1s.append(torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp)))
        value = torch.stack(f1s).mean(0)
    else:
        value = hit.double().mean(-1)
    return value, loglik.double()


def search_verbalizers(
    W: torch.Tensor,
    gold: torch.Tensor,
    pool: Pool,
    n_words: int,
    *,
    Wcf: torch.Tensor | None = None,
    metric: str = "accuracy",
    select: str = "metric",
    max_verbalizers: int = 200_000,
    chunk_elems: int = 4_000_000,
) -> VerbalizerResult:
    """The best verbalizer with ``n_words`` words per label from ``pool``.

    ``W`` ``[N, M]``: log-prob of each pool column for each example; ``Wcf`` ``[C, M]``: the same
    for the content-free inputs (calibration), or None. ``select`` ranks by the metric then the
    gold log-likelihood ("metric") or by the log-likelihood alone ("loglik", smoother on small
    data). Exhaustive when the number of combinations is at most ``max_verbalizers``;
    otherwise coordinate ascent over labels (each step still vectorized over one label's sets).
    """
    W = W.float()
    Wcf = Wcf.float() if Wcf is not None else None
    gold = gold.long()
    sets = [_label_sets(cols, n_words, W, Wcf) for cols in pool.columns]
    sizes = [len(s[0]) for s in sets]
    total = math.prod(sizes)

    def key(value: torch.Tensor, loglik: torch.Tensor) -> torch.Tensor:
        if select == "loglik":
            return loglik
        # Lexicographic (metric, loglik): metric steps are >= 1/N >> the squashed loglik term.
        return value * 1e3 + torch.exp(loglik.clamp(max=0))

    examined = 0
    if total <= max_verbalizers:
        *head, last = sets
        last_raw, last_cf = last[1], last[2]  # [B, N], [B, C]
        B = sizes[-1]
        # Every assignment of the other labels' word sets, as an index grid [G, L-1].
        grid = (
            torch.cartesian_prod(*[torch.arange(n) for n in sizes[:-1]])
            if len(head) > 1
            else (torch.arange(sizes[0])[:, None] if head else torch.zeros(1, 0, dtype=torch.long))
        )
        per = max(1, chunk_elems // max(1, B * W.shape[0] * len(sets)))
        best: tuple[float, tuple[int, ...] | None, float | None, float | None] = (-math.inf, None, None, None)
        for start in range(0, grid.shape[0], per):
            part = grid[start : start + per]
            a = part.shape[0]
            raw = torch.stack(
                [sets[l][1][part[:, l]][:, None, :].expand(a, B, -1) for l in range(len(head))]
                + [last_raw[None].expand(a, -1, -1)],
                dim=2,
            ).reshape(a * B, len(sets), -1)
            raw_cf = None
            if Wcf is not None:
                raw_cf = torch.stack(
                    [sets[l][2][part[:, l]][:, None, :].expand(a, B, -1) for l in range(len(head))]
                    + [last_cf[None].expand(a, -1, -1)],
                    dim=2,
                ).reshape(a * B, len(sets), -1)
            value, loglik = _evaluate(raw, raw_cf, gold, metric)
            examined += raw.shape[0]
            k = key(value, loglik)
            i = int(torch.argmax(k))
            if float(k[i]) > best[0]:
                h = tuple(int(x) for x in part[i // B])
                best = (float(k[i]), h + (i % B,), float(value[i]), float(loglik[i]))
        _, combo, value, loglik = best
        # The grid has at least one row, so the first chunk sets ``best`` (short of NaN keys).
        assert combo is not None and value is not None and loglik is not None
    else:
        combo, value, loglik, examined = _coordinate_ascent(sets, sizes, gold, metric, key)
    choice = [sets[l][0][j] for l, j in enumerate(combo)]
    return VerbalizerResult(choice, value, loglik, examined)


def _coordinate_ascent(sets, sizes, gold, metric, key, rounds: int = 4):
    combo = [0] * len(sets)  # each pool starts with its strongest word(s)
    examined = 0
    value = loglik = float("nan")
    for _ in range(rounds):
        changed = False
        for l in range(len(sets)):
            raws = [
                sets[m][1][combo[m]][None].expand(sizes[l], -1) if m != l else sets[l][1]
                for m in range(len(sets))
            ]
            raw = torch.stack(raws, dim=1)
            raw_cf = None
            if sets[0][2] is not None:
                cfs = [
                    sets[m][2][combo[m]][None].expand(sizes[l], -1) if m != l else sets[l][2]
                    for m in range(len(sets))
                ]
                raw_cf = torch.stack(cfs, dim=1)
            v, ll = _evaluate(raw, raw_cf, gold, metric)
            examined += sizes[l]
            i = int(torch.argmax(key(v, ll)))
            value, loglik = float(v[i]), float(ll[i])
            if i != combo[l]:
                combo[l], changed = i, True
        if not changed:
            break
    return tuple(combo), value, loglik, examined
