"""The ``miner export`` file format: its strict schema, reading and validating it, output paths,
and applying an exported prompt to new text.

The lower layer of :mod:`miner.export` (the discrete export) and :mod:`miner.soft_export` (the soft
one): both use it and neither imports the other's internals, so there is no import cycle between them.
An export file is plain JSON that users keep, copy and sometimes edit by hand, so reading one validates
every key (pydantic, strict: ``"false"`` is not a boolean, ``5`` is not a model name) and then builds
the prompt through the ``Prompt`` / ``PromptEnsemble`` constructors. A problem is one
:class:`ExportFileError` line naming the file and the key path (``best.json: task.label_names[1]: ...``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from miner._io import atomic_write_text, read_format_json
from miner.errors import MinerError, PromptError
from miner.prompts import Prompt, PromptEnsemble

FORMAT = "miner-prompt/1"

# An export is a few kB (the run config included); anything near this is not one, and
# reading it whole would let a stray path (a log, a dataset) fill the memory.
MAX_FILE_BYTES = 64 * 2**20
# {soft:N} / {trigger:N} slots one prompt may ask for before any model is loaded: the template
# parser makes one segment per slot, so a hand-edited count is bounded before it is parsed.
# Larger than any model's context; ``predict`` checks the loaded model's own limit.
MAX_SLOTS = 65_536
MAX_TOKEN_ID = 2**31 - 1


class ExportFileError(MinerError):
    """An export file (``miner export`` JSON or a soft-prompt description) that cannot be used as it is."""

    def __init__(self, message: str) -> None:
        # keys and values come from the file: a newline in one must not break the one-line message
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


# --------------------------------------------------------------------------- file schema
NonEmpty = Annotated[str, StringConstraints(min_length=1)]


def _plain_name(v: str) -> str:
    if not is_plain_name(v):
        raise ValueError(
            f"must be a file or directory name beside the export (no '/', not '.' or '..'), got {v!r}"
        )
    return v


def is_plain_name(v: Any) -> bool:
    return isinstance(v, str) and v not in ("", ".", "..") and not any(c in v for c in "/\\\x00")


# a file or directory name beside the export, never a path out of it
PlainName = Annotated[str, AfterValidator(_plain_name)]
SoftRef = Annotated[str, StringConstraints(pattern=r"^soft:[A-Za-z0-9]+$")]
TokenId = Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


def _words(v: Any) -> Any:
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list):
        raise ValueError(f"should be a word or a list of words (got {_shown(v)})")
    return v


# a label's answer words: one word or a list of them, read as a list
Words = Annotated[list[str], BeforeValidator(_words)]


class PromptFile(_Strict):
    """One discrete (or soft) prompt as ``Prompt.to_dict`` writes it."""

    template: str
    verbalizer: dict[str, Words]
    triggers: list[TokenId] = []
    calibrate: bool = False
    soft: SoftRef | None = None
    meta: dict[str, Any] = {}


class EnsembleFile(_Strict):
    """``PromptEnsemble.to_dict``: ``{"ensemble": [prompt, ...], "weights": [w, ...], "meta": {...}}``
    (``weights`` only for a weighted ensemble: one non-negative weight per member, summing to 1)."""

    ensemble: list[PromptFile] = Field(min_length=2)
    weights: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = None
    meta: dict[str, Any] = {}


class TaskFile(_Strict):
    name: str
    text_fields: list[NonEmpty] = Field(min_length=1)
    label_names: list[NonEmpty] = Field(min_length=2)
    metric: str | None = None
    k: Annotated[int, Field(ge=0)] | None = None
    seed: int | None = None
    spec: dict[str, Any] | None = None  # the run config's task section, as it was

    @field_validator("text_fields", "label_names")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"names must be distinct, got {v}")
        return v


class ScoresFile(_Strict):
    metric: str | None = None
    train: float | None = None
    dev: float | None = None
    dev_loglik: float | None = None
    test: float | None = None
    n_train: int | None = None
    n_dev: int | None = None
    n_test: int | None = None


class LeaderboardFile(_Strict):
    storage: str | None = None
    row_id: int | None = None
    run_id: str | None = None


class ProvenanceFile(_Strict):
    # a record of where the prompt came from: later exporters may add to it
    model_config = ConfigDict(strict=True, extra="allow")

    exported_at: str | None = None
    exported_by: str | None = None
    searcher: str | None = None
    created_at: str | None = None
    versions: dict[str, Any] | None = None
    run_config: dict[str, Any] | None = None


class ExportBody(_Strict):
    """What every export carries (``ExportedPrompt.to_dict``)."""

    prompt: dict[str, Any]  # a PromptFile or an EnsembleFile, told apart by the "ensemble" key
    model: NonEmpty
    task: TaskFile
    scores: ScoresFile = ScoresFile()
    leaderboard: LeaderboardFile = LeaderboardFile()
    provenance: ProvenanceFile = ProvenanceFile()


class ExportFile(ExportBody):
    """A ``miner export`` JSON file."""

    format: Literal["miner-prompt/1"]
    soft_export: PlainName | None = None  # the soft-prompt export directory beside the file


# --------------------------------------------------------------------------- exported prompt
@dataclass(frozen=True)
class ExportedPrompt:
    prompt: Prompt | PromptEnsemble
    model: str
    task: dict[str, Any]  # name, text_fields, label_names, metric, k, seed
    scores: dict[str, Any]
    provenance: dict[str, Any]
    leaderboard: dict[str, Any]

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.task["label_names"])

    @property
    def text_fields(self) -> tuple[str, ...]:
        return tuple(self.task["text_fields"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "prompt": self.prompt.to_dict(),
            "model": self.model,
            "task": self.task,
            "scores": self.scores,
            "leaderboard": self.leaderboard,
            "provenance": self.provenance,
        }


def check_output_path(path: str | Path, *, directory: bool = False) -> None:
    """Refuse an output path that cannot be written, before any work is done.

    The file (or ``directory``) may not exist yet, and neither may its parents (they are
    created); the nearest existing ancestor must be a directory we can create files in,
    which is tried for real (as root, permission bits say nothing).
    """
    p = Path(path)
    what = "directory" if directory else "file"
    if p.exists() or p.is_symlink():
        if directory and not p.is_dir():
            raise ExportFileError(f"cannot write the export directory {str(p)!r}: a file of that name exists")
        if not directory and p.is_dir():
            raise ExportFileError(
                f"cannot write {str(p)!r}: it is a directory (give a file name, e.g. {str(p / 'best.json')!r})"
            )
        if not directory and not p.is_file():
            raise ExportFileError(f"cannot write {str(p)!r}: it exists and is not a regular file")
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ExportFileError(f"cannot write the {what} {str(p)!r}: {str(ancestor)!r} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".miner-probe-", dir=ancestor)
    except OSError as exc:
        raise ExportFileError(
            f"cannot write the {what} {str(p)!r}: {exc.strerror or exc} in {str(ancestor)!r}"
        ) from None
    os.close(fd)
    os.unlink(probe)


def write_text_atomic(path: Path, text: str) -> None:
    """``atomic_write_text`` with an unwritable path as a one-line error (nothing half-written is left)."""
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise ExportFileError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished directory ``tmp`` to ``target``, replacing an older export there.

    A directory cannot be renamed over a non-empty one, so the old one steps aside first:
    at any time ``target`` is the old export, the new one, or (between two renames) absent,
    never a mixture.
    """
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    try:
        os.replace(tmp, target)
    except OSError:
        if old is not None:
            os.replace(old / target.name, target)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- loading
def read_export_json(path: str | Path, fmt: str, what: str) -> tuple[Path, dict[str, Any]]:
    """Read a format-tagged export file; every failure is one line naming the file."""
    p = Path(path)
    try:
        if not p.is_file():
            raise ExportFileError(
                f"{what} {str(p)!r} does not exist"
                if not p.exists()
                else f"{what} {str(p)!r} is not a regular file"
            )
        size = p.stat().st_size
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ExportFileError(
            f"cannot read {what} {str(p)!r}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if size > MAX_FILE_BYTES:
        raise ExportFileError(
            f"{what} {str(p)!r} is {size / 2**20:.0f} MB; an export is a few kB (at most {MAX_FILE_BYTES // 2**20} MB)"
        )
    try:
        return p, read_format_json(p, fmt, what)
    except OSError as exc:
        raise ExportFileError(f"cannot read {what} {str(p)!r}: {exc.strerror or exc}") from None
    except RecursionError:
        raise ExportFileError(f"{what} {str(p)!r} is nested too deeply to be a miner export") from None
    except ValueError as exc:  # json's own limits (an integer of thousands of digits)
        raise ExportFileError(f"{what} {str(p)!r} is not valid JSON: {exc}") from None


def validate_export(d: Mapping[str, Any], path: Path, schema: type[ExportBody]) -> tuple[ExportedPrompt, Any]:
    """Check ``d`` against ``schema`` and build its prompt: ``(ExportedPrompt, validated model)``."""
    try:
        bad = _non_text(d)
        if bad is not None:
            where, text = bad
            raise ExportFileError(
                f"{path}: {where or 'top level'}: {text!r} holds a lone UTF-16 surrogate, which is not text"
            )
        body = schema.model_validate(d)
    except pydantic.ValidationError as exc:
        raise ExportFileError(f"{path}: {format_validation_error(exc)}") from None
    except RecursionError:
        raise ExportFileError(f"{path}: nested too deeply to be a miner export") from None
    prompt = build_prompt(d["prompt"], body.task.label_names, body.task.text_fields, path)
    ex = ExportedPrompt(
        prompt,
        body.model,
        dict(d["task"]),
        dict(d.get("scores", {})),
        dict(d.get("provenance", {})),
        dict(d.get("leaderboard", {})),
    )
    return ex, body


def _non_text(value: Any, where: str = "") -> tuple[str, str] | None:
    """The first string (key or value) that is not valid Unicode: JSON's ``"\\ud800"`` escapes decode to one."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where, value[:40]
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        here = (where + _loc_part(k)).lstrip(".")
        if isinstance(k, str) and _non_text(k) is not None:
            return here, k[:40]
        found = _non_text(v, here)
        if found is not None:
            return found
    return None


def build_prompt(
    d: Mapping[str, Any], label_names: Sequence[str], text_fields: Sequence[str], path: Path
) -> Prompt | PromptEnsemble:
    """A prompt (or ensemble) from its file form, checked against the task's labels and text fields."""
    if "ensemble" in d:
        try:
            ens = EnsembleFile.model_validate(d)
        except pydantic.ValidationError as exc:
            raise ExportFileError(f"{path}: {format_validation_error(exc, ('prompt',))}") from None
        members = tuple(
            _one_prompt(m, label_names, text_fields, path, f"prompt.ensemble[{i}]")
            for i, m in enumerate(ens.ensemble)
        )
        try:
            weights = tuple(ens.weights) if ens.weights is not None else None
            return PromptEnsemble(members, meta=ens.meta, weights=weights)
        except PromptError as exc:
            raise ExportFileError(f"{path}: prompt.ensemble: {exc}") from None
    try:
        pf = PromptFile.model_validate(d)
    except pydantic.ValidationError as exc:
        raise ExportFileError(f"{path}: {format_validation_error(exc, ('prompt',))}") from None
    return _one_prompt(pf, label_names, text_fields, path, "prompt")


def _one_prompt(
    pf: PromptFile, label_names: Sequence[str], text_fields: Sequence[str], path: Path, where: str
) -> Prompt:
    n_trig, n_soft = slot_counts(pf.template)
    if n_trig + n_soft > MAX_SLOTS:
        raise ExportFileError(
            f"{path}: {where}.template: asks for {n_trig + n_soft} trigger/soft slots; no model takes "
            f"more than {MAX_SLOTS} positions"
        )
    if n_trig != len(pf.triggers):
        raise ExportFileError(
            f"{path}: {where}.triggers: the template has {n_trig} trigger slots but {len(pf.triggers)} "
            "trigger tokens are given"
        )
    try:
        prompt = Prompt.create(
            pf.template,
            pf.verbalizer,
            label_names,
            triggers=tuple(pf.triggers),
            calibrate=pf.calibrate,
            soft=pf.soft,
            meta=pf.meta,
        )
        prompt.parsed.check_fields(tuple(text_fields))
    except PromptError as exc:
        raise ExportFileError(f"{path}: {where}: {exc}") from None
    return prompt


_SLOT_BODY = re.compile(r"(trigger|soft)(?::(\d+))?")


def slot_counts(template: str) -> tuple[int, int]:
    """``(trigger slots, soft slots)`` a template asks for, counted without expanding them.

    Follows ``parse_template``'s reading of braces (``{{`` is a literal, a slot ends at the
    next ``}``); syntax errors are left to the parser, which runs once the counts are sane.
    """
    n_trig = n_soft = 0
    i = 0
    while (i := template.find("{", i)) >= 0:
        if template.startswith("{{", i):
            i += 2
            continue
        end = template.find("}", i + 1)
        if end < 0:
            break
        m = _SLOT_BODY.fullmatch(template[i + 1 : end].strip())
        if m:
            digits = m.group(2)
            # an absurd digit string would be refused anyway: don't let int() work on it
            n = 1 if digits is None else (int(digits) if len(digits) <= 9 else MAX_SLOTS + 1)
            if m.group(1) == "trigger":
                n_trig += n
            else:
                n_soft += n
        i = end + 1
    return n_trig, n_soft


_TYPE_PROBLEMS = {
    "dict_type": "should be a JSON object",
    "model_type": "should be a JSON object",
    "list_type": "should be a list",
    "string_type": "should be a string",
    "bool_type": "should be true or false",
    "int_type": "should be an integer",
    "float_type": "should be a number",
}


def format_validation_error(exc: pydantic.ValidationError, prefix: tuple[Any, ...] = ()) -> str:
    """``key.path[0]: problem`` for the first error (one line)."""
    err = exc.errors(include_url=False)[0]
    loc = "".join(_loc_part(p) for p in (*prefix, *err["loc"])).lstrip(".") or "top level"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{loc}: unknown key"
    if kind == "missing":
        return f"{loc}: missing (required)"
    msg = _TYPE_PROBLEMS.get(kind) or err["msg"].removeprefix("Value error, ")
    if kind == "value_error":
        return f"{loc}: {msg}"
    value = err.get("input")
    if isinstance(value, (dict, list)) and kind not in _TYPE_PROBLEMS:
        return f"{loc}: {msg}"
    return f"{loc}: {msg} (got {_shown(value)})"


def _loc_part(p: Any) -> str:
    if isinstance(p, int):
        return f"[{p}]"
    return f".{p}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(p)) else f"[{str(p)!r}]"


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def check_fits_model(prompt: Prompt | PromptEnsemble, backend: Any) -> None:
    """Refuse a prompt whose trigger/soft slots alone do not fit the model's positions (before any tensor is made)."""
    members = prompt.members if isinstance(prompt, PromptEnsemble) else (prompt,)
    limit = int(backend.max_length)
    for m in members:
        n_trig, n_soft = slot_counts(m.template)
        fixed = n_trig + n_soft + len(backend.lead_ids) + len(backend.trail_ids)
        if fixed >= limit:
            raise PromptError(
                f"template {m.template[:60]!r} has {n_trig} trigger and {n_soft} soft slots; "
                f"model {backend.name!r} takes at most {limit} tokens"
            )


def predict(
    exported: ExportedPrompt | str | Path,
    inputs: Iterable[str | Mapping[str, str]],
    *,
    backend: Any = None,
    batch_size: int = 32,
    progress: bool = False,
    soft_resolver: Any = None,
) -> list[dict[str, Any]]:
    """Apply an exported prompt: each input is a text (single-field task) or a field mapping.

    ``soft_resolver`` maps a soft prompt's reference to its tensor (see ``miner.soft_export``).
    """
    from miner.models import load_backend
    from miner.scoring import Scorer

    ex = exported if isinstance(exported, ExportedPrompt) else load_exported(exported)
    rows = _as_rows(inputs, ex.text_fields)
    if backend is None:
        backend = load_backend(ex.model)
    check_fits_model(ex.prompt, backend)
    scorer = Scorer(backend, batch_size=batch_size, progress=progress, soft_resolver=soft_resolver)
    from miner.selection import score

    result = score(scorer, ex.prompt, rows)  # a weighted ensemble mixes its members by its weights
    labels = ex.label_names
    out = []
    for row, pred, scores in zip(rows, result.preds, result.scores):
        probs = {label: float(p) for label, p in zip(labels, _softmax(scores))}
        out.append({"label": labels[int(pred)], "probabilities": probs, "input": row})
    return out


def _softmax(logps: Sequence[float]) -> list[float]:
    import math

    m = max(logps)
    e = [math.exp(x - m) for x in logps]
    s = sum(e)
    return [x / s for x in e]


def _as_rows(inputs: Iterable[str | Mapping[str, str]], text_fields: Sequence[str]) -> list[dict[str, str]]:
    rows = []
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            if len(text_fields) != 1:
                raise MinerError(
                    f"this prompt needs the fields {list(text_fields)}; give each input as a mapping (JSON Lines or CSV)"
                )
            rows.append({text_fields[0]: item})
        else:
            missing = [f for f in text_fields if f not in item]
            if missing:
                raise MinerError(f"input {i + 1} lacks the field {missing[0]!r} (needs {list(text_fields)})")
            rows.append({f: str(item[f]) for f in text_fields})
    if not rows:
        raise MinerError("no input text given")
    return rows


def load_exported(path: str | Path) -> ExportedPrompt:
    """Read a ``miner export`` file; a missing, tampered or hand-broken one is an :class:`ExportFileError`."""
    p, d = read_export_json(path, FORMAT, "prompt file")
    return validate_export(d, p, ExportFile)[0]
