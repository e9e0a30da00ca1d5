"""Two trained baselines of ``miner bench``: a linear probe and PEFT prompt tuning.

- :func:`linear_probe`: logistic regression on the frozen model's last-layer hidden state at the
  answer position of a template (the AutoPrompt paper's reference point). C is chosen by stratified
  cross-validation on the training examples; the features are standardised inside each fold.
- :func:`peft_prompt_tuning`: soft prompt tuning through the ``peft`` library
  (``PromptTuningConfig``), trained for as many steps as a budget in forward equivalents pays for.
  Its recipe is ``benchmarks/bench_soft_vs_peft.py``'s: causal-LM loss on the gold answer's first
  token, right padding, AdamW with the soft searcher's learning rate, linear warm-up and decay, and
  gradient clipping; the virtual tokens start from the embeddings of the template's own text.

Both read the template the way the scorer does (``miner.scoring._encode``): the answer position is
the last token before ``{answer}`` for a causal LM (the position whose next-token distribution the
scorer reads) and the mask token for a masked LM.
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from miner.errors import MinerError, PromptError
from miner.models import Backend
from miner.prompts import Literal, Prompt, PromptEnsemble
from miner.scoring import CompiledPrompt, CostCounter, answer_states, compile_prompt, encode
from miner.tasks import Example

# The C values searched (LogisticRegressionCV's default grid: 10 values from 1e-4 to 1e4).
C_GRID = tuple(float(c) for c in np.logspace(-4, 4, 10))
# The soft searcher's default text initialisation, used when a template has no text of its own.
FALLBACK_INIT_TEXT = "Read the text and choose the best answer."


def _correct(preds: Sequence[int], gold: Sequence[int]) -> str:
    return "".join("1" if p == g else "0" for p, g in zip(preds, gold))


@dataclass(frozen=True)
class ProbeResult:
    preds: tuple[int, ...]  # predicted label per test example, in test order
    gold: tuple[int, ...]
    accuracy: float
    C: float  # the inverse regularisation strength chosen by cross-validation
    n_features: int  # the model's hidden size
    n_folds: int
    forward_passes: int  # batches run to read the features (train and test)
    seconds: float  # features, fit and prediction

    @property
    def correct(self) -> str:
        """Per test example ``1`` (right) or ``0`` (wrong), in test order."""
        return _correct(self.preds, self.gold)


@dataclass(frozen=True)
class PeftResult:
    preds: tuple[int, ...]
    gold: tuple[int, ...]
    accuracy: float
    dev_accuracy: float | None  # None without dev examples
    steps: int  # optimiser steps the budget paid for
    forward_passes: int  # charged: one per step and one per dev batch
    backward_passes: int  # one per step
    forward_equivalents: float  # forward_passes + backward_cost * backward_passes (<= the budget)
    seconds: float  # training, dev and test scoring

    @property
    def correct(self) -> str:
        """Per test example ``1`` (right) or ``0`` (wrong), in test order."""
        return _correct(self.preds, self.gold)


# ---------------------------------------------------------------------------- shared


def _compile(backend: Backend, prompt: Prompt, what: str) -> CompiledPrompt:
    if isinstance(prompt, PromptEnsemble) or not isinstance(prompt, Prompt):
        raise PromptError(f"{what} needs one discrete prompt, got {type(prompt).__name__}")
    if prompt.parsed.n_soft or prompt.soft is not None:
        raise PromptError(f"{what} needs a discrete template; {prompt.template!r} has soft tokens")
    return compile_prompt(prompt, backend)


def _check_examples(cp: CompiledPrompt, examples: Sequence[Example], name: str, what: str) -> None:
    if not examples:
        raise MinerError(f"{what}: no {name} examples")
    for ex in examples:
        missing = [f for f in cp.template.fields if f not in ex.fields]
        if missing:
            raise PromptError(
                f"{what}: template {cp.prompt.template!r} uses field {{{missing[0]}}} but the {name} "
                f"examples have fields {sorted(ex.fields)}"
            )


def _label_ids(examples: Sequence[Example], n_labels: int, name: str, what: str) -> np.ndarray:
    gold = np.asarray([int(e.label) for e in examples], dtype=int)
    bad = [int(g) for g in gold if not 0 <= g < n_labels]
    if bad:
        raise MinerError(f"{what}: {name} label {bad[0]} is outside the prompt's {n_labels} labels")
    return gold


# ---------------------------------------------------------------------------- linear probe


def answer_features(
    backend: Backend,
    prompt: Prompt,
    examples: Sequence[Example],
    *,
    batch_size: int = 16,
    counter: CostCounter | None = None,
) -> tuple[np.ndarray, int]:
    """The last-layer hidden state ``[N, hidden]`` (float64) at the answer position of ``prompt`` for
    each example, and the forward passes spent (one per batch, each charged to ``counter`` if given).

    Causal LM: the last token before ``{answer}`` (left padding, explicit position ids, as the scorer
    pads). Masked LM: the single mask token put in the answer slot.
    """
    cp = _compile(backend, prompt, "linear probe")
    return answer_states(backend, cp, examples, batch_size, counter)


def linear_probe(
    backend: Backend,
    prompt: Prompt,
    train: Sequence[Example],
    test: Sequence[Example],
    *,
    seed: int,
    batch_size: int = 16,
    counter: CostCounter | None = None,
) -> ProbeResult:
    """Logistic regression on the frozen model's answer-position features (:func:`answer_features`).

    Fitted on ``train`` (the bench passes train and dev together): a scikit-learn pipeline of
    ``StandardScaler`` and ``LogisticRegression``, its C chosen from :data:`C_GRID` by log loss over
    stratified folds (``min(4, smallest class count)`` folds, shuffled with ``seed``), then refitted
    on all of ``train``; ``test`` is predicted. Raises :class:`MinerError` when some label has fewer
    than two training examples (no stratified cross-validation is possible) or only one label is
    present. Every feature batch is one forward pass, charged to ``counter`` if given.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    what = "linear probe"
    if batch_size < 1:
        raise MinerError(f"{what}: batch_size must be at least 1, got {batch_size}")
    start = time.perf_counter()
    cp = _compile(backend, prompt, what)
    _check_examples(cp, train, "training", what)
    _check_examples(cp, test, "test", what)
    n_labels = len(prompt.verbalizer.labels)
    y = _label_ids(train, n_labels, "training", what)
    gold = _label_ids(test, n_labels, "test", what)
    counts = {int(c): int((y == c).sum()) for c in np.unique(y)}
    if len(counts) < 2:
        raise MinerError(f"{what}: the training examples have only one label ({next(iter(counts))})")
    smallest = min(counts, key=lambda c: (counts[c], c))
    if counts[smallest] < 2:
        raise MinerError(
            f"{what}: label {prompt.verbalizer.labels[smallest]!r} has {counts[smallest]} training example; "
            "cross-validating C needs at least 2 per label"
        )
    n_folds = min(4, counts[smallest])
    x_train, p1 = answer_states(backend, cp, train, batch_size, counter)
    x_test, p2 = answer_states(backend, cp, test, batch_size, counter)
    pipe = Pipeline(
        [("scale", StandardScaler()), ("logreg", LogisticRegression(max_iter=5000, random_state=seed))]
    )
    search = GridSearchCV(
        pipe,
        {"logreg__C": list(C_GRID)},
        cv=StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed),
        scoring="neg_log_loss",
        refit=True,
        n_jobs=None,
    )
    search.fit(x_train, y)
    preds = tuple(int(p) for p in search.predict(x_test))
    return ProbeResult(
        preds=preds,
        gold=tuple(int(g) for g in gold),
        accuracy=float(np.mean(np.asarray(preds) == gold)),
        C=float(search.best_params_["logreg__C"]),
        n_features=int(x_train.shape[1]),
        n_folds=n_folds,
        forward_passes=p1 + p2,
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------- PEFT prompt tuning


def peft_available() -> bool:
    """Whether the ``peft`` library can be imported (the PEFT baseline is skipped without it)."""
    return importlib.util.find_spec("peft") is not None


def template_init_text(prompt: Prompt) -> str:
    """The template's own text (its literal parts, whitespace collapsed), the soft prompt's starting
    point; the soft searcher's default init text when the template has none."""
    text = " ".join("".join(s.text for s in prompt.parsed.segments if isinstance(s, Literal)).split()).strip()
    return text or FALLBACK_INIT_TEXT


def peft_steps(budget_forward_equivalents: float, backward_cost: float, dev_passes: int) -> int:
    """Optimiser steps a budget pays for: ``floor((budget - dev_passes) / (1 + backward_cost))``."""
    return int(math.floor((budget_forward_equivalents - dev_passes) / (1.0 + backward_cost) + 1e-9))


def peft_prompt_tuning(
    backend: Backend,
    prompt: Prompt,
    train: Sequence[Example],
    dev: Sequence[Example],
    test: Sequence[Example],
    *,
    budget_forward_equivalents: float,
    backward_cost: float,
    seed: int,
    n_tokens: int = 8,
    lr: float = 1e-2,
    batch_size: int = 8,
) -> PeftResult:
    """PEFT's prompt tuning (``PromptTuningConfig``, ``n_tokens`` virtual tokens before the input) on
    ``prompt``'s template, trained on ``train`` for as many steps as the budget pays for.

    Cost: a training step (one forward and one backward pass on a batch of ``batch_size``) costs
    ``1 + backward_cost`` forward equivalents; scoring ``dev`` once at the end costs one forward per
    batch of ``batch_size`` and is charged too, so ``steps = floor((budget - dev_passes) /
    (1 + backward_cost))`` (:class:`MinerError` "budget too small" when that is below 1). The final
    scoring of ``test`` is not charged to the budget (as the bench's test scoring of every pick is not).

    Recipe (``benchmarks/bench_soft_vs_peft.py``): causal-LM loss on the first token of the gold
    label's first answer word, right padding (only the answer positions go through the LM head, which
    gives the loss PEFT's ``labels`` would; text after ``{answer}`` is not seen); AdamW at ``lr`` (the soft searcher's default), 10%
    linear warm-up then linear decay, gradient norm clipped at 1.0, batches in the soft searcher's
    seeded order; the virtual tokens start from the embeddings of the template's own text
    (:func:`template_init_text`, repeated or cut to ``n_tokens``, as PEFT's TEXT init does). The
    frozen model stays in eval mode (no dropout) and the global RNG is left as it was.

    Prediction: per example, the label whose answer words' first tokens get the most probability at
    the answer position (the scorer's single-token rule; a label's words are summed; a multi-token
    word counts by its first token only). PEFT wraps a model in place, so it wraps a deep copy of
    ``backend.model``, dropped afterwards: the caller's backend is untouched. Causal LMs only.
    """
    what = "peft prompt tuning baseline"
    if not peft_available():
        raise MinerError(f"{what} needs the peft library: pip install 'miner[peft]' (or pip install peft)")
    if backend.kind != "causal":
        raise MinerError(f"{what}: causal LMs only")
    for name, value, low in (("n_tokens", n_tokens, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise MinerError(f"{what}: {name} must be an integer of at least {low}, got {value!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise MinerError(f"{what}: lr must be a positive number, got {lr!r}")
    if not (math.isfinite(backward_cost) and backward_cost >= 0):
        raise MinerError(f"{what}: backward_cost must be a number >= 0, got {backward_cost!r}")
    if not math.isfinite(budget_forward_equivalents):
        raise MinerError(f"{what}: budget must be a finite number, got {budget_forward_equivalents!r}")
    start = time.perf_counter()
    cp = _compile(backend, prompt, what)
    _check_examples(cp, train, "training", what)
    _check_examples(cp, test, "test", what)
    if dev:
        _check_examples(cp, dev, "dev", what)
    n_labels = len(prompt.verbalizer.labels)
    y = _label_ids(train, n_labels, "training", what)
    gold = _label_ids(test, n_labels, "test", what)
    dev_gold = _label_ids(dev, n_labels, "dev", what) if dev else None
    dev_passes = math.ceil(len(dev) / batch_size)
    steps = peft_steps(budget_forward_equivalents, backward_cost, dev_passes)
    if steps < 1:
        raise MinerError(
            f"{what}: budget too small: {budget_forward_equivalents:g} forward equivalents pay for no training "
            f"step (a step costs {1 + backward_cost:g}, dev scoring {dev_passes})"
        )

    first_tokens = [sorted({w[0] for w in words}) for words in cp.word_ids]  # per label
    target = [cp.word_ids[label][0][0] for label in range(n_labels)]
    prefixes = {
        name: [encode(cp, backend, ex.fields).prefix for ex in exs]
        for name, exs in (("train", train), ("dev", dev), ("test", test))
    }
    devices = [backend.device.index or 0] if backend.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            dev_preds, preds = _train_and_predict(
                backend,
                template_init_text(prompt),
                [(prefixes["train"][i], target[y[i]]) for i in range(len(train))],
                (prefixes["dev"], prefixes["test"]),
                first_tokens,
                steps=steps,
                n_tokens=n_tokens,
                lr=lr,
                batch_size=batch_size,
                seed=seed,
            )
    finally:
        # PEFT wrapped a copy of the model in place; its modules hold reference cycles: free it now.
        gc.collect()
        if backend.device.type == "cuda":
            torch.cuda.empty_cache()
    dev_acc = float(np.mean(np.asarray(dev_preds) == dev_gold)) if dev_gold is not None else None
    forward_passes = steps + dev_passes
    return PeftResult(
        preds=tuple(preds),
        gold=tuple(int(g) for g in gold),
        accuracy=float(np.mean(np.asarray(preds) == gold)),
        dev_accuracy=dev_acc,
        steps=steps,
        forward_passes=forward_passes,
        backward_passes=steps,
        forward_equivalents=forward_passes + backward_cost * steps,
        seconds=time.perf_counter() - start,
    )


def _train_and_predict(
    backend: Backend,
    init_text: str,
    train_rows: Sequence[tuple[tuple[int, ...], int]],
    evaluate: Sequence[Sequence[tuple[int, ...]]],
    first_tokens: Sequence[Sequence[int]],
    *,
    steps: int,
    n_tokens: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> list[list[int]]:
    """Train PEFT's virtual tokens on a deep copy of the model (``train_rows``: a prefix and the token
    that should follow it) and return the predictions for each prefix list of ``evaluate``; the copy
    is dropped on return."""
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    from miner.search.soft import batch_indices, lr_factor

    init_ids = list(backend.tokenize(init_text))
    init_ids = (init_ids * math.ceil(n_tokens / len(init_ids)))[:n_tokens]
    init = backend.input_embeddings().detach()[torch.tensor(init_ids, device=backend.device)].float()
    cfg = PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=n_tokens, prompt_tuning_init=PromptTuningInit.RANDOM
    )
    pm = get_peft_model(copy.deepcopy(backend.model), cfg)
    encoder: Any = pm.prompt_encoder["default"]
    weight: torch.Tensor = encoder.embedding.weight  # [n_tokens, hidden]
    with torch.no_grad():
        weight.copy_(init.to(weight.dtype))
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    pm.eval()  # the model is frozen: no dropout; only the virtual tokens train
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * lr_factor(step, steps, 0.1, "linear")
        rows = [train_rows[i] for i in batch_indices(step, len(train_rows), batch_size, seed)]
        logits = _answer_logits(pm, backend, [r[0] for r in rows], n_tokens)
        # the causal-LM loss of the answer token (PEFT's labels=-100 everywhere else give the same)
        loss = torch.nn.functional.cross_entropy(
            logits, torch.tensor([r[1] for r in rows], device=logits.device)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    preds: list[list[int]] = []
    with torch.no_grad():
        for prefixes in evaluate:
            out: list[int] = []
            for start in range(0, len(prefixes), batch_size):
                lp = torch.log_softmax(
                    _answer_logits(pm, backend, prefixes[start : start + batch_size], n_tokens), -1
                )
                scores = torch.stack(
                    [torch.logsumexp(lp[:, torch.tensor(t, device=lp.device)], -1) for t in first_tokens], -1
                )
                out += [int(p) for p in scores.argmax(-1).cpu()]
            preds.append(out)
    return preds


def _answer_logits(pm, backend: Backend, seqs: Sequence[tuple[int, ...]], n_virtual: int) -> torch.Tensor:
    """Float logits ``[B, V]`` at each row's answer position (after the virtual tokens and the row's own
    tokens; right padding, as PEFT's prompt tuning expects). Only those positions go through the LM head
    (``logits_to_keep`` as indices): the head over every position was most of a step's time."""
    pad, device = backend.pad_id, backend.device
    width = max(map(len, seqs))
    ids = torch.tensor([list(s) + [pad] * (width - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
    at = [n_virtual + len(s) - 1 for s in seqs]
    keep = sorted(set(at))
    logits = pm(input_ids=ids, attention_mask=mask, logits_to_keep=torch.tensor(keep, device=device)).logits
    cols = torch.tensor([keep.index(a) for a in at], device=logits.device)
    return logits[torch.arange(len(seqs), device=logits.device), cols].float()
