"""Turning a prompt and an example into token ids around the answer slot.

Text between non-text slots is rendered to one string and tokenized as a whole, so a
filled template tokenizes as the user would type it. A single space right before the
answer slot moves onto the answer words (``"It was {answer}"`` scores ``" great"``),
which is how BPE tokenizers see a word in running text.

Lengths: ``compile_prompt`` refuses a prompt whose own tokens (template text, trigger and
soft slots, special tokens and the longest answer word) do not fit the model
(:func:`max_tokens`). An example too long for what is left has its text fields cut from
their end, the longest field first, so that every example is scored; the template's own
tokens are never cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from miner.errors import PromptError
from miner.models import Backend
from miner.prompts import Field, Literal, Prompt, Soft, Template, Trigger

TokenIds = tuple[int, ...]


@dataclass(frozen=True)
class CompiledPrompt:
    prompt: Prompt
    template: Template
    word_ids: tuple[tuple[TokenIds, ...], ...]  # [label][word] -> token ids
    space_to_word: bool
    answer_at_end: bool

    @property
    def max_word_len(self) -> int:
        return max(len(w) for ws in self.word_ids for w in ws)


@dataclass(frozen=True)
class Encoded:
    prefix: TokenIds  # special lead tokens + everything before the answer slot
    suffix: TokenIds  # everything after the answer slot (+ trailing specials for masked LMs)
    prefix_soft: tuple[int, ...] = ()  # soft-token index at each soft position in prefix, by position
    prefix_soft_pos: tuple[int, ...] = ()
    suffix_soft: tuple[int, ...] = ()
    suffix_soft_pos: tuple[int, ...] = ()
    stem: int = 0  # prefix tokens before the first trigger (no soft slot among them): see _stems.py


def max_tokens(backend: Backend) -> int:
    """The most tokens one input may have: the backend's ``max_length``, within the model's positions."""
    limit = int(backend.max_length)
    config = getattr(getattr(backend, "model", None), "config", None)
    n_pos = getattr(config, "max_position_embeddings", None)
    if isinstance(n_pos, int) and n_pos > 0:
        # masked LMs of the RoBERTa family reserve two position slots (Backend keeps the same margin)
        limit = min(limit, n_pos - 2 if backend.kind == "masked" else n_pos)
    return limit


def compile_prompt(prompt: Prompt, backend: Backend) -> CompiledPrompt:
    """Tokenize a prompt's answer words and check it against the model.

    Raises :class:`PromptError` when a trigger id is outside the vocabulary, a verbalizer word
    tokenizes to nothing, or the prompt's own tokens leave no room for an example's text.
    """
    tpl = prompt.parsed
    limit = max_tokens(backend)
    if tpl.n_triggers + tpl.n_soft >= limit:  # before tokenizing anything
        raise PromptError(
            f"template {_short(prompt.template)!r} has {tpl.n_triggers + tpl.n_soft} trigger and soft slots; "
            f"model {backend.name!r} takes at most {limit} tokens"
        )
    idx = tpl.answer_index
    before = tpl.segments[idx - 1] if idx > 0 else None
    space = isinstance(before, Literal) and before.text.endswith(" ")
    word_ids = []
    for label, words in zip(prompt.verbalizer.labels, prompt.verbalizer.words):
        ids_for_label = []
        for w in words:
            ids = backend.tokenize((" " if space else "") + w)
            if not ids:
                raise PromptError(f"verbalizer word {w!r} of label {label!r} tokenizes to nothing")
            ids_for_label.append(ids)
        word_ids.append(tuple(ids_for_label))
    for t in prompt.triggers:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < backend.vocab_size:
            raise PromptError(
                f"trigger token id {t!r} is outside the vocabulary (ids 0..{backend.vocab_size - 1} of model {backend.name!r})"
            )
    cp = CompiledPrompt(prompt, tpl, tuple(word_ids), space, tpl.answer_at_end)
    empty = _encode_once(cp, backend, {f: "" for f in tpl.fields})
    own = len(empty.prefix) + len(empty.suffix) + cp.max_word_len
    if own >= limit:  # not even one token of text would fit
        raise PromptError(
            f"template {_short(prompt.template)!r} takes {own} tokens before any text (template, slots, special "
            f"tokens and the longest answer word); model {backend.name!r} takes at most {limit}"
        )
    return cp


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _render(segments, fields: Mapping[str, str], triggers, backend: Backend, strip_space: bool):
    ids: list[int] = []
    soft_idx: list[int] = []
    soft_pos: list[int] = []
    buf: list[str] = []
    stem = None  # tokens before the first trigger, when no soft slot comes earlier

    def flush() -> None:
        if buf:
            ids.extend(backend.tokenize("".join(buf)))
            buf.clear()

    for s in segments:
        if isinstance(s, Literal):
            buf.append(s.text)
        elif isinstance(s, Field):
            buf.append(fields[s.name])
        elif isinstance(s, Trigger):
            flush()
            if stem is None:
                stem = len(ids)
            ids.append(triggers[s.index])
        elif isinstance(s, Soft):
            flush()
            if stem is None:
                stem = 0
            soft_idx.append(s.index)
            soft_pos.append(len(ids))
            ids.append(backend.pad_id)  # placeholder, replaced by the soft embedding
    if strip_space and buf and buf[-1].endswith(" "):
        buf[-1] = buf[-1][:-1]
    flush()
    return ids, soft_idx, soft_pos, stem or 0


def encode(cp: CompiledPrompt, backend: Backend, fields: Mapping[str, str]) -> Encoded:
    """The token ids around the answer slot for one example (text fields cut to fit, see the module doc)."""
    fields = {k: (v or "").strip() for k, v in fields.items()}
    limit = max_tokens(backend)
    used = cp.template.fields
    for _ in range(4 + 2 * len(used)):
        enc = _encode_once(cp, backend, fields)
        excess = len(enc.prefix) + len(enc.suffix) + cp.max_word_len - limit
        if excess <= 0:
            return enc
        # Too long for the model: cut the longest text field from its end.
        longest = max(used, key=lambda f: len(fields[f]))
        if not fields[longest]:
            break
        toks = backend.tokenize(fields[longest])
        keep = max(0, len(toks) - excess - 2)
        fields = {**fields, longest: backend.decode(toks[:keep]).strip()}
    # Cutting met a tokenizer that re-merges text into more tokens: score the template alone,
    # which compile_prompt checked fits.
    return _encode_once(cp, backend, {f: "" for f in used})


def _encode_once(cp: CompiledPrompt, backend: Backend, fields: Mapping[str, str]) -> Encoded:
    segs = cp.template.segments
    i = cp.template.answer_index
    trig = cp.prompt.triggers
    pre, pre_si, pre_sp, stem = _render(segs[:i], fields, trig, backend, strip_space=cp.space_to_word)
    suf, suf_si, suf_sp, _ = _render(segs[i + 1 :], fields, trig, backend, strip_space=False)
    lead = backend.lead_ids
    prefix = tuple(lead) + tuple(pre)
    suffix = tuple(suf) + tuple(backend.trail_ids)
    return Encoded(
        prefix=prefix,
        suffix=suffix,
        prefix_soft=tuple(pre_si),
        prefix_soft_pos=tuple(p + len(lead) for p in pre_sp),
        suffix_soft=tuple(suf_si),
        suffix_soft_pos=tuple(suf_sp),
        stem=len(lead) + stem if stem else 0,
    )
