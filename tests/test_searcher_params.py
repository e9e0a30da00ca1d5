"""``soft`` and ``optuna`` declare each hyperparameter once (type, constraints, description) and check
their parameters up front: a bad value is a ``ConfigError`` on construction, at the config edge, or,
where it only shows against the task, before any job of the run writes a row (``Searcher.validate``).
"""

from __future__ import annotations

import re
import typing

import pytest

from miner.errors import ConfigError
from miner.search import parameters, searchers
from miner.search.optuna_search import OptunaSearcher
from miner.search.soft import SoftSearcher


@pytest.mark.parametrize("name", ["soft", "optuna"])
def test_every_parameter_is_described(name):
    missing = [p.name for p in parameters(searchers.get(name)) if not p.description]
    assert not missing, f"{name} parameters without a description: {missing}"


def test_sampler_and_pruner_names_are_the_ones_optuna_side_knows():
    from miner.search._optuna_study import PRUNERS, SAMPLERS
    from miner.search.optuna_search import PrunerName, SamplerName

    assert typing.get_args(SamplerName) == SAMPLERS
    assert typing.get_args(PrunerName) == PRUNERS


@pytest.mark.parametrize(
    "cls, params, needle",
    [
        (SoftSearcher, {"reparam": "gru"}, "soft.reparam"),
        (SoftSearcher, {"weight_decay": -0.1}, "soft.weight_decay"),  # AdamW refuses it at the first step
        (
            SoftSearcher,
            {"reparam": "lstm", "reparam_hidden": 255},
            "soft.reparam_hidden",
        ),  # two halves of 127
        (SoftSearcher, {"warmup": float("nan")}, "soft.warmup"),
        (OptunaSearcher, {"sampler": "grid"}, "optuna.sampler"),
        (OptunaSearcher, {"pruner": "hyperband"}, "optuna.pruner"),
        (OptunaSearcher, {"select": ["accuracy"]}, "optuna.select"),
        (OptunaSearcher, {"prefixes": []}, "optuna.prefixes"),
        (OptunaSearcher, {"pool_sizes": [2, -1]}, "optuna.pool_sizes"),
        (OptunaSearcher, {"seed": -1}, "optuna.seed"),  # Optuna's samplers take 0..2**32-1
        (OptunaSearcher, {"heartbeat_grace_s": 2}, "optuna.heartbeat_grace_s"),
        (OptunaSearcher, {"train_shares": [1.0, 0.5]}, "train_shares must increase and end at 1.0"),
        (OptunaSearcher, {"word_pattern": "[a-z"}, "word_pattern is not a valid regular expression"),
    ],
)
def test_direct_construction_with_a_bad_value_raises(cls, params, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        cls(**params)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("soft", {"steps": 0}, "searchers[1].params.steps: Input should be greater than or equal to 1"),
        (
            "soft",
            {"weight_decay": -1},
            "searchers[1].params.weight_decay: Input should be greater than or equal to 0",
        ),
        (
            "optuna",
            {"sampler": "grid"},
            "searchers[1].params.sampler: Input should be 'tpe', 'random', 'cmaes' or 'nsga2'",
        ),
        (
            "optuna",
            {"demonstrations": []},
            "searchers[1].params.demonstrations: List should have at least 1 item",
        ),
    ],
)
def test_the_config_edge_names_the_parameter(name, params, message):
    with pytest.raises(ConfigError) as err:
        searchers.build(name, params, "searchers[1].params")
    assert str(err.value).startswith(message)


def test_valid_values_stay_valid():
    SoftSearcher(reparam="lstm", reparam_hidden=2, max_grad_norm=None, warmup=0.0, patience=0, lr=1)
    OptunaSearcher(
        sampler="nsga2",
        pruner="none",
        seed=2**32 - 1,
        train_shares=[1.0],
        prefixes=[""],
        infixes=[],
        templates=["{sentence} It was {answer}"],
        demonstrations=[0, 2],
        pool_sizes=[0],
        select=["loglik"],
        ensemble_top=1,
        heartbeat_grace_s=3,
    )


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"name": "soft", "params": {"template": "{soft:2} {review} {answer}", "steps": 1}}, "review"),
        ({"name": "soft", "params": {"init": "text", "init_text": "", "steps": 1}}, "soft.init_text"),
        (
            {"name": "optuna", "params": {"label_words": {"nope": ["x"]}, "n_trials": 1}},
            "unknown label 'nope'",
        ),
        ({"name": "optuna", "params": {"vocabulary": "no-such-words.txt", "n_trials": 1}}, "vocabulary file"),
    ],
)
def test_a_bad_parameter_against_the_task_fails_the_run_before_any_row(
    params, needle, make_config, clean_failure, tmp_path
):
    """The second searcher's bad parameter fails ``miner run`` before the first searcher's jobs write rows."""
    path, _ = make_config(searchers=[{"name": "manual"}, params])
    line = clean_failure(["run", path, "--no-progress"], needle=needle, watch=tmp_path, db=tmp_path / "lb.db")
    assert "searchers[1]" in line
