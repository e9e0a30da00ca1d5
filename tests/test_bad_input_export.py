"""Bad input at the export / predict / model-loading edge: one ``error:`` line, never a traceback.

A real export (a manual run with calibration and a soft-prompt run on the tiny model) is made
once for the module; each test tampers with a copy of it.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from miner.cli import main
from miner.errors import MinerError, ModelLoadError
from miner.export import ExportedPrompt, ExportFileError, export_best, load_exported
from miner.prompts import Prompt, PromptEnsemble

TASK = "rotten_tomatoes"


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_model_dir):
    """One run (manual with calibration, and soft) and its two exports; tests tamper with copies."""
    d = tmp_path_factory.mktemp("bad-export")
    url = f"sqlite:///{d / 'lb.db'}"
    cfg = {
        "task": {"source": "builtin", "name": TASK, "max_test": 8},
        "model": {"name": str(tiny_model_dir)},
        "prompts": [
            {
                "template": "{sentence} It was {answer}",
                "verbalizer": {"negative": ["terrible"], "positive": ["great"]},
            }
        ],
        "searchers": [
            {"name": "manual", "params": {"with_calibration": True}},
            {
                "name": "soft",
                "params": {"n_tokens": 2, "steps": 2, "eval_every": 2, "batch_size": 4, "project": False},
            },
        ],
        "seeds": [1],
        "k": 4,
        "storage": url,
        "test_top": 1,
        "progress": False,
    }
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(d / "config.yaml")]) == 0
    assert (
        main(["export", "--storage", url, "--task", TASK, "--searcher", "manual", "-o", str(d / "best.json")])
        == 0
    )
    assert (
        main(["export", "--storage", url, "--task", TASK, "--searcher", "soft", "-o", str(d / "soft.json")])
        == 0
    )
    assert (d / "soft" / "soft_prompt.json").is_file()
    return SimpleNamespace(
        dir=d, url=url, db=d / "lb.db", best=d / "best.json", soft=d / "soft.json", model=tiny_model_dir
    )


def _copy_best(made, tmp_path: Path, edit=None, name: str = "best.json") -> Path:
    d = json.loads(made.best.read_text())
    if edit is not None:
        edit(d)
    out = tmp_path / name
    out.write_text(json.dumps(d))
    return out


def _copy_soft(made, tmp_path: Path) -> Path:
    shutil.copy(made.soft, tmp_path / "soft.json")
    shutil.copytree(made.dir / "soft", tmp_path / "soft")
    return tmp_path / "soft.json"


def _predict(path: Path) -> list[str]:
    return ["predict", "--prompt", str(path), "--text", "A gem of a movie."]


# --------------------------------------------------------------------------- tampered export JSON
def _set(*path_and_value):
    *path, value = path_and_value

    def edit(d):
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value

    return edit


TAMPERED = {
    "task-string": (_set("task", "rotten"), "best.json: task: should be a JSON object"),
    "task-null": (_set("task", None), "best.json: task: should be a JSON object"),
    "label-names-number": (_set("task", "label_names", 3), "best.json: task.label_names: should be a list"),
    "label-names-string": (
        _set("task", "label_names", "negative"),
        "best.json: task.label_names: should be a list",
    ),
    "label-name-number": (
        _set("task", "label_names", [1, 2]),
        "best.json: task.label_names[0]: should be a string",
    ),
    "text-fields-number": (_set("task", "text_fields", 5), "best.json: task.text_fields: should be a list"),
    "text-fields-other": (_set("task", "text_fields", ["text"]), "best.json: prompt: template"),
    "triggers-string": (_set("prompt", "triggers", "abc"), "best.json: prompt.triggers: should be a list"),
    "triggers-huge-id": (_set("prompt", "triggers", [10**30]), "best.json: prompt.triggers[0]"),
    "meta-list": (_set("prompt", "meta", [1]), "best.json: prompt.meta: should be a JSON object"),
    "meta-number": (_set("prompt", "meta", 3), "best.json: prompt.meta: should be a JSON object"),
    "model-number": (_set("model", 3), "best.json: model: should be a string"),
    "model-list": (_set("model", ["a"]), "best.json: model: should be a string"),
    "word-number": (
        _set("prompt", "verbalizer", "negative", 1),
        "best.json: prompt.verbalizer.negative: should be a word",
    ),
    "word-in-list-number": (
        _set("prompt", "verbalizer", "negative", [1]),
        "best.json: prompt.verbalizer.negative[0]: should be a string",
    ),
    "word-lone-surrogate": (
        _set("prompt", "verbalizer", "negative", ["\ud800"]),
        "best.json: prompt.verbalizer.negative[0]",
    ),
    "template-lone-surrogate": (
        _set("prompt", "template", "\udc00 {sentence} It was {answer}"),
        "best.json: prompt.template",
    ),
    "calibrate-string": (
        _set("prompt", "calibrate", "false"),
        "best.json: prompt.calibrate: should be true or false",
    ),
    "calibrate-number": (
        _set("prompt", "calibrate", 0),
        "best.json: prompt.calibrate: should be true or false",
    ),
    "k-bool": (_set("task", "k", True), "best.json: task.k: should be an integer"),
    "soft-export-number": (_set("soft_export", 5), "best.json: soft_export: should be a string"),
    "soft-export-path": (_set("soft_export", "../elsewhere"), "best.json: soft_export"),
    "unknown-key": (_set("promtp", {}), "best.json: promtp: unknown key"),
    "scores-list": (_set("scores", [1]), "best.json: scores: should be a JSON object"),
    "huge-trigger-count": (
        _set("prompt", "template", "{trigger:400000000}{sentence} It was {answer}"),
        "best.json: prompt.template",
    ),
    "huge-soft-count": (
        lambda d: d["prompt"].update(template="{soft:400000000}{sentence} It was {answer}", soft="soft:abc"),
        "best.json: prompt.template",
    ),
}


# miner predict reads "soft_export" itself (miner/cli.py _soft_export_path) before load_exported does,
# and fails on these with an unexpected TypeError / RecursionError; miner.export.soft_export_dir
# is the safe reading it can switch to.
CLI_READS_FIRST = {"soft-export-number"}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_export_is_one_line_naming_the_key(case, made, tmp_path, clean_failure):
    edit, needle = TAMPERED[case]
    path = _copy_best(made, tmp_path, edit)
    with pytest.raises(ExportFileError) as info:
        load_exported(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert info.value.args[0].split(": ", 1)[1].startswith(needle.split(": ", 1)[1])
    if case not in CLI_READS_FIRST:
        clean_failure(_predict(path), needle=needle, watch=tmp_path, db=made.db)


@pytest.mark.parametrize("case", sorted(CLI_READS_FIRST))
def test_tampered_export_through_the_cli_soft_export_lookup(case, made, tmp_path, clean_failure):
    edit, needle = TAMPERED[case]
    clean_failure(_predict(_copy_best(made, tmp_path, edit)), needle=needle, watch=tmp_path, db=made.db)


def test_calibrate_false_string_is_not_true(made, tmp_path):
    path = _copy_best(made, tmp_path, _set("prompt", "calibrate", "false"))
    with pytest.raises(ExportFileError, match="calibrate"):
        load_exported(path)
    assert (
        load_exported(
            _copy_best(made, tmp_path, _set("prompt", "calibrate", False), "ok.json")
        ).prompt.calibrate
        is False
    )


def test_huge_slot_count_is_refused_before_parsing(made, tmp_path):
    """{soft:400000000}: 400 million template segments (tens of GB) were built before any check."""
    path = _copy_best(
        made,
        tmp_path,
        lambda d: d["prompt"].update(template="{soft:400000000}{sentence} It was {answer}", soft="soft:abc"),
    )
    tracemalloc.start()
    try:
        with pytest.raises(ExportFileError, match="400000000 trigger/soft slots"):
            load_exported(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


@pytest.mark.parametrize(
    "content, needle",
    [
        pytest.param("[" * 100_000, "nested too deeply"),
        ('{"format": "miner-prompt/1", "k": ' + "1" * 5000 + "}", "not valid JSON"),
        ("[1, 2]", "not a miner export"),
    ],
)
def test_unreadable_export_json_through_the_cli(content, needle, tmp_path, clean_failure, made):
    path = tmp_path / "best.json"
    path.write_text(content)
    clean_failure(_predict(path), needle=needle, watch=tmp_path, db=made.db)


@pytest.mark.parametrize(
    "content, needle",
    [
        ("[" * 100_000, "nested too deeply"),
        ('{"format": "miner-prompt/1", "k": ' + "1" * 5000 + "}", "not valid JSON"),
        ("[1, 2]", "not a miner export"),
        ("\ufeff{}", "not valid JSON"),
    ],
)
def test_unreadable_export_json(content, needle, tmp_path):
    from miner.export import soft_export_dir
    from miner.soft_export import is_soft_export, load_soft_export

    path = tmp_path / "best.json"
    path.write_text(content)
    with pytest.raises(MinerError, match=needle):
        load_exported(path)
    with pytest.raises(MinerError, match=needle):
        load_soft_export(path)
    assert soft_export_dir(path) is None and not is_soft_export(path)


def test_real_exports_still_load(made):
    """Backward compatibility: what export_best writes (discrete, calibrated, soft, ensemble) loads as before."""
    ex = load_exported(made.best)
    assert ex.prompt.to_dict() == json.loads(made.best.read_text())["prompt"]
    soft = load_exported(made.soft)
    assert soft.prompt.soft is not None and soft.prompt.parsed.n_soft == 2
    a = Prompt.create(
        "{sentence} It was {answer}", {"negative": "bad", "positive": "good"}, ["negative", "positive"]
    )
    b = Prompt.create(
        "Review: {sentence} Sentiment: {answer}",
        {"negative": ["bad"], "positive": ["good"]},
        ["negative", "positive"],
        calibrate=True,
        meta={"searcher": "optuna"},
    )
    base = json.loads(made.best.read_text())
    for prompt in (
        PromptEnsemble((a, b), meta={"ensemble_of": [1, 2]}),
        b,
        Prompt.create(
            "{trigger:2} {sentence} It was {answer}",
            {"negative": "bad", "positive": "good"},
            ["negative", "positive"],
            triggers=(17, 4),
        ),
    ):
        d = {**base, "prompt": prompt.to_dict()}
        p = made.dir / "roundtrip.json"
        p.write_text(json.dumps(d))
        back = load_exported(p)
        assert back.prompt == prompt and back.prompt.to_dict() == prompt.to_dict()
        assert back.task == base["task"] and back.provenance == base["provenance"]


# --------------------------------------------------------------------------- soft exports
def _rewrite_tensor(soft_dir: Path, tensors: dict[str, torch.Tensor] | bytes) -> None:
    from safetensors.torch import save_file

    f = soft_dir / "soft_prompt.safetensors"
    if isinstance(tensors, bytes):
        f.write_bytes(tensors)
    else:
        save_file(tensors, str(f))


def _width(made) -> int:
    return json.loads((made.dir / "soft" / "soft_prompt.json").read_text())["soft"]["shape"][1]


@pytest.mark.parametrize(
    "case, needle",
    [
        ("random-bytes", "not a readable safetensors file"),
        ("truncated", "not a readable safetensors file"),
        ("empty", "not a readable safetensors file"),
        ("wrong-name", "has no tensor 'soft_prompt'"),
        ("wrong-shape", "has shape [3, "),
        ("wrong-dtype", "is F16"),
        ("missing", "is missing"),
    ],
)
def test_garbage_soft_tensor(case, needle, made, tmp_path, clean_failure):
    path = _copy_soft(made, tmp_path)
    sd = tmp_path / "soft"
    good = (sd / "soft_prompt.safetensors").read_bytes()
    w = _width(made)
    if case == "random-bytes":
        _rewrite_tensor(sd, os.urandom(4096))
    elif case == "truncated":
        _rewrite_tensor(sd, good[: len(good) // 2])
    elif case == "empty":
        _rewrite_tensor(sd, b"")
    elif case == "wrong-name":
        _rewrite_tensor(sd, {"prompt_embeddings": torch.zeros(2, w)})
    elif case == "wrong-shape":
        _rewrite_tensor(sd, {"soft_prompt": torch.zeros(3, w)})
    elif case == "wrong-dtype":
        _rewrite_tensor(sd, {"soft_prompt": torch.zeros(2, w, dtype=torch.float16)})
    else:
        (sd / "soft_prompt.safetensors").unlink()
    from miner.soft_export import load_soft_export

    with pytest.raises(ExportFileError, match="soft_prompt.safetensors"):
        load_soft_export(sd)
    clean_failure(_predict(path), needle=needle, watch=tmp_path, db=made.db)


def _edit_desc(sd: Path, edit) -> None:
    f = sd / "soft_prompt.json"
    d = json.loads(f.read_text())
    edit(d)
    f.write_text(json.dumps(d))


@pytest.mark.parametrize(
    "case",
    [
        "task-string",
        "label-names-number",
        "text-fields-number",
        "meta-list",
        "model-number",
        "word-number",
        "calibrate-string",
        "huge-soft-count",
    ],
)
def test_tampered_soft_description(case, made, tmp_path, clean_failure):
    edit, needle = TAMPERED[case]
    path = _copy_soft(made, tmp_path)
    _edit_desc(tmp_path / "soft", edit)
    clean_failure(
        _predict(path), needle=needle.replace("best.json", "soft_prompt.json"), watch=tmp_path, db=made.db
    )


@pytest.mark.parametrize(
    "edit, needle",
    [
        (_set("soft", "shape", "2x64"), "soft.shape: should be a list"),
        (_set("soft", "shape", [400000000, 64]), "soft.shape"),
        (_set("soft", "file", "../../lb.db"), "soft.file"),
        (_set("soft", "file", 7), "soft.file: should be a string"),
        (_set("soft", "key", None), "soft.key: should be a string"),
        (_set("soft", "sha256", 12), "soft.sha256"),
        (_set("soft", "shape", [3, 64]), "soft.shape"),
        (_set("soft", []), "soft: should be a JSON object"),
        (_set("peft", "adapter", "/etc"), "peft.adapter"),
    ],
)
def test_tampered_soft_section(edit, needle, made, tmp_path, clean_failure):
    path = _copy_soft(made, tmp_path)
    _edit_desc(tmp_path / "soft", edit)
    clean_failure(_predict(path), needle=needle, watch=tmp_path, db=made.db)


def test_slots_beyond_the_models_positions_are_refused_before_scoring(made, tmp_path, clean_failure):
    """A count under the file cap but over the model's 512 positions: refused once the model is loaded."""
    from miner.artifacts import ArtifactStore
    from miner.soft_export import export_soft
    from miner.testing.tiny import tiny_causal

    be = tiny_causal()
    labels = ["negative", "positive"]
    task = {"name": TASK, "text_fields": ["sentence"], "label_names": labels}
    store = ArtifactStore(tmp_path / "store")
    n = be.max_length + 10
    ref = store.put_tensor(torch.randn(n, be.input_embeddings().shape[1]) * 0.01)
    soft = Prompt.create(
        f"{{soft:{n}}}{{sentence}} It was {{answer}}",
        {"negative": "bad", "positive": "good"},
        labels,
        soft=ref,
    )
    export_soft(
        ExportedPrompt(soft, str(made.model), task, {}, {}, {}),
        store,
        tmp_path / "long",
        backend=be,
        peft=False,
    )
    trig = Prompt.create(
        f"{{trigger:{n}}}{{sentence}} It was {{answer}}",
        {"negative": "bad", "positive": "good"},
        labels,
        triggers=(5,) * n,
    )
    (tmp_path / "trig.json").write_text(
        json.dumps(ExportedPrompt(trig, str(made.model), task, {}, {}, {}).to_dict())
    )
    for target in (tmp_path / "long", tmp_path / "trig.json"):
        clean_failure(
            _predict(target), needle=f"takes at most {be.max_length} tokens", watch=tmp_path, db=made.db
        )


# --------------------------------------------------------------------------- miner export -o
def test_export_to_a_directory(made, tmp_path, clean_failure):
    (tmp_path / "out").mkdir()
    clean_failure(
        ["export", "--storage", made.url, "--task", TASK, "-o", tmp_path / "out"],
        needle="is a directory",
        watch=tmp_path,
        db=made.db,
    )


def test_output_is_checked_before_the_leaderboard_is_opened(tmp_path, monkeypatch):
    """A bad ``out`` fails before any work: the leaderboard is not even opened (opening a new SQLite file creates it)."""
    import miner.leaderboard

    (tmp_path / "out").mkdir()
    monkeypatch.setattr(
        miner.leaderboard, "Leaderboard", lambda *a, **k: pytest.fail("the leaderboard was opened")
    )
    with pytest.raises(ExportFileError, match="is a directory"):
        export_best(f"sqlite:///{tmp_path / 'new.db'}", task=TASK, out=tmp_path / "out")
    assert not (tmp_path / "new.db").exists()


# A FIFO stands for the device files: the old code, run as root, replaced /dev/null with a regular file.
@pytest.mark.parametrize(
    "target, needle",
    [
        ("/proc/miner-test.json", "cannot write"),
        ("/proc/version", "cannot write"),
        ("FIFO", "not a regular file"),
        ("FILE/best.json", "is not a directory"),
    ],
)
def test_export_to_an_unwritable_path(target, needle, made, tmp_path, clean_failure):
    (tmp_path / "FILE").write_text("a file, not a directory")
    os.mkfifo(tmp_path / "FIFO")
    out = Path(target) if target.startswith("/") else tmp_path / target
    clean_failure(
        ["export", "--storage", made.url, "--task", TASK, "-o", out],
        needle=needle,
        watch=tmp_path,
        db=made.db,
    )


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only directories"
)
def test_export_into_a_read_only_directory(made, tmp_path, clean_failure):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        clean_failure(
            ["export", "--storage", made.url, "--task", TASK, "-o", ro / "best.json"],
            needle="cannot write",
            watch=tmp_path,
            db=made.db,
        )
    finally:
        ro.chmod(0o755)


def test_export_creates_missing_parents(made, tmp_path):
    out = tmp_path / "a" / "b" / "best.json"
    export_best(made.url, task=TASK, searcher="manual", out=out)
    assert load_exported(out).prompt == load_exported(made.best).prompt
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["best.json"]  # no temp file left


def test_soft_export_needs_an_extension_and_a_free_directory_name(made, tmp_path, clean_failure):
    clean_failure(
        ["export", "--storage", made.url, "--task", TASK, "--searcher", "soft", "-o", tmp_path / "soft"],
        needle="with an extension",
        watch=tmp_path,
        db=made.db,
    )
    (tmp_path / "soft").write_text("in the way")
    clean_failure(
        ["export", "--storage", made.url, "--task", TASK, "--searcher", "soft", "-o", tmp_path / "soft.json"],
        needle="a file of that name exists",
        watch=tmp_path,
        db=made.db,
    )


def test_failed_export_leaves_nothing_half_written(made, tmp_path, monkeypatch):
    """The old export stays whole when a new one fails midway (here: the disk fills while writing the adapter)."""
    out = tmp_path / "soft.json"
    export_best(made.url, task=TASK, searcher="soft", out=out)
    before = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("miner.search._soft_common.nearest_report", full)
    with pytest.raises(ExportFileError, match="No space left on device"):
        export_best(made.url, task=TASK, searcher="soft", out=out)
    after = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soft", "soft.json"]  # no temp directory left


def test_soft_export_replaces_an_older_one_whole(made, tmp_path):
    out = tmp_path / "soft.json"
    export_best(made.url, task=TASK, searcher="soft", out=out)
    (tmp_path / "soft" / "stale.txt").write_text("from an older export")
    export_best(made.url, task=TASK, searcher="soft", out=out)
    assert not (tmp_path / "soft" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soft", "soft.json"]
    assert main(_predict(out)) == 0


# --------------------------------------------------------------------------- model folders
def _model_copy(made, tmp_path: Path, name: str = "model") -> Path:
    d = tmp_path / name
    shutil.copytree(made.model, d)
    return d


def _pickled(d: Path) -> None:
    from safetensors.torch import load_file

    sd = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    torch.save(sd, d / "pytorch_model.bin")


MODEL_CASES = {
    "pickled-state-dict": (_pickled, "pickled weights"),
    "arbitrary-pickle": (
        lambda d: (
            (d / "model.safetensors").unlink(),
            (d / "pytorch_model.bin").write_bytes(pickle.dumps({"not": "weights"})),
        ),
        "pickled weights",
    ),
    "config-not-json": (
        lambda d: (d / "config.json").write_text("{not json"),
        "config.json is not valid JSON",
    ),
    "config-a-list": (
        lambda d: (d / "config.json").write_text("[1, 2]"),
        "config.json should hold a JSON object",
    ),
    "config-bad-value": (lambda d: _edit_json(d / "config.json", vocab_size="many"), "vocab_size"),
    "config-architectures": (lambda d: _edit_json(d / "config.json", architectures=5), "architectures"),
    "config-wrong-size": (
        lambda d: _edit_json(d / "config.json", intermediate_size=96),
        "do not fit its config.json",
    ),
    "safetensors-garbage": (
        lambda d: (d / "model.safetensors").write_bytes(os.urandom(256)),
        "safetensors weights are unreadable",
    ),
    "safetensors-truncated": (
        lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
        "safetensors weights are unreadable",
    ),
    "tokenizer-config-list": (
        lambda d: (d / "tokenizer_config.json").write_text("[1]"),
        "tokenizer_config.json",
    ),
    "tokenizer-json-empty-object": (lambda d: (d / "tokenizer.json").write_text("{}"), "tokenizer"),
    # tokenizer.json is parsed only when the tokenizer fails to load (it is megabytes)
    "tokenizer-json-not-json": (
        lambda d: (d / "tokenizer.json").write_text("{not json"),
        "tokenizer.json is not valid JSON",
    ),
    "tokenizer-json-a-list": (
        lambda d: (d / "tokenizer.json").write_text("[1, 2]"),
        "tokenizer.json should hold a JSON object",
    ),
}


def _edit_json(f: Path, **changes) -> None:
    d = json.loads(f.read_text())
    d.update(changes)
    f.write_text(json.dumps(d))


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_broken_model_folder(case, made, tmp_path, clean_failure):
    from miner.models import load_backend

    damage, needle = MODEL_CASES[case]
    d = _model_copy(made, tmp_path)
    damage(d)
    with pytest.raises(ModelLoadError, match=needle):
        load_backend(str(d))
    clean_failure(_predict(made.best) + ["--model", str(d)], needle=needle, watch=tmp_path, db=made.db)


# --------------------------------------------------------------------------- soft search checkpoints
def _soft_cfg(tmp_path: Path, model: Path) -> dict:
    return {
        "task": {"source": "builtin", "name": TASK, "max_test": 4},
        "model": {"name": str(model)},
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
                    "steps": 4,
                    "eval_every": 2,
                    "batch_size": 4,
                    "lr": 0.05,
                    "patience": 0,
                    "project": False,
                },
            }
        ],
        "storage": f"sqlite:///{tmp_path / 'lb.db'}",
    }


@pytest.fixture(scope="module")
def soft_run(tmp_path_factory, tiny_model_dir):
    """A finished soft job whose checkpoint the tests corrupt before resuming it."""
    from miner.leaderboard import Leaderboard
    from miner.runner import run
    from miner.testing.tiny import tiny_causal

    d = tmp_path_factory.mktemp("soft-ckpt")
    be = tiny_causal()
    res = run(_soft_cfg(d, tiny_model_dir), backend=be)
    ck = next((d / "lb.db.artifacts" / "checkpoints").glob("soft-*/state.pt"))
    rows = Leaderboard(f"sqlite:///{d / 'lb.db'}").rows(order="time")
    return SimpleNamespace(
        dir=d, backend=be, result=res, ckpt=ck, keys=[r.prompt_key for r in rows], model=tiny_model_dir
    )


def _corrupt(kind: str, ck: Path, store_root: Path) -> None:
    good = torch.load(ck, weights_only=True)
    if kind == "a-list":
        torch.save([1, 2, 3], ck)
    elif kind == "random-bytes":
        ck.write_bytes(os.urandom(2000))
    elif kind == "truncated":
        ck.write_bytes(ck.read_bytes()[:300])
    elif kind == "encoder-wrong-shape":
        torch.save({**good, "encoder": {"base": torch.zeros(5, 3)}}, ck)
    elif kind == "optimizer-wrong-shape":
        opt = good["optimizer"]
        opt["state"][0]["exp_avg"] = torch.zeros(7)
        torch.save({**good, "optimizer": opt}, ck)
    elif kind == "optimizer-bad-setting":
        opt = good["optimizer"]
        opt["param_groups"][0]["betas"] = "fast"
        torch.save({**good, "optimizer": opt}, ck)
    elif kind == "step-a-string":
        torch.save({**good, "step": "2"}, ck)
    elif kind == "best-of-wrong-shape":
        from miner.artifacts import ArtifactStore

        ref = ArtifactStore(store_root).put_tensor(torch.zeros(3, 5))
        torch.save({**good, "best_ref": ref}, ck)
    elif kind == "best-missing":
        torch.save({**good, "best_ref": "soft:0123456789abcdef"}, ck)


@pytest.mark.parametrize(
    "kind",
    [
        "a-list",
        "random-bytes",
        "truncated",
        "encoder-wrong-shape",
        "optimizer-wrong-shape",
        "optimizer-bad-setting",
        "step-a-string",
        "best-of-wrong-shape",
        "best-missing",
    ],
)
def test_corrupt_soft_checkpoint_warns_and_starts_over(kind, soft_run, tmp_path, caplog):
    """Training is a function of seed and step, so a fresh start re-proposes the stored rows: no new row, same best."""
    from miner.leaderboard import Leaderboard
    from miner.runner import run

    shutil.copytree(soft_run.dir, tmp_path / "run")
    ck = tmp_path / "run" / soft_run.ckpt.relative_to(soft_run.dir)
    _corrupt(kind, ck, tmp_path / "run" / "lb.db.artifacts")
    with caplog.at_level("WARNING", logger="miner"):
        res = run(_soft_cfg(tmp_path / "run", soft_run.model), backend=soft_run.backend, resume=True)
    assert "ignoring checkpoint" in caplog.text and "starting over" in caplog.text
    rows = Leaderboard(f"sqlite:///{tmp_path / 'run' / 'lb.db'}").rows(order="time")
    assert [r.prompt_key for r in rows] == soft_run.keys  # nothing new, nothing changed
    assert res.jobs[0].best.prompt.key == soft_run.result.jobs[0].best.prompt.key
