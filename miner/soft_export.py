"""Exporting a learned soft prompt, loading it back, and applying it (``miner predict``).

An export is a directory::

    out_dir/
      soft_prompt.json            description: format, prompt (template, verbalizer, soft ref),
                                  model, task, scores, provenance, nearest tokens, PEFT notes
      soft_prompt.safetensors     the tensor ``soft_prompt`` [n_virtual_tokens, hidden], float32
      peft/                       a PEFT prompt-tuning adapter, when the layout allows it:
        adapter_config.json
        adapter_model.safetensors   (``prompt_embeddings``, as PEFT itself saves it)

PEFT's prompt tuning *prepends* its virtual tokens before every input token. Our scores
equal PEFT's only when the soft tokens come first in the model's input: the template starts
with ``{soft:N}`` (the searchers' default layout), the tokenizer adds no leading special
token (SmolLM2, Llama-3 without BOS, GPT-2 ... ; a BOS would sit *before* our soft tokens
but *after* PEFT's), the model is a causal LM (PEFT has no masked-LM prompt-tuning task),
and the prompt is not calibrated. Other layouts (soft tokens mid-template, several soft
runs, a BOS-adding tokenizer, a masked LM) still export as safetensors + JSON, which
``miner predict`` applies exactly; the JSON's ``peft.reason`` says why no adapter was written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any
from typing import Literal as Lit

import pydantic
import torch
from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator

from miner._exportfile import MAX_SLOTS, ExportBody, PlainName
from miner._io import atomic_write_text
from miner.errors import MinerError
from miner.prompts import Answer, Field, Literal, Prompt, Soft, parse_template

logger = logging.getLogger(__name__)

FORMAT = "miner-soft-prompt/1"
DESC_FILE = "soft_prompt.json"
TENSOR_FILE = "soft_prompt.safetensors"
TENSOR_KEY = "soft_prompt"
PEFT_DIR = "peft"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
PEFT_KEY = "prompt_embeddings"  # the key PEFT saves prompt-learning adapters under
MAX_WIDTH = 1 << 16  # embedding width no model reaches (the largest are ~16k)


@dataclass(frozen=True)
class SoftExport:
    """A loaded soft-prompt export: the prompt, its tensor, and where it came from."""

    exported: Any  # miner.export.ExportedPrompt (prompt with its soft reference, model, task, scores)
    tensor: torch.Tensor  # [n_virtual_tokens, hidden] float32, CPU
    path: Path  # the export directory
    peft_dir: Path | None = None
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> Prompt:
        return self.exported.prompt

    def resolver(self, ref: str) -> torch.Tensor:
        """``Scorer(soft_resolver=export.resolver)``: the prompt's reference -> the tensor."""
        if ref != self.prompt.soft:
            raise MinerError(
                f"soft prompt {ref!r} is not the one in export {str(self.path)!r} ({self.prompt.soft})"
            )
        return self.tensor


# --------------------------------------------------------------------------- PEFT layout
def peft_incompatibility(prompt: Prompt, backend: Any = None, kind: str | None = None) -> str | None:
    """Why this soft prompt cannot become a PEFT prompt-tuning adapter (``None``: it can)."""
    tpl = prompt.parsed
    n = tpl.n_soft
    if not n:
        return "the prompt has no soft tokens"
    if not all(isinstance(s, Soft) for s in tpl.segments[:n]):
        return "PEFT prompt tuning prepends its virtual tokens; this template does not start with all of its {soft} slots"
    if tpl.n_triggers:
        return "the template has {trigger} slots, which PEFT prompt tuning cannot express"
    kind = kind or (backend.kind if backend is not None else "causal")
    if kind != "causal":
        return "PEFT prompt tuning has no masked-LM task type; use the safetensors export with miner predict"
    if backend is not None and backend.lead_ids:
        return (
            f"the tokenizer adds leading special tokens {list(backend.lead_ids)}: ours sit before the soft tokens, "
            "PEFT's virtual tokens go before them"
        )
    if prompt.calibrate:
        return "the prompt is calibrated (content-free), which a PEFT forward pass does not do"
    return None


def peft_input_template(prompt: Prompt) -> str:
    """The text a PEFT user feeds after the virtual tokens, up to the answer (``{field}`` slots kept)."""
    out = []
    for s in prompt.parsed.segments:
        if isinstance(s, Answer):
            break
        if isinstance(s, Literal):
            out.append(s.text)
        elif isinstance(s, Field):
            out.append("{" + s.name + "}")
    text = "".join(out)
    return text[:-1] if text.endswith(" ") else text  # the space before the answer goes onto the word


def export_peft_adapter(
    tensor: torch.Tensor,
    out_dir: str | Path,
    *,
    base_model: str | None,
    num_layers: int | None = None,
    num_attention_heads: int | None = None,
    tokenizer: str | None = None,
) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` as PEFT saves prompt tuning."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = tensor.detach().to("cpu", torch.float32).contiguous()
    n, dim = t.shape
    cfg: dict[str, Any] = {
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM",
        "num_virtual_tokens": n,
        "token_dim": dim,
        "num_transformer_submodules": 1,
        "num_attention_heads": num_attention_heads,
        "num_layers": num_layers,
        "prompt_tuning_init": "RANDOM",
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": tokenizer,
        "tokenizer_kwargs": None,
        "base_model_name_or_path": base_model,
        "revision": None,
        "inference_mode": True,
        "auto_mapping": None,
        "modules_to_save": None,
    }
    try:  # let PEFT write its own config (current field set and version) when it is installed
        from peft import PromptTuningConfig

        PromptTuningConfig(**{k: v for k, v in cfg.items() if k != "peft_type"}).save_pretrained(str(out))
    except ImportError:
        atomic_write_text(out / PEFT_CONFIG, json.dumps(cfg, indent=2) + "\n")
    save_file({PEFT_KEY: t}, str(out / PEFT_WEIGHTS), metadata={"format": "pt"})
    return out


# --------------------------------------------------------------------------- export
def export_soft(
    source: Any,
    store: Any,
    out_dir: str | Path,
    *,
    backend: Any = None,
    peft: bool = True,
) -> SoftExport:
    """Export a soft prompt: ``source`` is an ``ExportedPrompt`` (from ``export_best``) or a leaderboard row.

    ``store`` is the run's :class:`~miner.artifacts.ArtifactStore` holding the tensor. The
    backend (loaded from the row's model when not given) decides the PEFT layout and fills
    the adapter config (layers, heads).
    """
    from miner._exportfile import ExportFileError, check_output_path, replace_dir

    exported = (
        source
        if hasattr(source, "prompt") and isinstance(source.prompt, Prompt)
        else exported_from_row(source)
    )
    prompt = exported.prompt
    if prompt.soft is None:
        raise MinerError(
            f"prompt {prompt.describe()} is not a soft prompt; export it with 'miner export' as JSON"
        )
    out = Path(out_dir)
    check_output_path(out, directory=True)
    tensor = _stored_tensor(store, prompt.soft).float()
    if tensor.ndim != 2 or tensor.shape[0] != prompt.parsed.n_soft:
        raise MinerError(
            f"soft prompt {prompt.soft} has shape {tuple(tensor.shape)}, the template needs {prompt.parsed.n_soft} tokens"
        )
    if backend is None and peft:
        from miner.models import load_backend

        backend = load_backend(exported.model)
    if backend is not None:
        _check_width(tensor, backend)
    # Written into a fresh directory beside the target and moved into place when complete:
    # a failed export leaves the old one (or nothing), never a half-written one.
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise ExportFileError(
            f"cannot write the export directory {str(out)!r}: {exc.strerror or exc}"
        ) from None
    from safetensors import SafetensorError

    try:
        desc, has_peft, reason = _write_soft_export(exported, tensor, tmp, backend, peft)
        replace_dir(tmp, out)
    except (
        OSError,
        SafetensorError,
    ) as exc:  # safetensors reports a failed write (a full disk) as its own error
        raise ExportFileError(
            f"cannot write the export directory {str(out)!r}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if peft and reason is not None:
        logger.warning("soft prompt exported without a PEFT adapter: %s", reason)
    return SoftExport(exported, tensor.cpu(), out, out / PEFT_DIR if has_peft else None, desc)


def _write_soft_export(
    exported: Any, tensor: torch.Tensor, out: Path, backend: Any, peft: bool
) -> tuple[dict[str, Any], bool, str | None]:
    """Write the tensor, the PEFT adapter (where the layout allows) and the description into ``out``."""
    from safetensors.torch import save_file

    prompt = exported.prompt
    meta = {"format": FORMAT, "template": prompt.template, "model": exported.model}
    save_file({TENSOR_KEY: tensor.contiguous()}, str(out / TENSOR_FILE), metadata=meta)

    reason = peft_incompatibility(prompt, backend) if peft else "not requested"
    if reason is None:
        cfg = backend.model.config
        export_peft_adapter(
            tensor,
            out / PEFT_DIR,
            base_model=getattr(cfg, "_name_or_path", None) or exported.model,
            num_layers=getattr(cfg, "num_hidden_layers", None),
            num_attention_heads=getattr(cfg, "num_attention_heads", None),
            tokenizer=getattr(backend.tokenizer, "name_or_path", None),
        )
    nearest = None
    if backend is not None:
        from miner.search import nearest_report

        nearest = nearest_report(backend, tensor)
    desc = {
        **exported.to_dict(),
        "format": FORMAT,
        "soft": {
            "file": TENSOR_FILE,
            "key": TENSOR_KEY,
            "shape": list(tensor.shape),
            "sha256": hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest(),
            "nearest": nearest,
        },
        "peft": {
            "adapter": PEFT_DIR if reason is None else None,
            "reason": reason,
            "input_template": peft_input_template(prompt),
            "answer_words": {
                label: [" " + w for w in ws] if _space_before_answer(prompt) else list(ws)
                for label, ws in zip(prompt.verbalizer.labels, prompt.verbalizer.words)
            },
            "usage": "PeftModel.from_pretrained(base_model, '<dir>/peft'); feed input_template filled with the text; "
            "a label's score is the log of the summed probability of its answer words after it",
        },
    }
    desc.setdefault("provenance", {})["soft_exported_at"] = datetime.now(timezone.utc).isoformat(
        timespec="seconds"
    )
    atomic_write_text(out / DESC_FILE, json.dumps(desc, indent=2, ensure_ascii=False, default=str) + "\n")
    return desc, reason is None, reason


def _stored_tensor(store: Any, ref: str) -> torch.Tensor:
    """The run's tensor for ``ref``; an unreadable artifact file is a one-line error naming it."""
    from safetensors import SafetensorError

    try:
        return store.get_tensor(ref)
    except (SafetensorError, OSError, KeyError) as exc:
        where = store.path(ref) if hasattr(store, "path") else ref
        raise MinerError(
            f"soft prompt artifact {str(where)!r} is unreadable ({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def _check_width(tensor: torch.Tensor, backend: Any) -> None:
    hidden = int(backend.input_embeddings().shape[1])
    if tensor.shape[1] != hidden:
        raise MinerError(
            f"soft prompt has width {tensor.shape[1]} but model {backend.name!r} has embeddings of width {hidden}"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def exported_from_row(row: Any) -> Any:
    """An ``ExportedPrompt`` for a leaderboard row (what ``export_best`` builds, minus the run config)."""
    from miner._exportfile import ExportedPrompt

    labels = list(row.prompt["verbalizer"].keys())
    return ExportedPrompt(
        prompt=Prompt.from_dict(row.prompt, labels),
        model=row.model,
        task={
            "name": row.task,
            "text_fields": list(parse_template(row.prompt["template"]).fields),
            "label_names": labels,
            "metric": row.metric,
            "k": row.k,
            "seed": row.seed,
        },
        scores={
            "metric": row.metric,
            "train": row.train_score,
            "dev": row.dev_score,
            "dev_loglik": row.dev_loglik,
            "test": getattr(row, "test_score", None),
            "n_train": row.n_train,
            "n_dev": row.n_dev,
            "n_test": getattr(row, "n_test", None),
        },
        provenance={
            "searcher": row.searcher,
            "created_at": str(row.created_at),
            "versions": getattr(row, "versions", None),
        },
        leaderboard={"row_id": row.id, "run_id": row.run_id},
    )


# --------------------------------------------------------------------------- load / predict
def is_soft_export(path: str | Path) -> bool:
    """True for an export directory or its description file (for ``miner predict`` to dispatch on)."""
    from miner._exportfile import MAX_FILE_BYTES

    try:
        p = Path(path)
        desc = p / DESC_FILE if p.is_dir() else p
        if not desc.is_file() or desc.stat().st_size > MAX_FILE_BYTES:
            return False
        return json.loads(desc.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


class SoftSection(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    file: PlainName
    key: Annotated[str, StringConstraints(min_length=1)] = TENSOR_KEY
    shape: Annotated[list[Annotated[int, pydantic.Field(ge=1)]], pydantic.Field(min_length=2, max_length=2)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    nearest: dict[str, Any] | None = None

    @field_validator("shape")
    @classmethod
    def _bounded(cls, v: list[int]) -> list[int]:
        if v[0] > MAX_SLOTS:
            raise ValueError(f"{v[0]} soft tokens; no model takes more than {MAX_SLOTS} positions")
        if v[1] > MAX_WIDTH:
            raise ValueError(f"width {v[1]} is beyond any model's embeddings (at most {MAX_WIDTH})")
        return v


class PeftSection(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    adapter: PlainName | None = None
    reason: str | None = None
    input_template: str | None = None
    answer_words: dict[str, list[str]] | None = None
    usage: str | None = None


class SoftDescriptionFile(ExportBody):
    """``soft_prompt.json``: an export body plus where the tensor is and how PEFT reads it."""

    format: Lit["miner-soft-prompt/1"]
    soft: SoftSection
    peft: PeftSection | None = None


def load_soft_export(path: str | Path) -> SoftExport:
    """Load an export directory (or its ``soft_prompt.json``); every problem is one :class:`ExportFileError` line."""
    from miner._exportfile import ExportFileError, read_export_json, validate_export

    p = Path(path)
    try:
        desc_path, exists = (p / DESC_FILE if p.is_dir() else p), p.exists()
    except (OSError, ValueError):  # ValueError: a NUL in the path
        desc_path, exists = p, False
    if not exists:
        raise ExportFileError(
            f"soft prompt export {str(p)!r} does not exist (expected a directory with {DESC_FILE})"
        )
    desc_path, d = read_export_json(desc_path, FORMAT, "soft prompt description")
    root = desc_path.parent
    ex, body = validate_export(d, desc_path, SoftDescriptionFile)
    if ex.prompt.soft is None:
        raise ExportFileError(
            f"{desc_path}: prompt.soft: missing (a soft prompt description names its tensor)"
        )
    if body.soft.shape[0] != ex.prompt.parsed.n_soft:
        raise ExportFileError(
            f"{desc_path}: soft.shape: {body.soft.shape} does not match the template's {ex.prompt.parsed.n_soft} soft slots"
        )
    tfile = root / body.soft.file
    tensor = _read_tensor(tfile, body.soft.key, tuple(body.soft.shape))
    digest = hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()
    if body.soft.sha256 and digest != body.soft.sha256:
        raise ExportFileError(
            f"soft prompt tensor {str(tfile)!r} does not match its description (sha256 differs)"
        )
    adapter = body.peft.adapter if body.peft is not None else None
    return SoftExport(ex, tensor, root, root / adapter if adapter else None, d)


def _read_tensor(tfile: Path, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The float32 tensor ``key`` of ``tfile``, its name, dtype and shape checked from the header before it is read."""
    from safetensors import SafetensorError, safe_open

    from miner._exportfile import ExportFileError

    if not tfile.is_file():
        raise ExportFileError(f"soft prompt tensor {str(tfile)!r} is missing")
    try:
        with safe_open(str(tfile), framework="pt") as f:
            keys = list(f.keys())
            if key not in keys:
                raise ExportFileError(
                    f"soft prompt tensor file {str(tfile)!r} has no tensor {key!r} (it holds {keys[:5]})"
                )
            info = f.get_slice(key)
            got_shape, dtype = tuple(info.get_shape()), info.get_dtype()
            if dtype != "F32":
                raise ExportFileError(
                    f"soft prompt tensor {key!r} in {str(tfile)!r} is {dtype}; the export writes float32 (F32)"
                )
            if got_shape != shape:
                raise ExportFileError(
                    f"soft prompt tensor {str(tfile)!r} has shape {list(got_shape)}, its description says {list(shape)}"
                )
            return f.get_tensor(key)
    except (SafetensorError, OSError) as exc:
        raise ExportFileError(
            f"soft prompt tensor {str(tfile)!r} is not a readable safetensors file: {_first_line(exc)}"
        ) from None


def predict_soft(
    export: SoftExport | str | Path,
    inputs: Iterable[str | Mapping[str, str]],
    *,
    backend: Any = None,
    batch_size: int = 32,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Apply a soft-prompt export to new text; same output as :func:`miner.export.predict`."""
    from miner._exportfile import check_fits_model, predict
    from miner.models import load_backend

    se = export if isinstance(export, SoftExport) else load_soft_export(export)
    backend = backend or load_backend(se.exported.model)
    check_fits_model(se.prompt, backend)
    _check_width(se.tensor, backend)
    return predict(
        se.exported,
        inputs,
        backend=backend,
        batch_size=batch_size,
        progress=progress,
        soft_resolver=se.resolver,
    )


def _space_before_answer(prompt: Prompt) -> bool:
    segs = prompt.parsed.segments
    i = prompt.parsed.answer_index
    return i > 0 and isinstance(prev := segs[i - 1], Literal) and prev.text.endswith(" ")
