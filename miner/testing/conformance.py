"""The searcher conformance suite, packaged so every searcher is checked the same way.

Usage in a test module (one fixture, as Optuna's ``pytest_samplers`` does for samplers)::

    from miner.testing.conformance import SearcherConformance

    class TestMySearcher(SearcherConformance):
        @pytest.fixture
        def searcher(self):
            return MySearcher(steps=3)

Everything else the checks need (the tiny causal and masked LMs, a small task) comes from the
pytest plugin ``miner.testing.plugin``, which pytest loads by itself wherever miner is installed,
so nothing else has to be imported. Optionally override the ``backend``
fixture (default: a tiny causal LM, and the tiny masked LM too when the searcher supports it)
or ``budget``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from typing import Any

import pytest

from miner.config import BudgetSpec
from miner.prompts import Prompt
from miner.runner import run_searcher
from miner.scoring import Scorer
from miner.search import Searcher


def seed_prompts(label_names):
    return [
        Prompt.create(
            "{sentence} It was {answer}",
            {label_names[0]: ["terrible"], label_names[1]: ["great"]},
            label_names,
        ),
        Prompt.create(
            "Review: {sentence}\nSentiment: {answer}",
            {label_names[0]: ["negative"], label_names[1]: ["positive"]},
            label_names,
        ),
    ]


# The fixtures (conformance_data, conformance_backend) live in miner.testing.plugin, which pytest
# loads by itself (the ``pytest11`` entry point) wherever miner is installed.


class SearcherConformance:
    """Contract checks every searcher must pass."""

    budget = BudgetSpec(max_evaluations=6, max_forward_passes=40)

    @pytest.fixture
    def searcher(self) -> Searcher:  # pragma: no cover - must be overridden
        raise NotImplementedError("define a 'searcher' fixture returning the searcher under test")

    @pytest.fixture
    def backend(self, conformance_backend, searcher):
        if conformance_backend.kind not in searcher.capabilities.model_kinds:
            pytest.skip(f"{searcher.name} does not support {conformance_backend.kind} LMs")
        return conformance_backend

    def _run(self, searcher, backend, data, budget=None):
        return run_searcher(
            searcher, backend, data, prompts=seed_prompts(data.label_names), budget=budget or self.budget
        )

    def _observed(self, searcher, backend, data) -> _Observed:
        """One run at ``self.budget`` with its model calls counted, shared by the checks that only read it
        (each searcher x model kind is run once for them, not once per check)."""
        key = (type(searcher).__qualname__, repr(searcher), id(backend), id(data), repr(self.budget))
        if key not in _RUNS:
            before = _state(searcher)
            with _counting_model_calls(backend) as seen:
                res = self._run(searcher, backend, data)
            _RUNS[key] = _Observed(res, dict(seen), before, _state(searcher))
        return _RUNS[key]

    def test_is_registered_with_capabilities(self, searcher):
        from miner.search import searchers

        assert searchers.get(searcher.name) is type(searcher)
        assert searcher.summary, "searchers need a one-line summary for 'miner searchers'"
        assert searcher.capabilities.model_kinds <= {"causal", "masked"}

    def test_budget_respected(self, searcher, backend, conformance_data):
        res = self._observed(searcher, backend, conformance_data).result
        assert len(res.evaluations) >= 1, (
            "a searcher must evaluate at least one prompt within a modest budget"
        )
        assert len(res.evaluations) <= self.budget.max_evaluations
        assert res.cost.forward_passes <= self.budget.max_forward_passes

    def test_tight_budget_respected(self, searcher, backend, conformance_data):
        tight = BudgetSpec(max_forward_passes=3)
        res = self._run(searcher, backend, conformance_data, budget=tight)
        assert res.cost.forward_passes <= 3

    def test_same_seed_same_result(self, searcher, backend, conformance_data):
        a = self._observed(copy.deepcopy(searcher), backend, conformance_data).result
        b = self._run(copy.deepcopy(searcher), backend, conformance_data)
        assert [e.prompt.key for e in a.evaluations] == [e.prompt.key for e in b.evaluations]
        # rank keys are tuples: compare them flat (pytest.approx refuses nested data since pytest 9)
        flat_a = [x for e in a.evaluations for x in e.rank_key]
        flat_b = [x for e in b.evaluations for x in e.rank_key]
        assert flat_a == pytest.approx(flat_b, abs=1e-5)

    def test_only_valid_prompts(self, searcher, backend, conformance_data):
        res = self._observed(searcher, backend, conformance_data).result
        scorer = Scorer(backend, progress=False)
        for ev in res.evaluations:
            p = ev.prompt
            assert p.verbalizer.labels == conformance_data.label_names
            for m in getattr(p, "members", (p,)):  # a prompt ensemble: each member must be a valid prompt
                m.parsed.check_fields(conformance_data.text_fields)
                scorer.compile(m)  # raises on words that tokenize to nothing, bad triggers, ...
            assert Prompt.from_dict(p.to_dict(), conformance_data.label_names).key == p.key

    def test_cost_is_what_the_model_saw(self, searcher, backend, conformance_data):
        """The counter charged every model call and every backward pass, however a searcher made it."""
        obs = self._observed(searcher, backend, conformance_data)
        res, seen = obs.result, obs.model_calls
        assert res.cost.forward_passes == seen["forward"], "forward passes charged vs run"
        assert res.cost.backward_passes == seen["backward"], "backward passes charged vs run"
        recorded = sum(e.cost.forward_passes for e in res.evaluations if not e.duplicate)
        assert recorded <= res.cost.forward_passes  # rows carry the cost up to their evaluation
        if searcher.capabilities.needs_gradients:
            assert seen["backward"] > 0, "a gradient searcher that ran no backward pass"

    def test_the_runner_picks_among_its_evaluations(self, searcher, backend, conformance_data):
        """The runner's pick (docs/selection.md) is one of the job's evaluations, compared with the seed prompts."""
        res = self._observed(searcher, backend, conformance_data).result
        d = res.decision
        assert d is not None and d.pick is not None and res.best is d.pick
        assert d.pick.prompt.key in {e.prompt.key for e in res.evaluations}
        assert d.manual is not None and d.manual.baseline  # the seed prompts are the guard's baselines
        assert isinstance(type(searcher).fits_train(), bool)

    def test_no_run_state_on_self(self, searcher, backend, conformance_data):
        obs = self._observed(searcher, backend, conformance_data)
        assert obs.before == obs.after, "search() must keep its state in local variables, not on self"


@dataclasses.dataclass
class _Observed:
    result: Any
    model_calls: dict[str, int]
    before: Any
    after: Any


_RUNS: dict[tuple, _Observed] = {}


def _state(searcher) -> Any:
    return copy.deepcopy(
        dataclasses.asdict(searcher)
        if dataclasses.is_dataclass(searcher) and not isinstance(searcher, type)
        else vars(searcher)
    )


@contextlib.contextmanager
def _counting_model_calls(backend):
    """Count the model's forward calls (patched on its class: a copy in another dtype counts too) and
    the backward passes (``torch.autograd.grad`` and ``Tensor.backward``) while the block runs."""
    import torch

    seen = {"forward": 0, "backward": 0}
    model_cls = type(backend.model)
    forward, grad, backward = model_cls.forward, torch.autograd.grad, torch.Tensor.backward

    @functools.wraps(forward)  # keeps the signature: the backend reads it to name the cache argument
    def counted_forward(module, *args, **kwargs):
        seen["forward"] += 1
        return forward(module, *args, **kwargs)

    def counting(fn):
        def wrapped(*args, **kwargs):
            seen["backward"] += 1
            return fn(*args, **kwargs)

        return wrapped

    model_cls.forward = counted_forward
    torch.autograd.grad = counting(grad)
    torch.Tensor.backward = counting(backward)
    try:
        yield seen
    finally:
        model_cls.forward, torch.autograd.grad, torch.Tensor.backward = forward, grad, backward
