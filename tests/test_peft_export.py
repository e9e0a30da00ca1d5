"""Soft-prompt export: safetensors + JSON, a PEFT adapter that PEFT reloads with our scores, predict."""

import json

import pytest
import torch

from miner.artifacts import ArtifactStore
from miner.errors import MinerError
from miner.export import ExportedPrompt
from miner.leaderboard import Leaderboard
from miner.prompts import Prompt
from miner.runner import run_searcher
from miner.scoring import Scorer
from miner.search.soft import SoftSearcher
from miner.soft_export import (
    export_soft,
    is_soft_export,
    load_soft_export,
    peft_incompatibility,
    predict_soft,
)

VERB = {"negative": ["terrible", "not good"], "positive": ["great"]}  # "not good": a multi-token word


@pytest.fixture(scope="module")
def causal():
    from miner.testing.tiny import tiny_causal

    return tiny_causal()


@pytest.fixture(scope="module")
def trained(causal, conformance_data, tmp_path_factory):
    """A soft prompt trained for a few steps, stored and recorded like a real run."""
    d = tmp_path_factory.mktemp("run")
    board = Leaderboard(f"sqlite:///{d / 'lb.db'}")
    store = ArtifactStore(d / "artifacts")
    run_id = board.start_run({}, {})
    searcher = SoftSearcher(
        n_tokens=3, steps=4, eval_every=2, batch_size=4, lr=0.05, verbalizer=VERB, project=False
    )
    seed = [Prompt.create("{sentence} It was {answer}", VERB, conformance_data.label_names)]
    res = run_searcher(
        searcher, causal, conformance_data, prompts=seed, board=board, run_id=run_id, artifacts=store
    )
    row = board.best(task=conformance_data.name, model=causal.name)
    assert row.prompt["soft"].startswith("soft:") and row.prompt["template"].startswith("{soft:3}")
    return row, store, res


def _peft_label_scores(peft_model, tokenizer, desc, examples):
    """Label log-probs computed with PEFT alone, from the export's description (no miner scorer)."""
    n_virtual = desc["soft"]["shape"][0]
    out = []
    for ex in examples:
        text = desc["peft"]["input_template"].replace("{sentence}", ex.fields["sentence"].strip())
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        labels = []
        for words in desc["peft"]["answer_words"].values():
            word_scores = []
            for w in words:
                wids = tokenizer(w, add_special_tokens=False)["input_ids"]
                with torch.no_grad():
                    logits = peft_model(
                        input_ids=torch.tensor([ids + wids]),
                        attention_mask=torch.ones(1, len(ids) + len(wids), dtype=torch.long),
                    ).logits[0]
                lp = torch.log_softmax(logits.float(), -1)
                start = n_virtual + len(ids) - 1  # the position that predicts the first answer token
                word_scores.append(sum(lp[start + j, t] for j, t in enumerate(wids)))
            labels.append(torch.logsumexp(torch.stack(word_scores), 0))
        out.append(torch.stack(labels))
    return torch.stack(out)


def test_export_reload_through_peft_reproduces_scores(trained, causal, conformance_data, tmp_path):
    from peft import PeftModel

    from miner.testing.tiny import tiny_causal

    row, store, _ = trained
    se = export_soft(row, store, tmp_path / "exp", backend=causal)
    assert se.peft_dir is not None and (se.peft_dir / "adapter_config.json").is_file()
    assert (se.peft_dir / "adapter_model.safetensors").is_file()
    cfg = json.loads((se.peft_dir / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "PROMPT_TUNING" and cfg["num_virtual_tokens"] == 3 and cfg["token_dim"] == 64

    base = tiny_causal()  # a fresh copy of the same base model: PEFT wraps it
    pm = PeftModel.from_pretrained(base.model, str(se.peft_dir))
    pm.eval()
    examples = list(conformance_data.dev[:6])
    ours = Scorer(causal, progress=False, soft_resolver=store.get_tensor).score(se.prompt, examples)
    theirs = _peft_label_scores(pm, causal.tokenizer, se.description, examples)
    assert torch.allclose(torch.as_tensor(ours.raw), theirs, atol=1e-4), (ours.raw, theirs)
    assert not torch.allclose(theirs[:, 0], theirs[:, 1])  # a real comparison, not two constants


def test_json_safetensors_round_trip_and_predict(trained, causal, conformance_data, tmp_path):
    row, store, _ = trained
    export_soft(row, store, tmp_path / "exp", backend=causal)
    assert is_soft_export(tmp_path / "exp") and is_soft_export(tmp_path / "exp" / "soft_prompt.json")
    se = load_soft_export(tmp_path / "exp")
    assert torch.equal(se.tensor, store.get_tensor(row.prompt["soft"]))
    assert se.prompt.to_dict() == row.prompt
    assert (
        se.description["soft"]["nearest"]["nearest_ids"]
        and len(se.description["soft"]["nearest"]["nearest_tokens"]) == 3
    )
    # Re-scoring from the export reproduces the leaderboard's dev score exactly.
    dev = Scorer(causal, progress=False, soft_resolver=se.resolver).score(se.prompt, conformance_data.dev)
    assert dev.metrics["accuracy"] == row.dev_score
    preds = predict_soft(se, [e.fields["sentence"] for e in conformance_data.dev], backend=causal)
    assert [p["label"] for p in preds] == [conformance_data.label_names[i] for i in dev.preds]
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-6 for p in preds)


def test_other_layouts_export_without_adapter(causal, conformance_data, tmp_path):
    from miner.testing.tiny import tiny_masked

    store = ArtifactStore(tmp_path / "a")
    ref = store.put_tensor(torch.randn(2, 64) * 0.1)
    labels = conformance_data.label_names
    mid = Prompt.create("{sentence} {soft:2} It was {answer}", VERB, labels, soft=ref)
    assert "prepends" in peft_incompatibility(mid, causal)
    assert "masked" in peft_incompatibility(
        Prompt.create("{soft:2}{sentence} It was {answer}", VERB, labels, soft=ref), tiny_masked()
    )
    ex = ExportedPrompt(
        mid, "tiny", {"name": "t", "text_fields": ["sentence"], "label_names": list(labels)}, {}, {}, {}
    )
    se = export_soft(ex, store, tmp_path / "mid", backend=causal)
    assert se.peft_dir is None and not (tmp_path / "mid" / "peft").exists()
    assert "prepends" in se.description["peft"]["reason"]
    # ... but miner predict applies it exactly as the scorer does.
    texts = [e.fields["sentence"] for e in conformance_data.dev[:4]]
    direct = Scorer(causal, progress=False, soft_resolver=store.get_tensor).score(
        mid, [{"sentence": t} for t in texts]
    )
    preds = predict_soft(tmp_path / "mid", texts, backend=causal)
    assert [p["probabilities"][labels[1]] for p in preds] == pytest.approx(
        torch.softmax(torch.as_tensor(direct.scores), -1)[:, 1].tolist(), abs=1e-6
    )


def test_bad_exports_are_one_line_errors(causal, trained, tmp_path):
    with pytest.raises(MinerError, match="does not exist"):
        load_soft_export(tmp_path / "nothing")
    row, store, _ = trained
    export_soft(row, store, tmp_path / "exp", backend=causal, peft=False)
    from safetensors.torch import save_file

    save_file({"soft_prompt": torch.zeros(3, 64)}, str(tmp_path / "exp" / "soft_prompt.safetensors"))
    with pytest.raises(MinerError, match="sha256"):
        load_soft_export(tmp_path / "exp")
    discrete = ExportedPrompt(
        Prompt.create("{sentence} It was {answer}", VERB, ["negative", "positive"]),
        "tiny",
        {"name": "t", "text_fields": ["sentence"], "label_names": ["negative", "positive"]},
        {},
        {},
        {},
    )
    with pytest.raises(MinerError, match="not a soft prompt"):
        export_soft(discrete, store, tmp_path / "d", backend=causal)
