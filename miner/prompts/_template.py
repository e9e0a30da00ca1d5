"""A small template parser.

Templates are plain text with slots in braces:

- ``{name}``        a text field of the task (``{sentence}``, ``{question}``, ...)
- ``{answer}``      the answer slot, where the verbalizer's words go
- ``{trigger}``     one trigger token (AutoPrompt); ``{trigger:5}`` is five of them
- ``{soft}``        one continuous soft token; ``{soft:10}`` is ten of them
- ``{{`` / ``}}``   literal braces

The parser never evaluates anything: a slot is a bare identifier, optionally followed
by ``:COUNT``. Anything else inside braces is an error naming the offending text. A
template holds at most :data:`MAX_SLOTS` trigger and soft slots in all (far more than any
model's positions; ``compile_prompt`` then checks the template against the model's length).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from miner.errors import PromptError

ANSWER = "answer"
TRIGGER = "trigger"
SOFT = "soft"
_RESERVED = {ANSWER, TRIGGER, SOFT}
MAX_SLOTS = 4096  # trigger + soft slots in one template: an absolute bound, whatever the model
_SLOT = re.compile(r"([A-Za-z_][A-Za-z0-9_\-]*)(?::(\d+))?$")


@dataclass(frozen=True)
class Literal:
    text: str


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Answer:
    pass


@dataclass(frozen=True)
class Trigger:
    index: int  # position among the template's trigger tokens


@dataclass(frozen=True)
class Soft:
    index: int  # position among the template's soft tokens


Segment = Literal | Field | Answer | Trigger | Soft


@dataclass(frozen=True)
class Template:
    """A parsed template: a sequence of segments with exactly one answer slot."""

    text: str
    segments: tuple[Segment, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.name for s in self.segments if isinstance(s, Field)))

    @property
    def n_triggers(self) -> int:
        return sum(isinstance(s, Trigger) for s in self.segments)

    @property
    def n_soft(self) -> int:
        return sum(isinstance(s, Soft) for s in self.segments)

    @property
    def answer_index(self) -> int:
        return next(i for i, s in enumerate(self.segments) if isinstance(s, Answer))

    @property
    def answer_at_end(self) -> bool:
        """True when nothing but whitespace follows the answer slot."""
        tail = self.segments[self.answer_index + 1 :]
        return all(isinstance(s, Literal) and not s.text.strip() for s in tail)

    def check_has_field(self) -> None:
        """Raise :class:`PromptError` unless the template has a text field slot (whatever its name)."""
        if not self.fields:
            raise PromptError(
                f"template {self.text!r} has no text field slot (e.g. {{sentence}}): every example would get the same score"
            )

    def check_fields(self, text_fields: tuple[str, ...] | list[str]) -> None:
        """Raise :class:`PromptError` unless the template uses one or more of ``text_fields`` and no other field."""
        shown = ", ".join("{" + f + "}" for f in text_fields) or "(none)"
        unknown = [f for f in self.fields if f not in text_fields]
        if unknown:
            raise PromptError(
                f"template {self.text!r} uses unknown field {{{unknown[0]}}}; the task's text fields are {shown}"
            )
        if not self.fields:
            raise PromptError(
                f"template {self.text!r} has no text field slot: use one of the task's text fields {shown}"
            )

    def render(self, fields: dict[str, str], answer: str = "____") -> str:
        """Human-readable rendering (triggers and soft tokens shown as markers)."""
        out = []
        for s in self.segments:
            if isinstance(s, Literal):
                out.append(s.text)
            elif isinstance(s, Field):
                out.append(fields[s.name])
            elif isinstance(s, Answer):
                out.append(answer)
            elif isinstance(s, Trigger):
                out.append("[T]")
            else:
                out.append("[P]")
        return "".join(out)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_template(text: str) -> Template:
    """Parse ``text`` into a :class:`Template`; raise :class:`PromptError` if invalid."""
    if not isinstance(text, str) or not text.strip():
        raise PromptError("template is empty")
    segments: list[Segment] = []
    buf: list[str] = []
    n_trig = n_soft = n_answer = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "{" and text.startswith("{{", i):
            buf.append("{")
            i += 2
            continue
        if ch == "}" and text.startswith("}}", i):
            buf.append("}")
            i += 2
            continue
        if ch == "}":
            raise PromptError(
                f"template {_short(text)!r} has an unmatched '}}' at character {i} (write '}}}}' for a literal brace)"
            )
        if ch != "{":
            buf.append(ch)
            i += 1
            continue
        end = text.find("}", i + 1)
        if end < 0:
            raise PromptError(f"template {_short(text)!r} has an unclosed '{{' at character {i}")
        body = text[i + 1 : end].strip()
        m = _SLOT.match(body)
        if not m:
            raise PromptError(
                f"template {_short(text)!r} has an invalid slot {{{_short(body)}}}: expected {{name}} or {{trigger:N}}"
            )
        name, count = m.group(1), m.group(2)
        if buf:
            segments.append(Literal("".join(buf)))
            buf = []
        if count is not None and name not in (TRIGGER, SOFT):
            raise PromptError(
                f"template {_short(text)!r}: only {{trigger:N}} and {{soft:N}} take a count, not {{{body}}}"
            )
        if count is None:
            n = 1
        elif len(count.lstrip("0")) > len(str(MAX_SLOTS)):
            n = (
                MAX_SLOTS + 1
            )  # compared as digits: a count of thousands of digits is refused, never converted
        else:
            n = int(count)
        if n < 1:
            raise PromptError(f"template {_short(text)!r}: slot {{{body}}} needs a count of at least 1")
        if name in (TRIGGER, SOFT) and n_trig + n_soft + n > MAX_SLOTS:
            raise PromptError(
                f"template {_short(text)!r} asks for more than {MAX_SLOTS} trigger and soft slots in all (slot {{{_short(body)}}})"
            )
        if name == ANSWER:
            n_answer += 1
            segments.append(Answer())
        elif name == TRIGGER:
            segments.extend(Trigger(n_trig + j) for j in range(n))
            n_trig += n
        elif name == SOFT:
            segments.extend(Soft(n_soft + j) for j in range(n))
            n_soft += n
        else:
            segments.append(Field(name))
        i = end + 1
    if buf:
        segments.append(Literal("".join(buf)))
    if n_answer == 0:
        raise PromptError(
            f"template {_short(text)!r} has no answer slot: add {{answer}} where the label word goes"
        )
    if n_answer > 1:
        raise PromptError(
            f"template {_short(text)!r} has {n_answer} answer slots; exactly one {{answer}} is allowed"
        )
    return Template(text=text, segments=tuple(segments))


def with_demonstrations(
    template: str, examples: Sequence[Any], answers: Sequence[str], separator: str = "\n\n"
) -> str:
    """``template`` with ``examples`` put before the query (LM-BFF's in-context demonstrations).

    Each example (``.fields``, ``.label``) is rendered with the template itself, its answer slot
    filled with ``answers[label]``, and followed by ``separator``. The demonstrations are literal
    text of the returned template (braces escaped); its own slots are unchanged.
    """
    parsed = parse_template(template)
    text = "".join(
        parsed.render({f: str(e.fields[f]).strip() for f in parsed.fields}, answer=answers[e.label])
        + separator
        for e in examples
    )
    return text.replace("{", "{{").replace("}", "}}") + template
