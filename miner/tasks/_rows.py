"""Raw rows from any source, and their conversion into :class:`Example`s.

Every source (files, k-shot folders, the hub, the builtin corpus) first yields
``RawSplit``s of plain row dicts; label resolution and text-column aliasing
happen here once, so every source reports problems the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from miner.errors import DataError
from miner.tasks._types import Example


@dataclass(frozen=True)
class RawSplit:
    where: str  # what error messages name: a file path, or "hub dataset 'x' split 'y'"
    columns: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]
    line_numbers: tuple[int, ...] | None = None  # per row, where the source has lines

    def row_ref(self, i: int) -> str:
        if self.line_numbers is not None:
            return f"line {self.line_numbers[i]}"
        return f"row {i + 1}"


def _as_int(value: Any) -> int | None:
    """The integer a label value denotes, or None when it is not an integer."""
    if isinstance(value, bool):  # bool is an int subclass but never a class index
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
    return None


def infer_label_names(splits: Sequence[RawSplit], label_column: str) -> tuple[str, ...]:
    """Label names when neither the spec, the known-task table nor the hub gives them.

    The sorted unique non-integer values, integers then being indices into them (an
    integer that is no such index is an error: set ``task.label_names``). When every
    value is an integer, the names are those integers sorted numerically ("2" before
    "10"), each value mapping to its own name whatever the base (0- or 1-based files
    both work).
    """
    words: set[str] = set()
    numbers: set[int] = set()
    for split in splits:
        _require_label_column(split, label_column)
        for i, row in enumerate(split.rows):
            value = row.get(label_column)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise DataError(
                    f"{split.where} has an empty label in column '{label_column}' at {split.row_ref(i)}"
                )
            as_int = _as_int(value)
            if as_int is None:
                words.add(str(value).strip())
            else:
                numbers.add(as_int)
    where = ", ".join(s.where for s in splits)
    if words:
        names = tuple(sorted(words))
        stray = sorted(n for n in numbers if not 0 <= n < len(names))
        if stray:
            raise DataError(
                f"label column '{label_column}' in {where} mixes label names {list(names)} with integers "
                f"{sorted(numbers)}, read as indices into those names, but {stray[0]} is outside 0..{len(names) - 1}: "
                "set task.label_names"
            )
        return names
    if not numbers:
        raise DataError(f"no labelled rows in {where}")
    return tuple(str(n) for n in sorted(numbers))


def _require_label_column(split: RawSplit, label_column: str) -> None:
    if label_column not in split.columns:
        raise DataError(
            f"{split.where} has no label column '{label_column}'; columns present: {list(split.columns)}"
        )


def _text_columns(split: RawSplit, text_fields: Sequence[str], label_column: str) -> dict[str, str]:
    """Map each task text field to the column that holds it in this split."""
    missing = [f for f in text_fields if f not in split.columns]
    if not missing:
        return {f: f for f in text_fields}
    others = [c for c in split.columns if c != label_column]
    # Copies of one task name their text column differently between files
    # (agnews: "text" in train.tsv, "sentence" in test.tsv). With a single text
    # field and a single candidate column the intent is unambiguous.
    if len(text_fields) == 1 and len(others) == 1:
        return {text_fields[0]: others[0]}
    raise DataError(
        f"{split.where} has no column '{missing[0]}' (text field); columns present: {list(split.columns)}"
    )


def to_examples(
    split: RawSplit,
    text_fields: Sequence[str],
    label_column: str,
    label_names: Sequence[str],
    label_base: int = 0,
) -> tuple[Example, ...]:
    _require_label_column(split, label_column)
    columns = _text_columns(split, text_fields, label_column)
    index_of = {name: i for i, name in enumerate(label_names)}
    # Names that are all integers take no index reading (see _label_index); decided once per split.
    by_index = not all(_as_int(name) is not None for name in index_of)
    examples = []
    for i, row in enumerate(split.rows):
        fields = {}
        for field, column in columns.items():
            text = row.get(column)
            if text is None:
                raise DataError(f"{split.where} has no value for column '{column}' at {split.row_ref(i)}")
            if isinstance(text, (dict, list)):
                raise DataError(
                    f"{split.where} holds a JSON {type(text).__name__} in text column '{column}' at {split.row_ref(i)}"
                )
            if not str(text).strip():
                # A blank text scores as the prompt alone: it is a broken row, not an example.
                raise DataError(f"{split.where} has a blank text in column '{column}' at {split.row_ref(i)}")
            fields[field] = str(text)
        label = _label_index(row.get(label_column), index_of, by_index, label_base, split, i)
        examples.append(Example(fields=fields, label=label))
    return tuple(examples)


def _label_index(
    value: Any, index_of: dict[str, int], by_index: bool, label_base: int, split: RawSplit, i: int
) -> int:
    # A matching name wins over an integer reading, so label names that are
    # themselves numbers ("1".."5" star ratings, or names inferred from 1-based
    # integer labels) keep their meaning whether the file stores "3" or 3. Such
    # names take no index reading at all: "1" cannot be both a name and index 1.
    if isinstance(value, str) and value in index_of:  # the common case, decided without parsing
        return index_of[value]
    as_int = _as_int(value)
    key = value.strip() if isinstance(value, str) else (str(as_int) if as_int is not None else None)
    if key in index_of:
        return index_of[key]
    names = list(index_of)
    if by_index and as_int is not None and 0 <= as_int - label_base < len(index_of):
        return as_int - label_base
    shown = value.strip() if isinstance(value, str) else value
    hint = (
        f" (or an index {label_base}..{label_base + len(names) - 1})"
        if by_index and as_int is not None
        else ""
    )
    raise DataError(
        f"label value '{shown}' in {split.where} is not one of the label names {names}{hint}; at {split.row_ref(i)}"
    )
