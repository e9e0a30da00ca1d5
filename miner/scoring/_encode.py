"""Turning a prompt and an example into token ids around the answer slot.

Text between non-text slots is rendered to one string and tokenized as a whole, so a
filled template tokenizes as the user would type it. A single space right before the
answer slot moves onto the answer words (``"It was {answer}"`` scores ``" great"``),
which is how BPE tokenizers see a word in running text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

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


def compile_prompt(prompt: Prompt, backend: Backend) -> CompiledPrompt:
    tpl = prompt.parsed
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
        if not 0 <= t < backend.vocab_size:
            raise PromptError(f"trigger token id {t} is outside the vocabulary (size {backend.vocab_size})")
    return CompiledPrompt(prompt, tpl, tuple(word_ids), space, tpl.answer_at_end)


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
    fields = {k: (v or "").strip() for k, v in fields.items()}
    for _ in range(4):
        enc = _encode_once(cp, backend, fields)
        excess = len(enc.prefix) + len(enc.suffix) + cp.max_word_len - backend.max_length
        if excess <= 0:
            return enc
        # Too long for the model: cut the longest text field from its end.
        longest = max(cp.template.fields, key=lambda f: len(fields[f]))
        toks = backend.tokenize(fields[longest])
        keep = max(0, len(toks) - excess - 2)
        fields = {**fields, longest: backend.decode(toks[:keep]).strip()}
    return enc


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
