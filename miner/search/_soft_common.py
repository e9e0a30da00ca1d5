"""What the continuous searchers (``soft``, ``blackbox``) share.

- the *layout*: the prompt the soft tokens live in (template with ``{soft:N}`` slots and a
  verbalizer), built from the searcher's parameters or the config's first seed prompt;
- initial soft embeddings (text, sampled vocabulary, random at the embedding scale);
- budget planning: forward passes an evaluation would need, and whether the budget can pay;
- recording a soft tensor as a leaderboard row (tensor in the artifact store, reference in
  the prompt) and its nearest discrete prompt (nearest vocabulary token per position,
  by cosine, placed in ``{trigger}`` slots so the ids are used as they are).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from miner.errors import ConfigError, PromptError
from miner.prompts import Answer, Field, Literal, Prompt, Soft, Trigger, Verbalizer, parse_template

logger = logging.getLogger(__name__)

# A valid artifact reference that is never stored: the training-time prompt carries it so that
# Prompt validation passes, while the tensor itself is handed to the scorer as ``soft_embeds``.
PENDING = "soft:pending"
DEFAULT_SUFFIX = " It was {answer}"
INIT_KINDS = ("vocab", "text", "random")
VOCAB_POOL = 5000  # Lester et al. sample initial tokens from the 5,000 most common ones


def check_template(template: str | None, what: str = "template") -> None:
    """Validate a searcher's template parameter at the config edge."""
    if template is None:
        return
    try:
        parsed = parse_template(template)
    except PromptError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    if not parsed.n_soft:
        raise ConfigError(f"{what} {template!r} has no soft-token slot: add {{soft:N}} (e.g. at the start)")


def build_layout(
    context: Any, template: str | None, n_tokens: int, verbalizer: Mapping[str, Any] | None
) -> Prompt:
    """The training prompt: where the soft tokens go and how labels are read.

    Default: ``{soft:N}`` at the very start of the config's first hand-written prompt (or of
    ``"{field} ... It was {answer}"`` when there is none): the layout PEFT's prompt tuning
    uses, so the result exports as a PEFT adapter.
    """
    labels = context.label_names
    seed = context.prompts[0] if context.prompts else None
    if template is None:
        base = (
            seed.template
            if seed is not None
            else " ".join("{" + f + "}" for f in context.text_fields) + DEFAULT_SUFFIX
        )
        template = f"{{soft:{n_tokens}}}{base}"
    if verbalizer is not None:
        verb = Verbalizer.from_mapping(verbalizer, labels)
    elif seed is not None:
        verb = seed.verbalizer
    else:
        verb = Verbalizer.from_mapping({name: [name] for name in labels}, labels)
    prompt = Prompt(template=template, verbalizer=verb, soft=PENDING)
    prompt.parsed.check_fields(context.text_fields)
    if prompt.parsed.n_triggers:
        raise PromptError(
            f"template {template!r} mixes {{trigger}} and {{soft}} slots; the continuous searchers need soft slots only"
        )
    return prompt


def initial_embeddings(backend: Any, n: int, how: str, text: str, generator: torch.Generator) -> torch.Tensor:
    """``[n, hidden]`` float32 starting point of a soft prompt, on the backend's device."""
    emb = backend.input_embeddings().detach()
    if how == "text":
        check_init_text(backend, how, text)
        ids = list(backend.tokenize(text))
        ids = (ids * math.ceil(n / len(ids)))[:n]  # repeat a short text, cut a long one (as PEFT does)
        out = emb[torch.tensor(ids, device=emb.device)]
    elif how == "vocab":
        special = set(getattr(backend.tokenizer, "all_special_ids", []) or [])
        pool = [i for i in range(min(VOCAB_POOL, backend.vocab_size)) if i not in special]
        pick = torch.randint(len(pool), (n,), generator=generator)
        out = emb[torch.tensor([pool[int(i)] for i in pick], device=emb.device)]
    elif how == "random":
        # At the embedding scale: N(0, 1) (PEFT's RANDOM) is ~7x too large for most LMs.
        scale = float(emb.float().std())
        out = torch.randn(n, emb.shape[1], generator=generator).to(emb.device) * scale
    else:  # pragma: no cover - validated by the dataclass field type
        raise ConfigError(f"unknown init {how!r}; known: {', '.join(INIT_KINDS)}")
    return out.float().clone()


def eval_passes(scorer: Any, prompt: Prompt, task: Any) -> int:
    """Forward passes one ``evaluate`` call would need (train and dev; an upper bound)."""
    return scorer.plan(prompt, task.train) + scorer.plan(prompt, task.dev)


def can_afford(context: Any, forward_passes: int = 0, backward_passes: int = 0, evaluations: int = 0) -> bool:
    """Whether the job's budget can pay for this work (always, outside the runner: no budget)."""
    b = context.budget
    return b is None or b.can_afford(
        forward_passes=forward_passes, backward_passes=backward_passes, evaluations=evaluations
    )


def check_init_text(backend: Any, init: str, text: str, what: str = "") -> None:
    """``init: text`` needs a text that tokenizes to at least one token (``what``: e.g. ``"soft."``)."""
    if init == "text" and not list(backend.tokenize(text)):
        raise ConfigError(f"{what}init_text {text!r} tokenizes to nothing")


# --------------------------------------------------------------------------- nearest tokens
def nearest_tokens(backend: Any, soft: torch.Tensor, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per soft position, the ``k`` vocabulary tokens with the highest cosine similarity."""
    emb = backend.input_embeddings().detach().float()
    s = soft.detach().to(emb.device).float()
    sims = torch.nn.functional.normalize(s, dim=-1) @ torch.nn.functional.normalize(emb, dim=-1).T
    special = list(getattr(backend.tokenizer, "all_special_ids", []) or [])
    if special:
        sims[:, special] = -2.0  # a special token (BOS, mask...) is not a useful reading
    cos, ids = sims.topk(k, dim=-1)
    return ids.cpu(), cos.cpu()


def nearest_report(backend: Any, soft: torch.Tensor, k: int = 3) -> dict[str, Any]:
    """JSON-ready description of the nearest tokens (goes into the row's ``extra``)."""
    ids, cos = nearest_tokens(backend, soft, k)
    return {
        "nearest_ids": ids[:, 0].tolist(),
        "nearest_text": backend.decode(ids[:, 0].tolist()),
        "nearest_tokens": [
            [[backend.decode([int(t)]), round(float(c), 4)] for t, c in zip(row_ids, row_cos)]
            for row_ids, row_cos in zip(ids, cos)
        ],
    }


def discrete_projection(layout: Prompt, token_ids: Sequence[int]) -> Prompt:
    """The layout with each soft slot replaced by a trigger slot holding ``token_ids``."""
    parts: list[str] = []
    for seg in layout.parsed.segments:
        if isinstance(seg, Literal):
            parts.append(seg.text.replace("{", "{{").replace("}", "}}"))
        elif isinstance(seg, Field):
            parts.append("{" + seg.name + "}")
        elif isinstance(seg, Answer):
            parts.append("{answer}")
        elif isinstance(seg, (Soft, Trigger)):
            parts.append("{trigger}")
    template = _merge_runs("".join(parts))
    return Prompt(
        template=template,
        verbalizer=layout.verbalizer,
        triggers=tuple(int(t) for t in token_ids),
        calibrate=layout.calibrate,
    )


def _merge_runs(text: str) -> str:
    """``{trigger}{trigger}{trigger}`` -> ``{trigger:3}`` (shorter, same meaning)."""
    import re

    return re.sub(
        r"(?:\{trigger\}){2,}", lambda m: f"{{trigger:{len(m.group(0)) // len('{trigger}')}}}", text
    )


# --------------------------------------------------------------------------- recording
@dataclass
class Recorded:
    """A soft tensor proposed through ``evaluate``."""

    ref: str
    evaluation: Any  # miner.search.Evaluation
    tensor: torch.Tensor  # float32, CPU


def record_soft(
    context: Any,
    evaluate: Any,
    layout: Prompt,
    tensor: torch.Tensor,
    meta: dict[str, Any],
    extra: dict[str, Any],
) -> Recorded:
    """Store the tensor, propose the prompt that refers to it, return the evaluation."""
    if context.artifacts is None:
        raise PromptError("soft prompts need an artifact store (context.artifacts) to keep their tensors")
    # A copy: the caller's tensor may share storage with a parameter the optimiser keeps changing.
    t = tensor.detach().to("cpu", torch.float32).clone().contiguous()
    ref = context.artifacts.put_tensor(t, {"template": layout.template, **meta})
    report = nearest_report(context.backend, t)
    ev = evaluate(
        [layout.with_(soft=ref)], extra={**extra, "soft_ref": ref, "soft_shape": list(t.shape), **report}
    )[0]
    return Recorded(ref, ev, t)


def record_projection(context: Any, evaluate: Any, layout: Prompt, best: Recorded, searcher: str) -> Any:
    """Score the nearest discrete prompt of ``best`` and log what the soft prompt reads as."""
    ids, cos = nearest_tokens(context.backend, best.tensor, 1)
    projection = discrete_projection(layout, ids[:, 0].tolist())
    soft_dev = best.evaluation.dev.score if best.evaluation.dev else None
    extra = {
        "projection_of": best.ref,
        "projection_of_row": best.evaluation.row_id,
        "soft_dev_score": soft_dev,
        "nearest_text": context.backend.decode(ids[:, 0].tolist()),
        "nearest_cosine": [round(float(c), 4) for c in cos[:, 0]],
    }
    ev = evaluate([projection], extra=extra)[0]
    context.logger.info(
        "%s: nearest discrete prompt of the best soft prompt reads %r: dev %s (soft prompt: dev %s)",
        searcher,
        extra["nearest_text"],
        _fmt(ev.dev.score if ev.dev else None),
        _fmt(soft_dev),
    )
    return ev


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def checkpoint_dir(context: Any, searcher: str) -> Path | None:
    """Where a job's resumable state lives: beside the artifacts, keyed by the job key.

    ``None`` when the job has no stable identity (no job key, e.g. ``run_searcher``), so that
    two unrelated runs never resume each other.
    """
    if not context.job_key or context.artifacts is None:
        return None
    return Path(context.artifacts.root) / "checkpoints" / f"{searcher}-{context.job_key}"


def autocast(backend: Any, enabled: bool):
    """bf16 autocast on CUDA (a no-op context elsewhere)."""
    import contextlib

    if enabled and backend.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
