"""Plain-text table of leaderboard rows, for ``miner leaderboard`` in the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from miner.errors import ConfigError

TEMPLATE_WIDTH = 50
VERBALIZER_WIDTH = 40
_NEWLINE = "⏎"
_ELLIPSIS = "…"


def _shorten(text: str, width: int) -> str:
    text = text.replace("\r\n", "\n").replace("\n", _NEWLINE)
    return text if len(text) <= width else text[: width - 1] + _ELLIPSIS


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.1f}"


def _first(prompt: Any) -> dict:
    """The prompt, or an ensemble's first member (the table shows that one and says how many there are)."""
    prompt = prompt or {}
    members = prompt.get("ensemble")
    return members[0] if isinstance(members, list) and members and isinstance(members[0], dict) else prompt


def _template(row: Any) -> str:
    template = _first(row.prompt).get("template")
    return "-" if template is None else _shorten(str(template), TEMPLATE_WIDTH)


def _verbalizer(row: Any) -> str:
    verbalizer = _first(row.prompt).get("verbalizer")
    if not isinstance(verbalizer, dict) or not verbalizer:
        return "-"
    parts = []
    for label, words in verbalizer.items():
        words = [words] if isinstance(words, str) else list(words)
        parts.append(f"{label}:{','.join(str(w) for w in words)}")
    return _shorten("|".join(parts), VERBALIZER_WIDTH)


def _options(row: Any) -> str:
    """What else shapes the prompt: an ensemble (and the searcher's pick), calibration, trigger tokens, a soft prompt."""
    prompt = row.prompt or {}
    parts = []
    if isinstance(prompt.get("ensemble"), list):
        parts.append(f"ens{len(prompt['ensemble'])}")
        prompt = _first(prompt)
    if (getattr(row, "extra", None) or {}).get("pick"):
        parts.append("pick")
    if prompt.get("calibrate"):
        parts.append("cal")
    if prompt.get("triggers"):
        parts.append(f"{len(prompt['triggers'])} trig")
    if prompt.get("soft"):
        parts.append("soft")
    return ",".join(parts) or "-"


# name -> (cell formatter, right-aligned?)
_COLUMNS: dict[str, tuple[Callable[[Any], str], bool]] = {
    "id": (lambda r: str(r.id), True),
    "task": (lambda r: str(r.task), False),
    "model": (lambda r: str(r.model), False),
    "searcher": (lambda r: str(r.searcher), False),
    "seed": (lambda r: str(r.seed), True),
    "k": (lambda r: "full" if r.k is None else str(r.k), True),
    "template": (_template, False),
    "verbalizer": (_verbalizer, False),
    "options": (_options, False),
    "train": (lambda r: _percent(r.train_score), True),
    "dev": (lambda r: _percent(r.dev_score), True),
    "test": (lambda r: _percent(r.test_score), True),
    "fwd passes": (lambda r: str(r.forward_passes), True),
    "seconds": (lambda r: f"{r.seconds:.1f}", True),
}

DEFAULT_COLUMNS: tuple[str, ...] = tuple(_COLUMNS)


def format_table(rows: Iterable[Any], columns: Sequence[str] = DEFAULT_COLUMNS) -> str:
    """Aligned plain-text table: a header, a dashed rule, one line per row.

    Scores are percentages with one decimal, ``-`` where missing; ``k`` of ``None``
    (full data) shows as ``full``. Templates are cut to ~50 characters with newlines
    shown as ⏎; verbalizers read ``neg:terrible|pos:great``.
    """
    unknown = [c for c in columns if c not in _COLUMNS]
    if unknown:
        raise ConfigError(f"unknown leaderboard column {unknown[0]!r}; known: {', '.join(_COLUMNS)}")
    cells = [[_COLUMNS[c][0](row) for c in columns] for row in rows]
    widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]

    def render(values: Sequence[str], header: bool = False) -> str:
        out = []
        for value, width, name in zip(values, widths, columns):
            right = _COLUMNS[name][1] and not header
            out.append(value.rjust(width) if right else value.ljust(width))
        return "  ".join(out).rstrip()

    lines = [render(columns, header=True), "  ".join("-" * w for w in widths)]
    lines += [render(line) for line in cells]
    return "\n".join(lines)
