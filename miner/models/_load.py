"""Loading a frozen backend by hub id, local path or the default-model alias."""

from __future__ import annotations

import logging
import os
from pathlib import Path

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


def _infer_kind(config, name: str) -> ModelKind:
    archs = getattr(config, "architectures", None) or []
    if any(h in a for a in archs for h in _MASKED_HINTS):
        return "masked"
    if any(h in a for a in archs for h in _CAUSAL_HINTS):
        return "causal"
    if getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(f"model {name!r} is an encoder-decoder model; miner scores causal and masked LMs")
    model_type = getattr(config, "model_type", "")
    if model_type in {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta", "modernbert"}:
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

    path = _resolve(name)
    is_local = Path(path).exists()
    if not is_local and (name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1):
        raise ModelLoadError(f"model path {name!r} does not exist")
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "local directory" if is_local else "Hugging Face hub (offline, or not in the local cache)"
        raise ModelLoadError(f"cannot load model {name!r} from the {where}: {first}") from exc

    resolved_kind: ModelKind = _infer_kind(config, name) if kind == "auto" else kind  # type: ignore[assignment]
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    cls = AutoModelForCausalLM if resolved_kind == "causal" else AutoModelForMaskedLM
    try:
        model = cls.from_pretrained(path, dtype=dt)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load model {name!r} as a {resolved_kind} LM: {first}") from exc
    model.to(dev)
    logger.info("loaded %s (%s LM) on %s in %s", name, resolved_kind, dev, dt)
    return Backend(model, tokenizer, resolved_kind, name=name, max_length=max_length)
