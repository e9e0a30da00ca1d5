"""Prompts as plain data: a template, a verbalizer and a few options.

A :class:`Prompt` round-trips through JSON (``to_dict`` / ``from_dict``) and has a
stable ``key`` used to deduplicate candidates across a search.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from miner.errors import PromptError
from miner.prompts._template import Template, parse_template


@dataclass(frozen=True)
class Verbalizer:
    """Label -> answer words, in the task's label order. Each word may be several tokens."""

    labels: tuple[str, ...]
    words: tuple[tuple[str, ...], ...]

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Any], label_names: Sequence[str] | None = None, *, distinct: bool = True
    ) -> Verbalizer:
        """The verbalizer of ``mapping`` (label -> a word or a list of words), in ``label_names`` order.

        ``distinct``: two labels with the same words (in any order, ignoring surrounding spaces) are an error, as the
        model could never tell them apart; searchers' internal probes, whose labels share a placeholder
        word on purpose, pass False.
        """
        if not isinstance(mapping, Mapping) or not mapping:
            raise PromptError("verbalizer is empty: map every label to at least one answer word")
        labels = tuple(label_names) if label_names is not None else tuple(mapping)
        odd = next((k for k in mapping if not isinstance(k, str)), None)
        if odd is not None:
            raise PromptError(
                f"verbalizer label {odd!r} is not a string: labels are names, e.g. {{'positive': 'great'}}"
            )
        unknown = [k for k in mapping if k not in labels]
        if unknown:
            raise PromptError(f"verbalizer names unknown label {unknown[0]!r}; the labels are {list(labels)}")
        words = []
        for label in labels:
            if label not in mapping:
                raise PromptError(f"verbalizer has no words for label {label!r}")
            value = mapping[label]
            ws = (
                (value,)
                if isinstance(value, str)
                else tuple(value)
                if isinstance(value, (list, tuple))
                else ()
            )
            if not ws or any(not isinstance(w, str) for w in ws):
                raise PromptError(f"verbalizer label {label!r} needs a list of words, got {value!r}")
            if any(not w.strip() for w in ws):
                raise PromptError(f"verbalizer label {label!r} has an empty word")
            if len(set(ws)) != len(ws):
                raise PromptError(f"verbalizer label {label!r} repeats a word: {list(ws)}")
            words.append(tuple(ws))
        if distinct:
            owner: dict[tuple[str, ...], str] = {}
            for label, ws in zip(labels, words):
                key = tuple(sorted(w.strip() for w in ws))  # the order of a label's words changes nothing
                if key in owner:
                    raise PromptError(
                        f"verbalizer gives labels {owner[key]!r} and {label!r} the same words {list(key)}: "
                        "the model could never tell them apart"
                    )
                owner[key] = label
        return cls(labels=labels, words=tuple(words))

    def to_dict(self) -> dict[str, list[str]]:
        return {label: list(ws) for label, ws in zip(self.labels, self.words)}

    def short(self) -> str:
        return " | ".join(f"{label}: {'/'.join(ws)}" for label, ws in zip(self.labels, self.words))


@dataclass(frozen=True)
class Prompt:
    """A discrete prompt (or the discrete part of a soft prompt).

    ``triggers`` holds token ids for the template's ``{trigger}`` slots; ``soft`` names a
    stored soft-prompt tensor for its ``{soft}`` slots; ``calibrate`` applies content-free
    calibration (Zhao et al. 2021) when scoring.
    """

    template: str
    verbalizer: Verbalizer
    triggers: tuple[int, ...] = ()
    calibrate: bool = False
    soft: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        parsed = self.parsed  # validates
        if not isinstance(self.triggers, tuple):
            raise PromptError(
                f"trigger tokens must be a tuple of token ids, got {type(self.triggers).__name__}"
            )
        bad = next((t for t in self.triggers if isinstance(t, bool) or not isinstance(t, int) or t < 0), None)
        if bad is not None:
            raise PromptError(f"trigger token {bad!r} is not a token id (a non-negative integer)")
        if parsed.n_triggers != len(self.triggers):
            raise PromptError(
                f"template {self.template!r} has {parsed.n_triggers} trigger slots but {len(self.triggers)} trigger tokens were given"
            )
        if parsed.n_soft and self.soft is None:
            raise PromptError(f"template {self.template!r} has soft-token slots but no soft prompt tensor")

    @property
    def parsed(self) -> Template:
        return _parse_cached(self.template)

    @classmethod
    def create(
        cls,
        template: str,
        verbalizer: Mapping[str, Any],
        label_names: Sequence[str] | None = None,
        *,
        distinct: bool = False,
        **kw: Any,
    ) -> Prompt:
        """A prompt from a template and a label -> words mapping.

        ``distinct=True`` refuses two labels with the same words (see :meth:`Verbalizer.from_mapping`):
        pass it for prompts a user wrote (the config's prompts are checked so at parse time, and
        :meth:`from_dict` always checks). The default is False because searchers build probe prompts
        whose labels share one placeholder word.
        """
        return cls(
            template=template,
            verbalizer=Verbalizer.from_mapping(verbalizer, label_names, distinct=distinct),
            **kw,
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"template": self.template, "verbalizer": self.verbalizer.to_dict()}
        if self.triggers:
            d["triggers"] = list(self.triggers)
        if self.calibrate:
            d["calibrate"] = True
        if self.soft is not None:
            d["soft"] = self.soft
        if self.meta:
            d["meta"] = dict(self.meta)
        return d

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], label_names: Sequence[str] | None = None, *, distinct: bool = False
    ) -> Prompt:
        """A prompt from its JSON form; a ``{"ensemble": [...]}`` dict gives a :class:`PromptEnsemble`.

        Every value is type-checked (a :class:`PromptError`, never a ``ValueError``). ``distinct=True``
        refuses two labels with the same words: pass it for prompts a user wrote; stored rows and
        exports are read back as they were written.
        """
        if not isinstance(d, Mapping):
            raise PromptError(f"a prompt must be a mapping, got {type(d).__name__}")
        if "ensemble" in d:
            return PromptEnsemble.from_dict(d, label_names)  # type: ignore[return-value]
        known = {"template", "verbalizer", "triggers", "calibrate", "soft", "meta"}
        extra = set(d) - known
        if extra:
            raise PromptError(f"prompt has unknown key {sorted(extra)[0]!r} (known: {sorted(known)})")
        if "template" not in d or "verbalizer" not in d:
            raise PromptError("prompt needs both 'template' and 'verbalizer'")
        triggers = d.get("triggers", ())
        if not isinstance(triggers, (list, tuple)):
            raise PromptError(f"prompt 'triggers' must be a list of token ids, got {type(triggers).__name__}")
        calibrate = d.get("calibrate", False)
        if not isinstance(calibrate, bool):
            raise PromptError(f"prompt 'calibrate' must be true or false, got {calibrate!r}")
        soft = d.get("soft")
        if soft is not None and not isinstance(soft, str):
            raise PromptError(
                f"prompt 'soft' must name a soft-prompt tensor (a string), got {type(soft).__name__}"
            )
        meta = d.get("meta", {})
        if not isinstance(meta, Mapping):
            raise PromptError(f"prompt 'meta' must be a mapping, got {type(meta).__name__}")
        return cls.create(
            d["template"],
            d["verbalizer"],
            label_names,
            distinct=distinct,
            triggers=tuple(triggers),
            calibrate=calibrate,
            soft=soft,
            meta=dict(meta),
        )

    @property
    def key(self) -> str:
        """Stable identity for deduplication (ignores ``meta``)."""
        d = self.to_dict()
        d.pop("meta", None)
        return _digest(d)

    def with_(self, **changes: Any) -> Prompt:
        from dataclasses import replace

        return replace(self, **changes)

    def describe(self) -> str:
        cal = " [calibrated]" if self.calibrate else ""
        return f"{self.template!r} ({self.verbalizer.short()}){cal}"


@dataclass(frozen=True)
class PromptEnsemble:
    """Several discrete prompts whose label probabilities are averaged (a prompt ensemble, as in PET).

    Each member is scored as usual (with its own calibration); the ensemble's label
    distribution is the mean of the members' distributions, or their ``weights``-weighted mean
    (positive, summing to 1; the runner's learned ensemble, docs/selection.md). It plays a prompt's
    part for the scorer, the runner, the leaderboard and export: ``to_dict`` is
    ``{"ensemble": [...]}`` (plus ``"weights": [...]`` when weighted).
    """

    members: tuple[Prompt, ...]
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    weights: tuple[float, ...] | None = None  # None: uniform

    # a prompt's other attributes, for code that asks any prompt
    triggers: tuple[int, ...] = field(default=(), init=False, compare=False)
    calibrate: bool = field(default=False, init=False, compare=False)
    soft: None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise PromptError(f"a prompt ensemble needs at least 2 members, got {len(self.members)}")
        if any(not isinstance(m, Prompt) for m in self.members):
            raise PromptError("prompt ensemble members must be prompts (ensembles do not nest)")
        labels = self.members[0].verbalizer.labels
        for m in self.members:
            if m.verbalizer.labels != labels:
                raise PromptError(
                    f"prompt ensemble members disagree on the labels: {list(labels)} vs {list(m.verbalizer.labels)}"
                )
            if m.soft is not None or m.parsed.n_soft:
                raise PromptError(
                    f"prompt ensembles take discrete prompts only; {m.template!r} is a soft prompt"
                )
        if len({m.key for m in self.members}) != len(self.members):
            raise PromptError("prompt ensemble repeats a member")
        if self.weights is not None:
            import math

            w = self.weights
            if not isinstance(w, tuple) or len(w) != len(self.members):
                raise PromptError(
                    f"prompt ensemble weights must be a tuple of one weight per member ({len(self.members)})"
                )
            if any(
                isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0
                for x in w
            ):
                raise PromptError(
                    f"prompt ensemble weights must be finite non-negative numbers, got {list(w)}"
                )
            if abs(sum(w) - 1.0) > 1e-6:
                raise PromptError(f"prompt ensemble weights must sum to 1, got {sum(w)!r}")

    @property
    def verbalizer(self) -> Verbalizer:
        return self.members[0].verbalizer

    @property
    def template(self) -> str:
        """The first member's template (for display; each member keeps its own)."""
        return self.members[0].template

    @property
    def parsed(self) -> Template:
        return self.members[0].parsed

    @property
    def fields(self) -> tuple[str, ...]:
        """The text fields any member uses, in first-seen order."""
        return tuple(dict.fromkeys(f for m in self.members for f in m.parsed.fields))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ensemble": [m.to_dict() for m in self.members]}
        if self.weights is not None:
            d["weights"] = list(self.weights)
        if self.meta:
            d["meta"] = dict(self.meta)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], label_names: Sequence[str] | None = None) -> PromptEnsemble:
        extra = set(d) - {"ensemble", "meta", "weights"}
        if extra:
            raise PromptError(
                f"prompt ensemble has unknown key {sorted(extra)[0]!r} (known: ['ensemble', 'meta', 'weights'])"
            )
        weights = d.get("weights")
        if weights is not None:
            if not isinstance(weights, Sequence) or isinstance(weights, str):
                raise PromptError("prompt ensemble 'weights' must be a list of numbers")
            weights = tuple(weights)
        members = d["ensemble"]
        if not isinstance(members, Sequence) or isinstance(members, str):
            raise PromptError("'ensemble' must be a list of prompts")
        # a nested ensemble comes back as a PromptEnsemble, which __post_init__ rejects
        return cls(
            tuple(Prompt.from_dict(m, label_names) for m in members),
            meta=dict(d.get("meta", {})),
            weights=weights,
        )

    @property
    def key(self) -> str:
        """Stable identity for deduplication (ignores ``meta``, its own and its members')."""
        d = self.to_dict()
        d.pop("meta", None)
        for m in d["ensemble"]:
            m.pop("meta", None)
        return _digest(d)

    def with_(self, **changes: Any) -> PromptEnsemble:
        from dataclasses import replace

        return replace(self, **changes)

    def describe(self) -> str:
        how = "" if self.weights is None else " (weights " + ", ".join(f"{w:.2f}" for w in self.weights) + ")"
        return f"ensemble of {len(self.members)}{how}: " + "; ".join(m.describe() for m in self.members)


def _digest(d: Mapping[str, Any]) -> str:
    blob = json.dumps(d, sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


from functools import lru_cache  # noqa: E402


@lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Template:
    return parse_template(text)
