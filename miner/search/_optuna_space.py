"""The template half of the ``optuna`` search space: prompts assembled from parts.

A template is ``<prefix><text fields><punctuation><separator><infix> {answer}`` (the answer
at the end, which a causal LM needs for cached answer distributions), or, for masked LMs
when asked, ``<prefix><infix> {answer}.<separator><text fields><punctuation>``; or one of the
user's full templates. Parts are sampled as separate categorical parameters so that TPE
can learn which prefix or infix helps independently of the others.

Unset ``prefixes`` / ``infixes`` (None) are the zero-configuration parts of
:mod:`miner.search._defaults`: a small generic set plus fragments made from the task's field
and label names, so a searcher given only a task needs no cue phrases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from miner.errors import ConfigError, PromptError
from miner.prompts import Prompt, parse_template
from miner.search._defaults import template_parts

PARTS = "<parts>"  # the value of the "template" parameter that means "assemble from parts"


def _lit(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


@dataclass(frozen=True)
class TemplateSpace:
    full: tuple[str, ...]  # user templates (already validated)
    prefixes: tuple[str, ...]
    separators: tuple[str, ...]
    punctuations: tuple[str, ...]
    infixes: tuple[str, ...]
    positions: tuple[str, ...]  # "end", and "start" for masked LMs
    text_fields: tuple[str, ...]

    def assemble(self, prefix: str, sep: str, punct: str, infix: str, position: str) -> str:
        joiner = "\n" if "\n" in sep else " "
        text = joiner.join("{" + f + "}" for f in self.text_fields) + _lit(punct)
        if position == "start":
            return f"{_lit(prefix)}{_lit(infix)} {{answer}}.{_lit(sep)}{text}"
        if not infix:
            return f"{_lit(prefix)}{text}{_lit(sep)}{{answer}}"
        return f"{_lit(prefix)}{text}{_lit(sep)}{_lit(infix)} {{answer}}"

    def sample(self, choose) -> str:
        """``choose(name, options)`` is the trial's categorical suggestion."""
        if self.full:
            pick = choose("template", (PARTS,) + self.full) if self.infixes else choose("template", self.full)
            if pick != PARTS:
                return pick
        return self.assemble(
            choose("prefix", self.prefixes),
            choose("separator", self.separators),
            choose("punctuation", self.punctuations),
            choose("infix", self.infixes),
            choose("position", self.positions),
        )


def build_space(
    searcher,
    kind: str,
    text_fields: Sequence[str],
    seed_prompts: Sequence[Prompt],
    log,
    label_names: Sequence[str] | None = None,
) -> TemplateSpace:
    """Validate the configured parts and templates; a bad user template is a one-line error.

    Unset (None) ``prefixes`` and ``infixes`` are :func:`miner.search._defaults.template_parts` of the
    task: ``label_names`` when given, else the seed prompts' labels (a job's prompts are built on the
    task's label names), else the generic fragments alone.
    """
    full: list[str] = []
    for i, t in enumerate(searcher.templates):
        try:
            tpl = parse_template(t)
            tpl.check_fields(tuple(text_fields))
        except PromptError as exc:
            raise ConfigError(f"optuna searcher: templates[{i}]: {exc}") from None
        if tpl.n_triggers or tpl.n_soft:
            raise ConfigError(
                f"optuna searcher: templates[{i}] has trigger or soft slots; give plain templates"
            )
        if kind == "causal" and not tpl.answer_at_end:
            raise ConfigError(
                f"optuna searcher: templates[{i}] {t!r} needs {{answer}} at the end for a causal LM"
            )
        full.append(t)
    if searcher.use_seed_templates:
        for p in seed_prompts:
            tpl = p.parsed
            if tpl.n_triggers or tpl.n_soft or (kind == "causal" and not tpl.answer_at_end):
                log.info(
                    "optuna: seed template %r skipped (answer not at the end, or trigger/soft slots)",
                    p.template,
                )
                continue
            full.append(p.template)
    full = list(dict.fromkeys(full))
    positions = ["end"] + (["start"] if kind == "masked" and searcher.answer_first else [])
    prefixes, infixes = searcher.prefixes, searcher.infixes
    if prefixes is None or infixes is None:
        if label_names is None:
            label_names = seed_prompts[0].verbalizer.labels if seed_prompts else ()
        auto_prefixes, auto_infixes = template_parts(text_fields, label_names)
        prefixes = auto_prefixes if prefixes is None else prefixes
        infixes = auto_infixes if infixes is None else infixes
        log.info("optuna: template parts: prefixes %r, infixes %r", prefixes, infixes)
    if not infixes and not full:
        raise ConfigError("optuna searcher: give 'infixes' or 'templates' (there is no template to search)")
    return TemplateSpace(
        tuple(full),
        tuple(prefixes),
        tuple(searcher.separators),
        tuple(searcher.punctuations),
        tuple(infixes),
        tuple(positions),
        tuple(text_fields),
    )
