"""``blackbox`` (BBT): conformance, forward passes only, the projection, the budget."""

import numpy as np
import pytest
import torch

from miner.config import BudgetSpec
from miner.errors import ConfigError
from miner.runner import run_searcher
from miner.search.blackbox import BlackboxSearcher, projection_matrix
from miner.testing.conformance import SearcherConformance, seed_prompts


class TestBlackbox(SearcherConformance):
    @pytest.fixture
    def searcher(self):
        return BlackboxSearcher(n_tokens=3, intrinsic_dim=10, popsize=3, generations=2, eval_every=1)


@pytest.fixture(scope="module")
def causal():
    from miner.testing.tiny import tiny_causal

    return tiny_causal()


def test_forward_passes_only_and_rows(causal, conformance_data):
    s = BlackboxSearcher(n_tokens=2, intrinsic_dim=8, popsize=4, generations=4, eval_every=2)
    res = run_searcher(
        s,
        causal,
        conformance_data,
        prompts=seed_prompts(conformance_data.label_names),
        budget=BudgetSpec(max_forward_passes=200),
    )
    assert res.cost.backward_passes == 0
    assert all(p.grad is None for p in causal.model.parameters())
    soft = [e for e in res.evaluations if e.prompt.soft]
    projections = [e for e in res.evaluations if e.prompt.triggers]
    assert soft and soft[0].prompt.template.startswith("{soft:2}")
    assert len(projections) == 1 and projections[0].prompt.template.startswith("{trigger:2}")
    # 4 generations x 4 candidates on 8 training examples (1 pass each) + evaluations of 2 passes
    assert res.cost.forward_passes == 16 + 2 * len(res.evaluations)


def test_budget_in_forward_passes_stops_between_generations(causal, conformance_data):
    s = BlackboxSearcher(n_tokens=2, intrinsic_dim=8, popsize=4, generations=100, eval_every=1)
    res = run_searcher(
        s,
        causal,
        conformance_data,
        prompts=seed_prompts(conformance_data.label_names),
        budget=BudgetSpec(max_forward_passes=25),
    )
    assert res.cost.forward_passes <= 25
    assert any(e.prompt.triggers for e in res.evaluations), "the budget keeps room for the projection"


def test_projection_matrix_scale_and_seed():
    a = projection_matrix(4, 16, 100, embed_std=0.5, sigma=1.0, seed=3)
    b = projection_matrix(4, 16, 100, embed_std=0.5, sigma=1.0, seed=3)
    assert torch.equal(a, b) and a.shape == (64, 100)
    z = np.random.default_rng(0).standard_normal((100, 200))  # z ~ N(0, sigma^2) at sigma = 1
    assert (a @ torch.as_tensor(z, dtype=torch.float32)).std().item() == pytest.approx(0.5, rel=0.1)


def test_bad_parameters():
    with pytest.raises(ConfigError, match="no soft-token slot"):
        BlackboxSearcher(template="{sentence} It was {answer}")
    with pytest.raises(ConfigError, match="popsize"):
        BlackboxSearcher(popsize=1)
