"""Reading local data files (.csv, .tsv, .jsonl/.json) into raw rows."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from miner.errors import DataError
from miner.tasks._rows import RawSplit

SUPPORTED_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


def decode_utf8(data: bytes, where: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 4]
        raise DataError(f"{where} is not valid UTF-8: byte offset {exc.start} ({bad!r}...)") from exc
    return text.removeprefix("\ufeff")  # a BOM is not part of the first column name


def read_table(path: str | Path) -> RawSplit:
    """Read one data file; the first row of .csv/.tsv is the header."""
    path = Path(path)
    where = str(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{where}: unsupported file type '{suffix}'; use one of {list(SUPPORTED_SUFFIXES)}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"data file not found: {where}") from None
    except OSError as exc:
        raise DataError(f"cannot read data file {where}: {exc.strerror or exc}") from exc
    text = decode_utf8(data, where)
    if not text.strip():
        raise DataError(f"{where} is empty")
    if suffix == ".tsv":
        split = _read_tsv(text, where)
    elif suffix == ".csv":
        split = _read_csv(text, where)
    else:
        split = _read_json_lines(text, where)
    if not split.rows:
        raise DataError(f"{where} is empty (a header but no data rows)")
    return split


def _unquote(field: str) -> str:
    # Some rows of the LM-BFF TSVs are CSV-quoted ("..."" conan ""..."), others
    # hold bare, unbalanced quotes (' " brown sugar " admirably ...'). A quote-aware
    # parser would merge rows after an unbalanced quote, so the file is split on
    # lines and only fields that are exactly one well-formed quoted value are unquoted.
    if len(field) >= 2 and field[0] == field[-1] == '"':
        inner = field[1:-1]
        if '"' not in inner.replace('""', ""):
            return inner.replace('""', '"')
    return field


def _read_tsv(text: str, where: str) -> RawSplit:
    lines = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), start=1)]
    lines = [(n, line) for n, line in lines if line.strip()]
    header = [_unquote(c).strip() for c in lines[0][1].split("\t")]
    _check_header(header, where)
    rows, numbers = [], []
    for n, line in lines[1:]:
        cells = line.split("\t")
        if len(cells) != len(header):
            raise DataError(f"{where} line {n} has {len(cells)} tab-separated fields, the header has {len(header)}")
        rows.append(dict(zip(header, (_unquote(c) for c in cells), strict=True)))
        numbers.append(n)
    return RawSplit(where, tuple(header), tuple(rows), tuple(numbers))


def _read_csv(text: str, where: str) -> RawSplit:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        records = [(reader.line_num, row) for row in reader if row]
    except csv.Error as exc:
        raise DataError(f"{where} line {reader.line_num}: malformed CSV ({exc})") from exc
    header = [c.strip() for c in records[0][1]]
    _check_header(header, where)
    rows, numbers = [], []
    for n, row in records[1:]:
        if len(row) != len(header):
            raise DataError(f"{where} line {n} has {len(row)} comma-separated fields, the header has {len(header)}")
        rows.append(dict(zip(header, row, strict=True)))
        numbers.append(n)
    return RawSplit(where, tuple(header), tuple(rows), tuple(numbers))


def _read_json_lines(text: str, where: str) -> RawSplit:
    stripped = text.lstrip()
    if stripped.startswith("["):
        # Tolerate a single JSON array of objects in a .json file as well.
        try:
            records = list(enumerate(json.loads(stripped), start=1))
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
        ref = "item"
    else:
        records = []
        for n, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{where} line {n}: invalid JSON ({exc.msg})") from exc
        ref = "line"
    columns: dict[str, None] = {}  # ordered union of keys
    for n, record in records:
        if not isinstance(record, dict):
            raise DataError(f"{where} {ref} {n}: expected a JSON object, got {type(record).__name__}")
        columns.update(dict.fromkeys(record))
    numbers = tuple(n for n, _ in records) if ref == "line" else None  # array items are reported as rows
    return RawSplit(where, tuple(columns), tuple(r for _, r in records), numbers)


def _check_header(header: list[str], where: str) -> None:
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise DataError(f"{where}: duplicate column names {duplicated} in the header")
