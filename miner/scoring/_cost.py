"""The cost counter every searcher is charged in."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields


@dataclass
class Cost:
    forward_passes: int = 0  # model calls (a batch is one pass)
    backward_passes: int = 0  # backward calls (gradient searchers)
    sequences: int = 0  # sequences run through the model
    tokens: int = 0  # real (non-padding) tokens processed
    padded_tokens: int = 0  # tokens including padding
    seconds: float = 0.0  # time spent inside model calls
    cache_hits: int = 0  # requests answered from the cache

    def __add__(self, other: Cost) -> Cost:
        return Cost(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __sub__(self, other: Cost) -> Cost:
        return Cost(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    def copy(self) -> Cost:
        return Cost(**asdict(self))

    def to_dict(self) -> dict:
        return asdict(self)


class CostCounter:
    """Accumulates :class:`Cost`; shared by the scorer and any searcher that calls the model.

    Every model call goes through ``forward`` and every backward pass through ``backward``; both ask
    the ``guard`` first (the runner installs the job's budget there), so a call the budget cannot pay
    for raises :class:`~miner.errors.BudgetExhausted` before it runs, whoever made it.
    """

    def __init__(self, guard: Callable[[int, int], None] | None = None) -> None:
        self.total = Cost()
        self.guard = guard  # guard(forward_passes, backward_passes) raises BudgetExhausted to refuse

    def snapshot(self) -> Cost:
        return self.total.copy()

    @contextmanager
    def forward(self, sequences: int, tokens: int, padded_tokens: int, backward: bool = False):
        if self.guard is not None:
            self.guard(1, int(backward))
        start = time.perf_counter()
        try:
            yield
        finally:
            t = self.total
            t.forward_passes += 1
            t.backward_passes += int(backward)
            t.sequences += sequences
            t.tokens += tokens
            t.padded_tokens += padded_tokens
            t.seconds += time.perf_counter() - start

    @contextmanager
    def backward(self):
        """Charge one backward pass (a ``loss.backward()`` or ``torch.autograd.grad``) with its time."""
        if self.guard is not None:
            self.guard(0, 1)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.total.backward_passes += 1
            self.total.seconds += time.perf_counter() - start
