"""``soft`` (prompt tuning / P-tuning): conformance, gradients, resume, NaN, projection."""

import pytest

from miner.runner import run_searcher
from miner.search.soft import SoftSearcher
from miner.testing.conformance import SearcherConformance, seed_prompts


class TestSoft(SearcherConformance):
    @pytest.fixture
    def searcher(self):
        return SoftSearcher(n_tokens=3, steps=3, eval_every=3, batch_size=4)


@pytest.fixture(scope="module")
def causal():
    from miner.testing.tiny import tiny_causal

    return tiny_causal()


def _run(searcher, backend, data, **kw):
    return run_searcher(searcher, backend, data, prompts=seed_prompts(data.label_names), **kw)


def test_trains_soft_tokens_only_and_charges_backward(causal, conformance_data):
    res = _run(
        SoftSearcher(n_tokens=2, steps=3, eval_every=3, batch_size=4, lr=0.05), causal, conformance_data
    )
    assert res.cost.backward_passes == 3
    assert all(p.grad is None and not p.requires_grad for p in causal.model.parameters())
    soft = [e for e in res.evaluations if e.prompt.soft]
    assert [e.prompt.template for e in soft] == [
        "{soft:2}{sentence} It was {answer}"
    ] * 2  # step 0 and step 3
    assert soft[0].prompt.soft != soft[1].prompt.soft  # training moved the tensor
    proj = [e for e in res.evaluations if e.prompt.triggers]
    assert len(proj) == 1 and proj[0].prompt.template == "{trigger:2}{sentence} It was {answer}"


def test_eval_init_off_skips_the_step0_row(causal, conformance_data):
    res = _run(
        SoftSearcher(
            n_tokens=2, steps=3, eval_every=3, batch_size=4, lr=0.05, eval_init=False, project=False
        ),
        causal,
        conformance_data,
    )
    soft = [e for e in res.evaluations if e.prompt.soft]
    assert len(soft) == 1  # only the trained state (step 3), no step-0 row
    assert res.cost.backward_passes == 3


def test_reparameterisation_starts_at_the_init(causal, conformance_data):
    plain = _run(
        SoftSearcher(n_tokens=2, steps=1, eval_every=1, batch_size=4, project=False), causal, conformance_data
    )
    mlp = _run(
        SoftSearcher(
            n_tokens=2, steps=1, eval_every=1, batch_size=4, project=False, reparam="mlp", reparam_hidden=8
        ),
        causal,
        conformance_data,
    )
    # the soft rows only (the runner scores the hand-written baselines first)
    plain_soft, mlp_soft = ([e for e in r.evaluations if e.prompt.soft] for r in (plain, mlp))
    assert len(plain_soft) == len(mlp_soft) == 2  # step 0 and step 1
    assert plain_soft[0].prompt.key == mlp_soft[0].prompt.key  # zero-initialised head
    assert plain_soft[1].prompt.key != mlp_soft[1].prompt.key


def test_nan_loss_stops_and_keeps_the_best(causal, conformance_data, monkeypatch, caplog):
    from miner.scoring import Scorer

    real = Scorer.label_logprobs
    calls = {"n": 0}

    def flaky(self, *a, **kw):
        calls["n"] += 1
        out = real(self, *a, **kw)
        return out * float("nan") if calls["n"] >= 3 else out

    monkeypatch.setattr(Scorer, "label_logprobs", flaky)
    with caplog.at_level("ERROR", logger="miner.search.soft"):
        res = _run(SoftSearcher(n_tokens=2, steps=10, eval_every=2, batch_size=4), causal, conformance_data)
    assert "loss became nan at step 2" in caplog.text and "keeping the best soft prompt" in caplog.text
    assert res.cost.backward_passes == 2
    soft = [e for e in res.evaluations if e.prompt.soft]
    assert len(soft) == 2  # step 0 and step 2; nothing after the NaN
    assert [e for e in res.evaluations if e.prompt.triggers], "the best soft prompt is still projected"


def _config(tmp_path, name):
    return {
        "task": {"source": "builtin", "name": "rotten_tomatoes", "max_test": 4},
        "model": {"name": "tiny"},
        "k": 4,
        "seeds": [13],
        "progress": False,
        "test_top": 1,
        "prompts": [
            {
                "template": "{sentence} It was {answer}",
                "verbalizer": {"negative": "terrible", "positive": "great"},
            }
        ],
        "searchers": [
            {
                "name": "soft",
                "params": {
                    "n_tokens": 2,
                    "steps": 6,
                    "eval_every": 2,
                    "batch_size": 4,
                    "lr": 0.05,
                    "patience": 0,
                },
            }
        ],
        "storage": f"sqlite:///{tmp_path / name}",
    }


def test_killed_run_resumes_to_the_same_result(causal, tmp_path, monkeypatch):
    from miner.leaderboard import Leaderboard
    from miner.runner import JobEvaluator, run

    ref = run(_config(tmp_path, "ref.db"), backend=causal)
    ref_keys = [e.prompt.key for e in ref.jobs[0].evaluations]

    real_call = JobEvaluator.__call__
    calls = {"n": 0}

    def killed(self, prompts, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_call(self, prompts, **kw)

    monkeypatch.setattr(JobEvaluator, "__call__", killed)
    with pytest.raises(KeyboardInterrupt):
        run(_config(tmp_path, "kill.db"), backend=causal)
    monkeypatch.setattr(JobEvaluator, "__call__", real_call)
    assert (tmp_path / "kill.db.artifacts" / "checkpoints").is_dir()
    resumed = run(_config(tmp_path, "kill.db"), backend=causal, resume=True)
    rows = Leaderboard(f"sqlite:///{tmp_path / 'kill.db'}").rows(order="time")
    assert [r.prompt_key for r in reversed(rows)] == ref_keys  # same prompts, same order, nothing twice
    assert resumed.jobs[0].best.prompt.key == ref.jobs[0].best.prompt.key
    # Killed at the step-4 evaluation: the checkpoint (written after the step-2 one) saves 2 of 6 steps.
    assert ref.jobs[0].cost.backward_passes == 6 and resumed.jobs[0].cost.backward_passes == 4


def test_bad_parameters():
    from miner.errors import ConfigError

    with pytest.raises(ConfigError, match="no soft-token slot"):
        SoftSearcher(template="{sentence} It was {answer}")
    with pytest.raises(ConfigError, match="steps"):
        SoftSearcher(steps=0)
