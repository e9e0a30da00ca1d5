"""``paraphrase``: rewrite seed templates into variants that keep their slots.

Two operators, both proposing every candidate to ``evaluate`` (the runner scores it on train and dev):

- ``evo`` (EvoPrompt's GA, Guo et al. 2024): a causal LM is the crossover and mutation operator. The
  population starts from the seeds (the config's prompts, optionally the leaderboard's best rows for the
  same task, model, seed and k), filled up to ``population`` with the generator's paraphrases of them;
  then for ``generations`` rounds two parents are drawn by dev score (roulette wheel or tournament), the
  generator is asked in one instruction for a crossover of their templates followed by a mutation, the
  children are scored and the best ``population`` of parents and children are kept. Templates are shown
  to the generator with their slots written as ``[X]`` (the text field; ``[X1]``, ``[X2]``... for
  several) and ``[Y]`` (the answer), LAMA's notation, which SmolLM2-135M keeps more often than braces or
  named slots (docs/searchers/paraphrase.md).
- ``edit`` (GrIPS-style, Prasad et al. 2023, at the word level): delete a word, swap two words, replace
  one by a WordNet synonym (read from Debian's ``wordnet-base`` files), or add a word taken from the other
  seeds; each round edits the best prompt so far, and stops after ``patience`` rounds without a gain.

A variant that loses a slot, repeats one, or moves the answer slot to another position class (end, start,
middle) is rejected and counted by reason; the counts go into every row's extra and a final log line.
The generator's passes are charged to the job's cost counter (the same unit as scoring, refused by the
same budget) and shown apart in each row's ``extra["generation"]``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any
from typing import Literal as Lit

import numpy as np
from pydantic import Field

from miner.errors import ConfigError, ModelLoadError, PromptError
from miner.models import Backend
from miner.prompts import Answer, Prompt, parse_template
from miner.prompts import Field as FieldSlot
from miner.prompts import Literal as TextPart
from miner.scoring import Cost
from miner.search._base import Capabilities, Evaluate, Evaluation, SearchContext, Searcher
from miner.search._registry import register_searcher

# --------------------------------------------------------------------------------------------- slots
ANSWER_MARK = "Y"
_PLACEHOLDER = re.compile(r"[\[{<]\s*(X\d*|Y)\s*[\]}>]", re.IGNORECASE)


def _segments(template: str) -> list[tuple[str, str]]:
    """The template as ``(kind, value)`` units: ("text", literal) or ("slot", field name / "answer")."""
    out: list[tuple[str, str]] = []
    for s in parse_template(template).segments:
        if isinstance(s, TextPart):
            out.append(("text", s.text))
        elif isinstance(s, FieldSlot):
            out.append(("slot", s.name))
        elif isinstance(s, Answer):
            out.append(("slot", "answer"))
        else:
            raise PromptError(f"template {template!r} has trigger or soft slots: it cannot be paraphrased")
    return out


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _join(units: Sequence[tuple[str, str]]) -> str:
    return "".join(_escape(v) if k == "text" else "{" + v + "}" for k, v in units)


def marks(fields: Sequence[str]) -> dict[str, str]:
    """Slot name -> placeholder letter shown to the generator."""
    out = {f: ("X" if len(fields) == 1 else f"X{i + 1}") for i, f in enumerate(fields)}
    out["answer"] = ANSWER_MARK
    return out


def encode(template: str, fields: Sequence[str]) -> str:
    """The template as the generator sees it: slots as ``[X]``/``[Y]``, newlines as the two characters ``\\n``."""
    m = marks(fields)
    return "".join(
        v.replace("\n", "\\n") if k == "text" else f"[{m[v]}]" for k, v in _segments(template)
    ).strip()


def decode(text: str, fields: Sequence[str]) -> str:
    """A generator's text back to a template: known placeholders (in [], {} or <>) become slots, every other
    brace becomes a literal one."""
    back = {v: k for k, v in marks(fields).items()}
    units: list[tuple[str, str]] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        name = back.get(m.group(1).upper())
        if name is None:
            continue
        units.append(("text", text[pos : m.start()]))
        units.append(("slot", name))
        pos = m.end()
    units.append(("text", text[pos:]))
    return _join([(k, v.replace("\\n", "\n")) if k == "text" else (k, v) for k, v in units])


def answer_class(template: str) -> str:
    """Where the answer slot sits: "end" (only whitespace after it), "start" (only whitespace before) or
    "middle". A causal LM predicts the answer from what precedes it, so a variant must keep the class."""
    units = _segments(template)
    i = units.index(("slot", "answer"))
    if all(k == "text" and not v.strip() for k, v in units[i + 1 :]):
        return "end"
    if all(k == "text" and not v.strip() for k, v in units[:i]):
        return "start"
    return "middle"


_SLOT_TEXT = re.compile(r"\{\{|\}\}|\{\s*([A-Za-z_][A-Za-z0-9_\-]*)\s*\}")


def slot_counts(template: str) -> Counter:
    """How often each slot occurs in a template's text (literal ``{{``/``}}`` skipped), parse or not."""
    return Counter(m.group(1) for m in _SLOT_TEXT.finditer(template) if m.group(1))


def check_variant(parent: str, variant: str, max_chars: int = 300) -> str | None:
    """Why ``variant`` cannot replace ``parent`` (a reason: empty, too_long, lost_slot, duplicate_slot,
    unparseable, answer_position), or None when it keeps every slot once and the answer slot's position
    class."""
    if not variant.strip():
        return "empty"
    if len(variant) > max_chars:
        return "too_long"
    want, got = slot_counts(parent), slot_counts(variant)
    if any(got[s] < n for s, n in want.items()):
        return "lost_slot"
    if any(n > want.get(s, 0) for s, n in got.items()):
        return "duplicate_slot"
    try:
        _segments(variant)
    except PromptError:
        return "unparseable"
    if answer_class(variant) != answer_class(parent):
        return "answer_position"
    return None


# --------------------------------------------------------------------------------------------- edits
_WORD = re.compile(r"\S+|\s+")
_CORE = re.compile(r"^(\W*)([A-Za-z][A-Za-z'-]*[A-Za-z]|[A-Za-z])(\W*)$")
# Function words WordNet lists under unrelated senses ("it": information technology, "was": not a lemma).
STOPWORDS = frozenset(
    "a an the it its is was were be been being are am this that these those of in on at to for with by "
    "and or but not no so as if then than there here what which who whom how i you he she we they me him "
    "her us them my your his our their do does did has have had will would can could should may might".split()
)


def _units(template: str) -> list[tuple[str, str]]:
    """Words, spaces and slots, in order: ("word", w), ("space", s), ("slot", name)."""
    out: list[tuple[str, str]] = []
    for k, v in _segments(template):
        if k == "slot":
            out.append(("slot", v))
        else:
            out.extend(("space" if t.isspace() else "word", t) for t in _WORD.findall(v))
    return out


def _render(units: Sequence[tuple[str, str]]) -> str:
    return _join([("slot", v) if k == "slot" else ("text", v) for k, v in units])


def literal_words(template: str) -> list[str]:
    return [v for k, v in _units(template) if k == "word"]


def _match_case(like: str, word: str) -> str:
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


def edit_template(
    template: str, op: str, rng: np.random.Generator, synonyms: dict[str, list[str]], donors: Sequence[str]
) -> str | None:
    """One random word-level edit of ``template`` (``delete``, ``swap``, ``synonym`` or ``add``), or None
    when the template offers nothing for it. Slots never move; only literal words change."""
    units = _units(template)
    words = [i for i, (k, _) in enumerate(units) if k == "word"]
    if op == "delete" and words:
        i = int(rng.choice(words))
        j = i - 1 if i > 0 and units[i - 1][0] == "space" else i + 1
        drop = {i, j} if j < len(units) and units[j][0] == "space" else {i}
        return _render([u for n, u in enumerate(units) if n not in drop])
    if op == "swap" and len(words) >= 2:
        i, j = (int(x) for x in rng.choice(words, size=2, replace=False))
        units[i], units[j] = units[j], units[i]
        return _render(units)
    if op == "synonym":
        options = []
        for i in words:
            m = _CORE.match(units[i][1])
            if m and m.group(2).lower() not in STOPWORDS and synonyms.get(m.group(2).lower()):
                options.append((i, m))
        if not options:
            return None
        i, m = options[int(rng.integers(len(options)))]
        choices = synonyms[m.group(2).lower()]
        new = _match_case(m.group(2), choices[int(rng.integers(len(choices)))])
        units[i] = ("word", m.group(1) + new + m.group(3))
        return _render(units)
    if op == "add" and donors:
        word = donors[int(rng.integers(len(donors)))]
        # before a word or a slot, never after the last slot: the answer slot keeps its place
        spots = [i for i, (k, _) in enumerate(units) if k in ("word", "slot")]
        i = spots[int(rng.integers(len(spots)))]
        return _render(units[:i] + [("word", word), ("space", " ")] + units[i:])
    return None


# --------------------------------------------------------------------------------------------- generator
# Demonstrations (parent 1, parent 2, child), task-neutral; a child that copies one is rejected
# ("copied_demo"): SmolLM2-135M answers most GA requests with the demonstration's child otherwise.
DEMOS = (
    ("Text: [X] Topic: [Y]", "[X] This text is about [Y]", "Article: [X] The article is about [Y]"),
    ("Question: [X] Answer: [Y]", "[X] The answer is [Y]", "Q: [X] The correct answer is [Y]"),
    ("[X] In short, [Y]", "Input: [X] Output: [Y]", "Input: [X] In a word, the output is [Y]"),
)
DEMO_CHILDREN = frozenset(d[2] for d in DEMOS)
# EvoPrompt's GA instruction (its one-shot demonstration redone for templates with slots); a chat turn.
EVOPROMPT_GA = (
    "Please follow the instruction step-by-step to generate a better prompt. Keep [X] and [Y].\n"
    "1. Crossover the following prompts and generate a new prompt:\n"
    f"Prompt 1: {DEMOS[0][0]}\nPrompt 2: {DEMOS[0][1]}\n"
    "2. Mutate the prompt generated in Step 1 and generate a final prompt bracketed with <prompt> and </prompt>.\n\n"
    f"1. Crossover Prompt: Text: [X] This text is about [Y]\n2. <prompt>{DEMOS[0][2]}</prompt>\n\n"
    "Please follow the instruction step-by-step to generate a better prompt. Keep [X] and [Y].\n"
    "1. Crossover the following prompts and generate a new prompt:\n"
    "Prompt 1: <prompt1>\nPrompt 2: <prompt2>\n"
    "2. Mutate the prompt generated in Step 1 and generate a final prompt bracketed with <prompt> and </prompt>.\n\n1. "
)
# The same crossover-then-mutation as a few-shot completion, which a small model follows better.
COMPLETION_GA = (
    "Combine the two prompts into one new prompt in other words. Keep [X] and [Y].\n\n"
    + "".join(f"Prompt 1: {a}\nPrompt 2: {b}\nNew prompt: {c}\n\n" for a, b, c in DEMOS)
    + "Prompt 1: <prompt1>\nPrompt 2: <prompt2>\nNew prompt:"
)
COMPLETION_PARAPHRASE = (
    "Rewrite each prompt in other words. Keep [X] and [Y].\n\n"
    + "".join(f"Prompt: {a}\nRewritten: {c}\n\n" for a, _, c in DEMOS)
    + "Prompt: <prompt1>\nRewritten:"
)
_TAGGED = re.compile(r"<prompt>(.*?)(?:</prompt>|\n|$)", re.DOTALL)


def parse_output(text: str, style: str) -> str:
    """The template text in a generator's answer (empty when there is none)."""
    if style == "evoprompt":
        m = _TAGGED.search(text)
        return m.group(1).strip() if m else ""
    line = text.strip().split("\n", 1)[0].strip()
    return line.strip("\"'`").strip()


# --------------------------------------------------------------------------------------------- searcher
@dataclass
class _Run:
    """One job's bookkeeping (local to ``search``)."""

    rejected: Counter = field(default_factory=Counter)  # reason -> variants refused
    proposed: int = 0  # variants made (generated or edited)
    unchanged: int = 0  # variants equal to their parent or to an earlier one (not rows, not rejections)
    seen: set[str] = field(default_factory=set)  # keys of the prompts proposed so far
    evaluated: int = 0  # new rows
    all_rejected: int = 0  # parents (per round) whose every variant was rejected
    gen_total: Cost = field(default_factory=Cost)
    gen_pending: Cost = field(default_factory=Cost)  # generation since the last row

    def extra(self, **kw: Any) -> dict[str, Any]:
        return {
            **kw,
            "generation": self.gen_pending.to_dict(),
            "generation_total": self.gen_total.to_dict(),
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "all_rejected": self.all_rejected,
        }

    def refuse(self, reason: str | None, log, what: str) -> bool:
        """Count a refused variant (True) or let it through (False)."""
        if reason is None:
            return False
        if reason == "unchanged":
            self.unchanged += 1
        else:
            self.rejected[reason] += 1
            log.debug("paraphrase: rejected (%s): %r", reason, what[:200])
        return True


EditOp = Lit["delete", "swap", "synonym", "add"]
OPERATORS: tuple[EditOp, ...] = ("delete", "swap", "synonym", "add")


@register_searcher
@dataclass
class ParaphraseSearcher(Searcher):
    """Slot-keeping rewrites of seed templates: an LM-driven GA (EvoPrompt) or word edits (GrIPS)."""

    name = "paraphrase"
    summary = "rewrites seed templates keeping their slots: LM crossover+mutation (EvoPrompt GA) or WordNet/word edits (GrIPS)"
    capabilities = Capabilities(needs_seed_prompts=True)

    operator: Annotated[
        Lit["auto", "evo", "edit"],
        Field(
            description="evo (LM crossover+mutation), edit (word edits), auto: evo when a causal generator exists"
        ),
    ] = "auto"
    generator: Annotated[
        str | None,
        Field(
            description="causal LM for evo: a local folder, the default-model alias or a cached hub id (default: the frozen model)"
        ),
    ] = None
    generator_device: Annotated[
        str, Field(description="device of a separate generator (auto, cpu, cuda, cuda:N, mps)")
    ] = "auto"
    style: Annotated[
        Lit["completion", "evoprompt"],
        Field(
            description="instruction form: a few-shot completion, or EvoPrompt's step-by-step GA chat prompt"
        ),
    ] = "completion"
    population: Annotated[
        int, Field(ge=1, description="evo: prompts kept per generation (seeds, filled with paraphrases)")
    ] = 6
    generations: Annotated[
        int, Field(ge=0, description="evo: rounds of selection, crossover+mutation and replacement")
    ] = 3
    selection: Annotated[
        Lit["roulette", "tournament"],
        Field(description="evo: parents drawn by dev score (roulette wheel) or best of 2 (tournament)"),
    ] = "roulette"
    max_new_tokens: Annotated[int, Field(ge=1, le=512, description="evo: tokens generated per child")] = 40
    temperature: Annotated[
        float, Field(ge=0, allow_inf_nan=False, description="evo: sampling temperature (0: greedy)")
    ] = 0.5
    top_p: Annotated[float, Field(gt=0, le=1, description="evo: nucleus sampling mass")] = 0.95
    batch_size: Annotated[int, Field(ge=1, description="evo: generation requests per batch")] = 8
    iterations: Annotated[int, Field(ge=0, description="edit: rounds of edits of the best prompt so far")] = 5
    num_candidates: Annotated[int, Field(ge=1, description="edit: edited candidates per round")] = 6
    patience: Annotated[
        int, Field(ge=1, description="edit: rounds without a better prompt before stopping")
    ] = 2
    edits: Annotated[
        list[Lit["delete", "swap", "synonym", "add"]],
        Field(min_length=1, description="edit: the operations drawn from"),
    ] = field(default_factory=lambda: list(OPERATORS))
    wordnet: Annotated[
        str | None,
        Field(
            description="folder of WordNet's data.* files (default: MINER_WORDNET_DIR, /usr/share/wordnet)"
        ),
    ] = None
    leaderboard_top: Annotated[
        int,
        Field(
            ge=0,
            description="also seed with this many best discrete rows of the leaderboard (same task, model, seed, k)",
        ),
    ] = 0
    max_chars: Annotated[
        int, Field(ge=10, description="variants longer than this are rejected (too_long)")
    ] = 300

    # ------------------------------------------------------------------ checks
    def _use_evo(self, context: SearchContext) -> bool:
        if self.operator == "auto":
            return self.generator is not None or context.backend.kind == "causal"
        return self.operator == "evo"

    def validate(self, context: SearchContext) -> None:
        if self.operator == "evo" and self.generator is None and context.backend.kind != "causal":
            raise ConfigError(
                f"paraphrase.operator evo needs a causal generator: model {context.backend.name!r} is a masked LM "
                "(set paraphrase.generator, or operator: edit)"
            )
        if self._use_evo(context) and self.generator is not None:
            _check_generator_offline(self.generator)
        if not context.prompts and not self.leaderboard_top:
            raise ConfigError("paraphrase needs seed prompts: give the config's prompts (or leaderboard_top)")

    # ------------------------------------------------------------------ search
    def search(self, context: SearchContext, evaluate: Evaluate) -> None:
        log = context.logger
        run = _Run()
        evo = self._use_evo(context)
        gen = self.load_generator(context) if evo else None  # before any row: a bad generator fails the job
        seeds = _seed_prompts(context, self.leaderboard_top)
        if not seeds:
            log.warning(
                "paraphrase: no discrete seed prompt (without trigger or soft slots); nothing to rewrite"
            )
            return
        pool = self._evaluate(context, evaluate, run, seeds, [{"operator": "seed"}] * len(seeds))
        seed_rows = run.evaluated  # 0 when the runner already scored the seeds as its baselines
        if not pool:
            return
        if evo:
            assert gen is not None
            self._evolve(context, evaluate, run, gen, pool)
        else:
            self._edit(context, evaluate, run, pool)
        log.info(
            "paraphrase: %d variants made, %d rejected (%s), %d unchanged, %d new prompts evaluated; %d parents "
            "had every variant rejected; generation cost %d forward passes, %d tokens",
            run.proposed,
            sum(run.rejected.values()),
            ", ".join(f"{k}: {v}" for k, v in sorted(run.rejected.items())) or "none",
            run.unchanged,
            run.evaluated - seed_rows,
            run.all_rejected,
            run.gen_total.forward_passes,
            run.gen_total.tokens,
        )

    def load_generator(self, context: SearchContext) -> Backend:
        """The evo operator's generator: the frozen model, or ``generator`` loaded offline with
        ``miner.models.load_backend``. The seam for another generator: a subclass may return any object with
        :meth:`Backend.generate`'s signature (the tests inject a scripted one)."""
        if self.generator is None or self.generator == context.backend.name:
            if context.backend.kind != "causal":
                raise ConfigError(
                    f"paraphrase: model {context.backend.name!r} is a masked LM and cannot generate"
                )
            return context.backend
        from miner.models import load_backend

        try:
            return load_backend(self.generator, kind="causal", device=self.generator_device)
        except ModelLoadError as exc:
            raise ModelLoadError(f"paraphrase.generator: {exc}") from None

    def _per_eval(self, context: SearchContext, prompt: Prompt) -> int:
        return sum(context.scorer.plan(prompt, data) for data in (context.task.train, context.task.dev))

    def _afford(self, context: SearchContext, passes: int, evaluations: int = 1) -> bool:
        return context.budget is None or context.budget.can_afford(
            forward_passes=passes, evaluations=evaluations
        )

    def _evaluate(
        self,
        context: SearchContext,
        evaluate: Evaluate,
        run: _Run,
        prompts: Sequence[Prompt],
        extras: Sequence[dict],
    ) -> list[Evaluation]:
        """Score new prompts one by one (each row carries its own parents), while the budget allows."""
        out = []
        for prompt, extra in zip(prompts, extras):
            run.seen.add(prompt.key)
            if not self._afford(context, self._per_eval(context, prompt)):
                context.logger.info("paraphrase: budget left for no further evaluation")
                break
            (ev,) = evaluate([prompt], extra=run.extra(**extra))
            if not ev.duplicate:
                run.gen_pending = Cost()
                run.evaluated += 1
            if ev.dev is not None:
                out.append(ev)
        return out

    # ------------------------------------------------------------------ evo
    def _generate(
        self, context: SearchContext, run: _Run, gen: Backend, requests: list[str], salt: int, per_eval: int
    ) -> list[str] | None:
        # a generation batch is only started when its longest run and one child's scoring fit the budget
        steps = math.ceil(len(requests) / self.batch_size) * self.max_new_tokens
        if not self._afford(context, steps + per_eval):
            context.logger.info("paraphrase: budget left for no further generation")
            return None
        counter = context.scorer.counter
        before = counter.snapshot()
        try:
            return gen.generate(
                requests,
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                seed=(context.seed * 1_000_003 + salt) % 2**31,
                chat=self.style == "evoprompt",
                batch_size=self.batch_size,
                charge=counter.forward,
            )
        finally:
            spent = counter.snapshot() - before
            run.gen_total, run.gen_pending = run.gen_total + spent, run.gen_pending + spent

    def _children(
        self,
        context: SearchContext,
        run: _Run,
        gen: Backend,
        parents: list[tuple[Evaluation, Evaluation | None]],
        rnd: int,
    ) -> tuple[list[Prompt], list[dict]] | None:
        fields = context.text_fields
        requests = []
        for a, b in parents:
            text = (
                (COMPLETION_PARAPHRASE if b is None else COMPLETION_GA)
                if self.style == "completion"
                else EVOPROMPT_GA
            )
            pa = encode(a.prompt.template, fields)
            pb = encode((b or a).prompt.template, fields)
            requests.append(text.replace("<prompt1>", pa).replace("<prompt2>", pb))
        per_eval = self._per_eval(context, parents[0][0].prompt)  # type: ignore[arg-type]
        outs = self._generate(context, run, gen, requests, rnd, per_eval)
        if outs is None:
            return None
        prompts, extras = [], []
        outcome: dict[str, list[str]] = {}  # parent template -> its variants' outcomes this round
        for (a, b), raw in zip(parents, outs):
            run.proposed += 1
            text = parse_output(raw, self.style)
            template = decode(text, fields)
            reason = (
                "copied_demo"
                if text in DEMO_CHILDREN
                else check_variant(a.prompt.template, template, self.max_chars)
            )
            assert isinstance(a.prompt, Prompt)
            child = a.prompt.with_(template=template, meta={}) if reason is None else None
            if child is not None and child.key in run.seen:
                reason = "unchanged"
            outcome.setdefault(a.prompt.template, []).append(reason or "kept")
            if run.refuse(reason, context.logger, raw):
                continue
            assert child is not None
            run.seen.add(child.key)
            prompts.append(child)
            extras.append(
                {
                    "operator": "paraphrase" if b is None else "crossover",
                    "round": rnd,
                    "parents": [a.prompt.template] + ([b.prompt.template] if b is not None else []),
                    "raw": raw[:300],
                }
            )
        self._note_all_rejected(context, run, outcome, rnd)
        return prompts, extras

    @staticmethod
    def _note_all_rejected(
        context: SearchContext, run: _Run, outcome: dict[str, list[str]], rnd: int
    ) -> None:
        for parent, results in outcome.items():
            reasons = Counter(r for r in results if r not in ("kept", "unchanged"))
            if results and sum(reasons.values()) == len(results):
                run.all_rejected += 1
                context.logger.info(
                    "paraphrase: round %d: all %d variants of %r rejected (%s)",
                    rnd,
                    len(results),
                    parent,
                    ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())),
                )

    def _evolve(
        self, context: SearchContext, evaluate: Evaluate, run: _Run, gen: Backend, pool: list[Evaluation]
    ) -> None:
        rng = np.random.default_rng([context.seed, 17])
        if len(pool) < self.population:
            parents: list[tuple[Evaluation, Evaluation | None]] = [
                (pool[i % len(pool)], None) for i in range(self.population - len(pool))
            ]
            made = self._children(context, run, gen, parents, 0)
            if made is None:
                return
            pool = _best(pool + self._evaluate(context, evaluate, run, *made), self.population)
        for rnd in range(1, self.generations + 1):
            pairs = [self._select(pool, rng) for _ in range(self.population)]
            made = self._children(context, run, gen, pairs, rnd)
            if made is None:
                return
            pool = _best(pool + self._evaluate(context, evaluate, run, *made), self.population)
            context.logger.info("paraphrase: generation %d best dev %.4f", rnd, pool[0].rank_key[0])

    def _select(
        self, pool: list[Evaluation], rng: np.random.Generator
    ) -> tuple[Evaluation, Evaluation | None]:
        if len(pool) == 1:
            return pool[0], pool[0]
        if self.selection == "tournament":  # the pool is sorted best first: the lower index wins
            i, j = (int(min(rng.choice(len(pool), size=2, replace=False))) for _ in range(2))
            return pool[i], pool[j]
        fit = np.array([max(e.rank_key[0], 0.0) for e in pool], dtype=float)
        p = fit / fit.sum() if fit.sum() > 0 else None
        i, j = rng.choice(len(pool), size=2, replace=False, p=p)
        return pool[int(i)], pool[int(j)]

    # ------------------------------------------------------------------ edit
    def _edit(self, context: SearchContext, evaluate: Evaluate, run: _Run, pool: list[Evaluation]) -> None:
        from miner.search._wordnet import find_wordnet, synonyms

        log = context.logger
        rng = np.random.default_rng([context.seed, 29])
        ops = list(self.edits)
        words = sorted({w for e in pool for w in literal_words(e.prompt.template)})
        syn: dict[str, list[str]] = {}
        if "synonym" in ops:
            root = find_wordnet(self.wordnet)
            if root is None:
                log.warning(
                    "paraphrase: WordNet not found (apt-get install wordnet-base); edits without synonyms"
                )
                ops = [o for o in ops if o != "synonym"] or ["delete", "swap"]
            else:
                cores = {m.group(2).lower() for w in words if (m := _CORE.match(w))} - STOPWORDS
                syn = synonyms(cores, root)
        best = _best(pool, 1)[0]
        stale = 0
        seen = {e.prompt.template for e in pool}
        for rnd in range(1, self.iterations + 1):
            base = best.prompt
            assert isinstance(base, Prompt)
            donors = [w for w in words if w not in literal_words(base.template)]
            prompts: list[Prompt] = []
            extras: list[dict] = []
            outcome: dict[str, list[str]] = {}
            for _ in range(self.num_candidates * 4):
                if len(prompts) >= self.num_candidates:
                    break
                op = ops[int(rng.integers(len(ops)))]
                text = edit_template(base.template, op, rng, syn, donors)
                if text is None:
                    continue
                run.proposed += 1
                reason = check_variant(base.template, text, self.max_chars)
                if reason is None and text in seen:
                    reason = "unchanged"
                outcome.setdefault(base.template, []).append(reason or "kept")
                if run.refuse(reason, log, text):
                    continue
                seen.add(text)
                prompts.append(base.with_(template=text, meta={}))
                extras.append({"operator": f"edit:{op}", "round": rnd, "parents": [base.template]})
            self._note_all_rejected(context, run, outcome, rnd)
            if not prompts:
                log.info("paraphrase: round %d: no new edit of %r", rnd, base.template)
                break
            evs = self._evaluate(context, evaluate, run, prompts, extras)
            if not evs:
                break
            top = _best(evs, 1)[0]
            if top.rank_key > best.rank_key:
                best, stale = top, 0
            else:
                stale += 1
                if stale >= self.patience:
                    break


def _best(pool: list[Evaluation], n: int) -> list[Evaluation]:
    """The ``n`` best by the runner's rank key (stable: earlier first among ties)."""
    return sorted(pool, key=lambda e: e.rank_key, reverse=True)[:n]


def _seed_prompts(context: SearchContext, leaderboard_top: int) -> list[Prompt]:
    seeds = [p for p in context.prompts if not (p.triggers or p.soft)]
    if leaderboard_top and context.storage_url:
        seeds += _leaderboard_seeds(context, leaderboard_top, {p.key for p in seeds})
    out, keys = [], set()
    for p in seeds:
        if p.key not in keys:
            keys.add(p.key)
            out.append(p)
    return out


def _leaderboard_seeds(context: SearchContext, n: int, known: set[str]) -> list[Prompt]:
    """The best ``n`` discrete rows of the same task, model, seed and k, other than the ``known`` prompts
    (this job's own seeds may already be rows: the runner scores them first)."""
    from miner.leaderboard import Leaderboard

    assert context.storage_url is not None
    found: list[Prompt] = []
    with Leaderboard(context.storage_url, create=False) as board:
        rows = board.rows(
            task=context.task.name,
            model=context.backend.name,
            seed=context.seed,
            k=context.task.k,
            limit=20 * n,
        )
    for row in rows:
        d = row.prompt or {}
        if "ensemble" in d or d.get("triggers") or d.get("soft"):
            continue
        try:
            p = Prompt.from_dict({k: v for k, v in d.items() if k != "meta"}, context.label_names)
        except PromptError:
            continue
        if p.key not in known and all(p.template != q.template for q in found):
            found.append(p)
        if len(found) >= n:
            break
    context.logger.info("paraphrase: %d seed prompts from the leaderboard", len(found))
    return found


def _check_generator_offline(name: str) -> None:
    """A one-line error, before any row, for a generator that is neither a local folder nor cached."""
    import os
    from pathlib import Path

    if Path(name).expanduser().exists() or "/" not in name:
        return  # a folder (load_backend checks it), or the default-model alias
    if name.startswith((".", "/", "~")):
        raise ModelLoadError(f"paraphrase.generator {name!r} does not exist")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not isinstance(cached, str) and offline:
        raise ModelLoadError(
            f"paraphrase.generator {name!r} cannot be loaded offline: not a local folder and not in the "
            "Hugging Face cache (HF_HUB_OFFLINE=1)"
        )
