"""Zero-configuration defaults: prompts and template parts for a task nobody wrote prompts for.

A user on a new task should not have to invent cue phrases or label words before a searcher
runs. Everything here is built from two sources only:

- a small built-in set of generic template fragments (``GENERIC_PREFIXES``, ``GENERIC_INFIXES``):
  task-agnostic words that introduce an input or an answer, with nothing tuned to one task
  (no sentiment or review words; the searchers also run on tasks we never see);
- the task itself: its text field names (``sentence`` -> ``"Sentence: "``) and its label names,
  which become the label words (each label answered by its own name) and a fragment listing
  the label set before the answer (``"Options: world, sports, business, tech\\nAnswer:"``).

:func:`default_prompts` gives the hand-written baselines of a job whose config has no
``prompts:`` (the plain ``{text} {answer}`` with label names first), and
:func:`template_parts` the ``optuna`` searcher's template parts when its ``prefixes`` /
``infixes`` are left unset.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from miner.errors import PromptError
from miner.models import Backend
from miner.prompts import Prompt
from miner.tasks import TaskData

# Text before the input. "" keeps the bare input as a choice.
GENERIC_PREFIXES: tuple[str, ...] = ("", "Text: ", "Input: ")
# Text just before the answer slot.
GENERIC_INFIXES: tuple[str, ...] = (
    "Answer:",
    "Category:",
    "Label:",
    "It was",
    "The topic is",
    "This is about",
)
# A listed label set helps a small model only while the list stays short.
MAX_LISTED_LABELS = 10


def _lit(text: str) -> str:
    """``text`` as template literal text (braces escaped)."""
    return text.replace("{", "{{").replace("}", "}}")


def display_name(name: str) -> str:
    """A field or label name as running text: ``sci_tech`` -> ``sci tech``, ``Sci/Tech`` unchanged."""
    words = re.sub(r"[_\s]+", " ", name).strip()
    return words or name.strip() or name


def field_title(field: str) -> str:
    text = display_name(field)
    return text[:1].upper() + text[1:]


def label_words(label_names: Sequence[str]) -> dict[str, list[str]]:
    """Each label answered by its own name, as running text (``not_entailment`` -> ``not entailment``).

    When two labels would read the same after that (``a_b`` and ``a b``), the raw names are kept,
    so the verbalizer always tells the labels apart.
    """
    shown = [display_name(n) for n in label_names]
    if len({s.casefold() for s in shown}) < len(shown):
        shown = [n.strip() or n for n in label_names]
    return {n: [w] for n, w in zip(label_names, shown)}


def label_list(label_names: Sequence[str]) -> str:
    return ", ".join(ws[0] for ws in label_words(label_names).values())


def field_prefixes(text_fields: Sequence[str]) -> list[str]:
    """``"Sentence: "`` for a task whose (first) text field is ``sentence``."""
    return [f"{field_title(text_fields[0])}: "] if text_fields else []


def label_set_infixes(label_names: Sequence[str]) -> list[str]:
    """The label set spelled out before the answer, for tasks with at most ``MAX_LISTED_LABELS`` labels."""
    if not 2 <= len(label_names) <= MAX_LISTED_LABELS:
        return []
    return [f"Options: {label_list(label_names)}\nAnswer:"]


def template_parts(text_fields: Sequence[str], label_names: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(prefixes, infixes)``: the generic fragments plus the task's own (plain text, not escaped)."""
    prefixes = list(dict.fromkeys([*GENERIC_PREFIXES, *field_prefixes(text_fields)]))
    infixes = list(dict.fromkeys([*GENERIC_INFIXES, *label_set_infixes(label_names)]))
    return prefixes, infixes


def _fields(text_fields: Sequence[str], named: bool) -> str:
    if not named:
        return " ".join("{" + f + "}" for f in text_fields)
    return "\n".join(f"{_lit(field_title(f))}: {{{f}}}" for f in text_fields)


def default_templates(text_fields: Sequence[str], label_names: Sequence[str]) -> list[str]:
    """A few zero-shot templates, the plain ``{text} {answer}`` first (answers at the end: causal LMs)."""
    if not text_fields:
        raise PromptError("the task has no text fields to build default prompts from")
    plain = _fields(text_fields, named=False)
    named = _fields(text_fields, named=True)
    out = [
        f"{plain} {{answer}}",
        f"{named}\nAnswer: {{answer}}",
        f"Text: {plain}\nCategory: {{answer}}",
    ]
    listed = label_set_infixes(label_names)
    if listed:
        out.append(f"{named}\n{_lit(listed[0])} {{answer}}")
    return list(dict.fromkeys(out))


def default_prompts(task_data: TaskData, backend: Backend) -> list[Prompt]:
    """The zero-shot baselines of a job whose config has no ``prompts:``.

    Each of :func:`default_templates` with every label answered by its own name (the plain
    ``{text} {answer}`` first: the searchers that start from one seed prompt take it). Each
    prompt is checked as a config's prompts are: its fields against the task's, its words
    distinct and tokenized by the model, its length within the model's positions.
    """
    from miner.scoring import Scorer

    labels = tuple(task_data.label_names)
    fields = tuple(task_data.text_fields)
    words = label_words(labels)
    probe = Scorer(backend, progress=False)
    out = []
    for template in default_templates(fields, labels):
        try:
            prompt = Prompt.create(template, words, labels, distinct=True, meta={"default": True})
            prompt.parsed.check_fields(fields)
            probe.compile(prompt)
        except PromptError as exc:
            raise PromptError(f"default prompt {template!r} for task {task_data.name!r}: {exc}") from None
        out.append(prompt)
    return out
