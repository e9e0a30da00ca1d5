"""Reading local data files (.csv, .tsv, .jsonl/.json) into raw rows.

Every data file is read through :func:`read_bytes_bounded`: only regular files (after
following symlinks), and never more than a size limit, so that a path to ``/dev/zero``, a
FIFO or a file that keeps growing is an error instead of a hang or an exhausted memory.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

from miner.errors import DataError
from miner.tasks._rows import RawSplit

SUPPORTED_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
DEFAULT_MAX_FILE_MB = 512
_MB = 2**20
_CHUNK = 4 * _MB


def _size(n: int) -> str:
    return f"{n / _MB:g} MB" if n >= _MB else f"{n} bytes"


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_bytes_bounded(
    path: str | Path, where: str, limit_bytes: int, *, setting: str | None = None
) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed), at most ``limit_bytes`` of them.

    Raises :class:`DataError` naming ``where`` when the path does not exist, is not a regular
    file (a directory, FIFO, device or socket: checked before opening, and again on the open
    file in case the path was swapped meanwhile), cannot be read, or holds more than
    ``limit_bytes`` bytes; ``setting`` (e.g. ``"task.max_file_mb"``) is named in that last
    message as the knob that raises the limit. The read itself stops at the limit, so a file
    that grows while it is read is never read past it.
    """
    p = Path(path)
    try:
        st = os.stat(p)  # follows symlinks: a link to /dev/zero is judged by what it points to
    except FileNotFoundError:
        raise DataError(f"{where}: file not found") from None
    except OSError as exc:
        raise DataError(f"{where}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{where} is {_kind(st.st_mode)}, not a regular file")
    too_big = f"{where} is larger than the {_size(limit_bytes)} limit" + (
        f" (raise {setting})" if setting else ""
    )
    if st.st_size > limit_bytes:
        raise DataError(too_big)
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, opening it must not wait for a writer.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise DataError(f"{where}: cannot read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb", buffering=0) as fh:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DataError(f"{where} is {_kind(mode)}, not a regular file")
        chunks: list[bytes] = []
        total = 0
        try:
            while total <= limit_bytes:
                chunk = fh.read(min(_CHUNK, limit_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        except OSError as exc:
            raise DataError(f"{where}: cannot read ({exc.strerror or exc})") from None
    if total > limit_bytes:
        raise DataError(too_big)
    return b"".join(chunks)


def decode_utf8(data: bytes, where: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 4]
        raise DataError(f"{where} is not valid UTF-8: byte offset {exc.start} ({bad!r}...)") from exc
    return text.removeprefix("\ufeff")  # a BOM is not part of the first column name


def read_table(path: str | Path, max_bytes: int = DEFAULT_MAX_FILE_MB * _MB) -> RawSplit:
    """Read one data file (a regular file of at most ``max_bytes``); the first row of .csv/.tsv is the header."""
    path = Path(path)
    where = str(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{where}: unsupported file type '{suffix}'; use one of {list(SUPPORTED_SUFFIXES)}")
    if not os.path.lexists(path):
        raise DataError(f"data file not found: {where}")
    data = read_bytes_bounded(path, f"data file {where}", max_bytes, setting="task.max_file_mb")
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
            raise DataError(
                f"{where} line {n} has {len(cells)} tab-separated fields, the header has {len(header)}"
            )
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
            raise DataError(
                f"{where} line {n} has {len(row)} comma-separated fields, the header has {len(header)}"
            )
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
        except (
            ValueError,
            RecursionError,
        ) as exc:  # an integer of thousands of digits; nesting past the stack
            raise DataError(f"{where}: unreadable JSON ({_first_line(exc)})") from None
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
            except (
                ValueError,
                RecursionError,
            ) as exc:  # an integer of thousands of digits; nesting past the stack
                raise DataError(f"{where} line {n}: unreadable JSON ({_first_line(exc)})") from None
        ref = "line"
    columns: dict[str, None] = {}  # ordered union of keys
    for n, record in records:
        if not isinstance(record, dict):
            raise DataError(f"{where} {ref} {n}: expected a JSON object, got {type(record).__name__}")
        columns.update(dict.fromkeys(record))
    numbers = tuple(n for n, _ in records) if ref == "line" else None  # array items are reported as rows
    return RawSplit(where, tuple(columns), tuple(r for _, r in records), numbers)


def _first_line(exc: BaseException) -> str:
    text = str(exc).split("\n")[0].split(": value has")[0]
    return text[:200] or type(exc).__name__


def _check_header(header: list[str], where: str) -> None:
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise DataError(f"{where}: duplicate column names {duplicated} in the header")
