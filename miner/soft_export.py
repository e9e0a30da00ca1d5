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
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from miner._io import atomic_write_text, read_format_json
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
            raise MinerError(f"soft prompt {ref!r} is not the one in export {str(self.path)!r} ({self.prompt.soft})")
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
        return (f"the tokenizer adds leading special tokens {list(backend.lead_ids)}: ours sit before the soft tokens, "
                "PEFT's virtual tokens go before them")
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
    cfg = {
        "peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": n, "token_dim": dim,
        "num_transformer_submodules": 1, "num_attention_heads": num_attention_heads, "num_layers": num_layers,
        "prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": None, "tokenizer_name_or_path": tokenizer,
        "tokenizer_kwargs": None, "base_model_name_or_path": base_model, "revision": None, "inference_mode": True,
        "auto_mapping": None, "modules_to_save": None,
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
    exported = source if hasattr(source, "prompt") and isinstance(getattr(source, "prompt"), Prompt) else exported_from_row(source)
    prompt = exported.prompt
    if prompt.soft is None:
        raise MinerError(f"prompt {prompt.describe()} is not a soft prompt; export it with 'miner export' as JSON")
    tensor = store.get_tensor(prompt.soft).float()
    if tensor.ndim != 2 or tensor.shape[0] != prompt.parsed.n_soft:
        raise MinerError(f"soft prompt {prompt.soft} has shape {tuple(tensor.shape)}, the template needs {prompt.parsed.n_soft} tokens")
    if backend is None and peft:
        from miner.models import load_backend

        backend = load_backend(exported.model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    meta = {"format": FORMAT, "template": prompt.template, "model": exported.model}
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=out)
    os.close(fd)
    try:
        save_file({TENSOR_KEY: tensor.contiguous()}, tmp, metadata=meta)
        os.replace(tmp, out / TENSOR_FILE)
    finally:
        Path(tmp).unlink(missing_ok=True)

    reason = peft_incompatibility(prompt, backend) if peft else "not requested"
    peft_dir = None
    if reason is None:
        cfg = backend.model.config
        peft_dir = export_peft_adapter(
            tensor, out / PEFT_DIR, base_model=getattr(cfg, "_name_or_path", None) or exported.model,
            num_layers=getattr(cfg, "num_hidden_layers", None), num_attention_heads=getattr(cfg, "num_attention_heads", None),
            tokenizer=getattr(backend.tokenizer, "name_or_path", None),
        )
    elif peft:
        logger.warning("soft prompt exported without a PEFT adapter: %s", reason)
    nearest = None
    if backend is not None:
        from miner.search._soft_common import nearest_report

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
            "adapter": PEFT_DIR if peft_dir else None,
            "reason": reason,
            "input_template": peft_input_template(prompt),
            "answer_words": {label: [" " + w for w in ws] if _space_before_answer(prompt) else list(ws)
                             for label, ws in zip(prompt.verbalizer.labels, prompt.verbalizer.words)},
            "usage": "PeftModel.from_pretrained(base_model, '<dir>/peft'); feed input_template filled with the text; "
                     "a label's score is the log of the summed probability of its answer words after it",
        },
    }
    desc.setdefault("provenance", {})["soft_exported_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(out / DESC_FILE, json.dumps(desc, indent=2, ensure_ascii=False, default=str) + "\n")
    return SoftExport(exported, tensor.cpu(), out, peft_dir, desc)


def exported_from_row(row: Any) -> Any:
    """An ``ExportedPrompt`` for a leaderboard row (what ``export_best`` builds, minus the run config)."""
    from miner.export import ExportedPrompt

    labels = list(row.prompt["verbalizer"].keys())
    return ExportedPrompt(
        prompt=Prompt.from_dict(row.prompt, labels),
        model=row.model,
        task={"name": row.task, "text_fields": list(parse_template(row.prompt["template"]).fields), "label_names": labels,
              "metric": row.metric, "k": row.k, "seed": row.seed},
        scores={"metric": row.metric, "train": row.train_score, "dev": row.dev_score, "dev_loglik": row.dev_loglik,
                "test": getattr(row, "test_score", None), "n_train": row.n_train, "n_dev": row.n_dev,
                "n_test": getattr(row, "n_test", None)},
        provenance={"searcher": row.searcher, "created_at": str(row.created_at), "versions": getattr(row, "versions", None)},
        leaderboard={"row_id": row.id, "run_id": row.run_id},
    )


# --------------------------------------------------------------------------- load / predict
def is_soft_export(path: str | Path) -> bool:
    """True for an export directory or its description file (for ``miner predict`` to dispatch on)."""
    p = Path(path)
    desc = p / DESC_FILE if p.is_dir() else p
    if not desc.is_file():
        return False
    try:
        return json.loads(desc.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_soft_export(path: str | Path) -> SoftExport:
    """Load an export directory (or its ``soft_prompt.json``)."""
    from safetensors.torch import load_file

    from miner.export import ExportedPrompt

    p = Path(path)
    desc_path = p / DESC_FILE if p.is_dir() else p
    if not desc_path.is_file():
        raise MinerError(f"soft prompt export {str(p)!r} does not exist (expected a directory with {DESC_FILE})")
    d = read_format_json(desc_path, FORMAT, "soft prompt description")
    root = desc_path.parent
    try:
        task = d["task"]
        prompt = Prompt.from_dict(d["prompt"], task["label_names"])
        tfile = root / d["soft"]["file"]
        if not tfile.is_file():
            raise MinerError(f"soft prompt tensor {str(tfile)!r} is missing")
        tensor = load_file(str(tfile))[d["soft"].get("key", TENSOR_KEY)].float()
    except KeyError as exc:
        raise MinerError(f"soft prompt description {str(desc_path)!r} lacks the key {exc.args[0]!r}") from None
    if tuple(tensor.shape) != tuple(d["soft"]["shape"]) or tensor.shape[0] != prompt.parsed.n_soft:
        raise MinerError(f"soft prompt tensor {str(tfile)!r} has shape {tuple(tensor.shape)}, expected {d['soft']['shape']}")
    digest = hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()
    if d["soft"].get("sha256") and digest != d["soft"]["sha256"]:
        raise MinerError(f"soft prompt tensor {str(tfile)!r} does not match its description (sha256 differs)")
    ex = ExportedPrompt(prompt, d["model"], task, d.get("scores", {}), d.get("provenance", {}), d.get("leaderboard", {}))
    adapter = d.get("peft", {}).get("adapter")
    return SoftExport(ex, tensor, root, root / adapter if adapter else None, d)


def predict_soft(
    export: SoftExport | str | Path,
    inputs: Iterable[str | Mapping[str, str]],
    *,
    backend: Any = None,
    batch_size: int = 32,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Apply a soft-prompt export to new text; same output as :func:`miner.export.predict`."""
    from miner.export import predict
    from miner.models import load_backend

    se = export if isinstance(export, SoftExport) else load_soft_export(export)
    backend = backend or load_backend(se.exported.model)
    hidden = int(backend.input_embeddings().shape[1])
    if se.tensor.shape[1] != hidden:
        raise MinerError(f"soft prompt has width {se.tensor.shape[1]} but model {backend.name!r} has embeddings of width {hidden}")
    return predict(se.exported, inputs, backend=backend, batch_size=batch_size, progress=progress, soft_resolver=se.resolver)


def _space_before_answer(prompt: Prompt) -> bool:
    segs = prompt.parsed.segments
    i = prompt.parsed.answer_index
    return i > 0 and isinstance(segs[i - 1], Literal) and segs[i - 1].text.endswith(" ")
