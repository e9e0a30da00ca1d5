"""Loading a frozen backend by hub id, local path or the default-model alias."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from miner.errors import ModelLoadError
from miner.models._backend import Backend, ModelKind, pick_device, pick_dtype

logger = logging.getLogger(__name__)

_MASKED_HINTS = ("MaskedLM", "ForMaskedLM")
_CAUSAL_HINTS = ("CausalLM", "LMHeadModel")


def _resolve(name: str) -> str:
    from miner.models._default import default_model_dir, is_default_model

    if is_default_model(name):
        return str(default_model_dir())
    return name


# Weight files that are pickles: unpickling can run code, so a folder holding only these is refused.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# The JSON files transformers reads from a model folder; it indexes into them without checking
# that they are objects, so a list or a string there surfaces as an arbitrary exception.
_JSON_FILES = (
    "config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "generation_config.json",
)
_LAZY_JSON = "tokenizer.json"

try:  # transformers 5 validates configs with huggingface_hub's strict dataclasses
    from huggingface_hub.errors import StrictDataclassError

    _CONFIG_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, StrictDataclassError)
except ImportError:  # pragma: no cover - older huggingface_hub
    _CONFIG_ERRORS = (OSError, ValueError)
# The tokenizer loaders read their JSON files without validating them: a malformed one
# (an object without "added_tokens", a number for a class name) fails in these ways.
_TOKENIZER_ERRORS: tuple[type[BaseException], ...] = (*_CONFIG_ERRORS, KeyError, TypeError, AttributeError)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    # a strict-dataclass error's first line only names the validator; the reason is on the next
    text = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
    return text if len(text) <= 300 else text[:297] + "..."


def _check_json_file(folder: Path, fname: str, name: str) -> None:
    f = folder / fname
    if not f.is_file():
        return
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or not UTF-8
        raise ModelLoadError(f"model {name!r}: {fname} is not valid JSON ({_first_line(exc)})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(
            f"model {name!r}: {fname} should hold a JSON object, not a {type(data).__name__}"
        )


def _check_local_folder(folder: Path, name: str) -> None:
    """Refuse what transformers would fail on with a traceback, or load unsafely: pickled weights, broken JSON.

    ``tokenizer.json`` (megabytes: parsing it costs more than loading a small model) is checked only when
    the tokenizer fails to load, to say why."""
    for fname in _JSON_FILES:
        if fname != _LAZY_JSON:
            _check_json_file(folder, fname, name)
    files = [f.name for f in folder.iterdir() if f.is_file()]
    pickles = sorted(f for f in files if f.endswith(_PICKLE_SUFFIXES))
    if pickles and not any(f.endswith(".safetensors") for f in files):
        raise ModelLoadError(
            f"model {name!r} has pickled weights ({pickles[0]}), which miner refuses to load (unpickling can run code); "
            "convert them to safetensors (load the model in a trusted environment and save_pretrained() it)"
        )


def _infer_kind(config, name: str) -> ModelKind:
    archs = getattr(config, "architectures", None) or []
    if not isinstance(archs, (list, tuple)) or not all(isinstance(a, str) for a in archs):
        raise ModelLoadError(
            f"model {name!r}: config.json's 'architectures' should be a list of class names, got {archs!r}"
        )
    if any(h in a for a in archs for h in _MASKED_HINTS):
        return "masked"
    if any(h in a for a in archs for h in _CAUSAL_HINTS):
        return "causal"
    if getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(
            f"model {name!r} is an encoder-decoder model; miner scores causal and masked LMs"
        )
    model_type = getattr(config, "model_type", "")
    if model_type in {
        "bert",
        "roberta",
        "distilbert",
        "albert",
        "electra",
        "deberta",
        "deberta-v2",
        "xlm-roberta",
        "modernbert",
    }:
        return "masked"
    return "causal"


def load_backend(
    name: str,
    *,
    kind: str = "auto",
    device: str = "auto",
    dtype: str = "auto",
    max_length: int | None = None,
) -> Backend:
    """Load a frozen model and its tokenizer.

    ``name`` is the default-model alias (``smollm2``), a local directory, or a Hugging Face
    hub id (which must already be in the local cache on an offline machine).
    """
    try:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover
        raise ModelLoadError(f"transformers is not installed: {exc}") from exc

    from safetensors import SafetensorError

    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise ModelLoadError(f"model name {name!r} is not a model id or path")
    path = _resolve(name)
    try:
        is_local = Path(path).exists()
    except OSError as exc:  # e.g. a name too long for a path
        raise ModelLoadError(f"model {name[:80]!r} is not a usable path: {exc.strerror or exc}") from None
    if not is_local and (name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1):
        raise ModelLoadError(f"model path {name!r} does not exist")
    if is_local and Path(path).is_dir():
        _check_local_folder(Path(path), name)
    where = "local directory" if is_local else "Hugging Face hub (offline, or not in the local cache)"
    try:
        config = AutoConfig.from_pretrained(path)
    except _CONFIG_ERRORS as exc:
        raise ModelLoadError(f"cannot load model {name!r} from the {where}: {_first_line(exc)}") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        if is_local and Path(path).is_dir():
            _check_json_file(Path(path), _LAZY_JSON, name)  # the Rust reader's errors are plain Exceptions
        if not isinstance(exc, _TOKENIZER_ERRORS):
            raise
        raise ModelLoadError(
            f"cannot load the tokenizer of model {name!r} from the {where}: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from exc

    resolved_kind: ModelKind = _infer_kind(config, name) if kind == "auto" else kind  # type: ignore[assignment]
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    cls = AutoModelForCausalLM if resolved_kind == "causal" else AutoModelForMaskedLM
    try:
        # use_safetensors: never fall back to unpickling a .bin (a hub repo's or a folder's)
        model = cls.from_pretrained(path, dtype=dt, use_safetensors=True)
    except torch.OutOfMemoryError:
        raise
    except SafetensorError as exc:
        raise ModelLoadError(
            f"cannot load model {name!r}: its safetensors weights are unreadable ({_first_line(exc)})"
        ) from exc
    except RuntimeError as exc:
        # transformers' refusal of weights whose shapes differ from what config.json describes
        raise ModelLoadError(
            f"cannot load model {name!r} as a {resolved_kind} LM: its weights do not fit its config.json "
            f"({_first_line(exc)})"
        ) from exc
    except _CONFIG_ERRORS as exc:
        raise ModelLoadError(
            f"cannot load model {name!r} as a {resolved_kind} LM: {_first_line(exc)}"
        ) from exc
    # transformers wraps ``to`` with functools.wraps(nn.Module.to), so mypy sees an unbound signature.
    model.to(dev)  # type: ignore[arg-type]
    logger.info("loaded %s (%s LM) on %s in %s", name, resolved_kind, dev, dt)
    return Backend(model, tokenizer, resolved_kind, name=name, max_length=max_length)
