"""What the scorer asks the model: one request per (example, answer word), deduplicated and cached."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    """One question to the model. Its *answer* (what :meth:`Scorer.label_scores` reads): ``next``, the
    log-probabilities ``[V]`` of the token after ``ids``; ``cont``, the summed log-probability of the
    last ``n`` tokens of ``ids``; ``mask``, the log-probabilities ``[len(mask_pos), V]`` at the masks."""

    kind: str  # "next" | "cont" | "mask"
    ids: tuple[int, ...]
    n: int = 0  # cont: number of scored tokens at the end
    mask_pos: tuple[int, ...] = ()
    soft: tuple[tuple[int, int], ...] = ()  # (position, soft index)
    stem: int = field(
        default=0, compare=False
    )  # leading tokens whose key/value cache may be reused (_stems.py)
    prefix: int = field(default=0, compare=False)  # leading tokens run once in a prefix pass (_prefix.py)
