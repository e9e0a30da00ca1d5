"""The plain data that goes into and comes out of the leaderboard.

Records are validated in Python before any SQL runs, so that a bad field is
reported by name (record index, field, value) instead of surfacing as a driver
error, and so that SQLite (which stores whatever it is given) and PostgreSQL
(which rejects much more) hold exactly the same values.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, overload

from miner.errors import DataError


@dataclass
class EvaluationRecord:
    """One evaluated prompt, as the runner writes it."""

    run_id: str
    task: str
    model: str
    searcher: str
    seed: int
    k: int | None
    prompt_key: str
    prompt: dict
    metric: str
    train_score: float | None
    dev_score: float | None
    dev_loglik: float | None
    n_train: int
    n_dev: int
    forward_passes: int
    tokens: int
    seconds: float
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LeaderboardRow:
    """One stored evaluation joined with its latest test score (if any)."""

    id: int
    created_at: datetime
    run_id: str
    task: str
    model: str
    searcher: str
    seed: int
    k: int | None
    prompt_key: str
    prompt: dict
    metric: str
    train_score: float | None
    dev_score: float | None
    dev_loglik: float | None
    n_train: int
    n_dev: int
    forward_passes: int
    tokens: int
    seconds: float
    extra: dict
    versions: dict
    test_score: float | None = None
    n_test: int | None = None
    test_metrics: dict | None = None


@dataclass(frozen=True)
class RunRow:
    """One run: its config, provenance, status and how many evaluations it wrote."""

    run_id: str
    created_at: datetime
    finished_at: datetime | None
    status: str
    config: dict
    provenance: dict
    n_evaluations: int = 0


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(EvaluationRecord))

_STR_FIELDS = ("run_id", "task", "model", "searcher", "prompt_key", "metric")
_COUNT_FIELDS = ("n_train", "n_dev", "forward_passes", "tokens")
_SCORE_FIELDS = ("train_score", "dev_score", "dev_loglik")
_JSON_FIELDS = ("prompt", "extra")


def _json_default(value: Any) -> Any:
    # numpy / torch scalars and arrays expose .item() / .tolist(); anything else is a caller bug.
    for attr in ("tolist", "item"):
        method = getattr(value, attr, None)
        if callable(method):
            return method()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


MAX_JSON_CHARS = 4_000_000  # one JSON column of one row


def to_json_dict(value: Any, what: str) -> dict:
    """Return ``value`` as it will read back from a JSON column (tuples become lists...).

    NaN and infinities inside the dict become ``None``: PostgreSQL's JSON type rejects
    them, and a NaN in some searcher's side metric must not abort an hour-long run.
    (The score *columns* stay strict, see ``check_float``.)
    """
    if not isinstance(value, dict):
        raise DataError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        text = json.dumps(value, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} is not JSON-serializable: {exc}") from None
    if len(text) > MAX_JSON_CHARS:
        # a runaway value (an alias bomb, a huge pasted list) must not fill the database
        raise DataError(
            f"{what} is {len(text) / 1e6:.1f} MB as JSON; the limit per value is {MAX_JSON_CHARS / 1e6:.0f} MB"
        )
    # parse_constant sees exactly the tokens NaN, Infinity and -Infinity.
    return json.loads(text, parse_constant=lambda _token: None)


def check_int(value: Any, what: str, *, minimum: int | None = None) -> int:
    # bool is an Integral, but True as a seed or a count is always a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(f"{what} must be an int, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise DataError(f"{what} must be >= {minimum}, got {value}")
    return value


@overload
def check_float(value: Any, what: str, *, optional: Literal[False]) -> float: ...
@overload
def check_float(value: Any, what: str, *, optional: bool) -> float | None: ...
def check_float(value: Any, what: str, *, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"{what} must be a float{' or None' if optional else ''}, got {value!r}")
    value = float(value)
    # NaN would silently become NULL in SQLite and break the ordering; -inf is a legal log-prob.
    if math.isnan(value):
        raise DataError(f"{what} is NaN")
    return value


def record_to_row(record: Any, index: int) -> dict[str, Any]:
    """Validate one record and return the column values to insert."""
    label = f"evaluation record #{index}"
    if not isinstance(record, EvaluationRecord):
        raise DataError(f"{label} must be an EvaluationRecord, got {type(record).__name__}")
    label = f"{label} (prompt_key={record.prompt_key!r})"
    row: dict[str, Any] = {}
    for name in _STR_FIELDS:
        value = getattr(record, name)
        if not isinstance(value, str) or not value:
            raise DataError(f"{label}: field '{name}' must be a non-empty string, got {value!r}")
        row[name] = value
    row["seed"] = check_int(record.seed, f"{label}: field 'seed'")
    row["k"] = None if record.k is None else check_int(record.k, f"{label}: field 'k'", minimum=0)
    for name in _COUNT_FIELDS:
        row[name] = check_int(getattr(record, name), f"{label}: field '{name}'", minimum=0)
    for name in _SCORE_FIELDS:
        row[name] = check_float(getattr(record, name), f"{label}: field '{name}'", optional=True)
    seconds = check_float(record.seconds, f"{label}: field 'seconds'", optional=False)
    if seconds < 0 or math.isinf(seconds):
        raise DataError(f"{label}: field 'seconds' must be finite and >= 0, got {seconds}")
    row["seconds"] = seconds
    for name in _JSON_FIELDS:
        row[name] = to_json_dict(getattr(record, name), f"{label}: field '{name}'")
    return row
