"""``mining``: prompts mined from text (LPAQA's mining, Jiang et al. 2020), for fact and classification tasks.

**Fact tasks** (one text field, the subject; the label names are the candidate objects): every corpus
sentence that contains the subject and the object of a training pair (case-insensitive, whole words)
gives *middle-word* patterns, the words between them (``{subject} is the capital of {answer}``), and
*window* patterns, the same with up to ``window`` words before the first slot (``The capital of
{subject} is {answer}``). A pattern's support is the number of distinct training pairs it was seen
with; the ``max_prompts`` best supported patterns are proposed. For a causal LM the answer slot must
come last (the model predicts the object from what precedes it; an answer slot followed by text would
be scored as the likelihood of the whole continuation, with the object guessed before the subject is
seen), so object-first patterns (``{answer} , the capital of {subject}``) are skipped and counted for
causal LMs; masked LMs take them.

**Classification tasks**: label words first: the config's (``label_words`` and the seed prompts'
verbalizers) plus, per label, the ``auto_words`` words whose answer-slot probability on a probe template
best separates that label's training examples from the others' (``candidate_pool``, the ``optuna``
searcher's automatic words, from one ``Scorer.distributions`` pass over train). Then each occurrence of
a label word in the task's training texts and the corpora (by default the gensim wheel's Wikipedia extract
and Lee news corpus where installed: 16-shot texts alone almost never repeat a cue) gives its
``cue_lengths`` preceding words as a cue; a capitalised label word inside a sentence is a name and does
not count (``match_case``): "... the film is great." becomes ``{sentence} The film is {answer}``. A cue's support is
the number of distinct sentences it precedes a label word in; with ``agreement`` a training sentence
counts +1 when the word's label is the sentence's label and -1 otherwise, and with ``balanced`` a corpus
sentence counts only as often as the cue is also seen before a second label's words (a cue before one
label's words only is about a topic: "Abortions are" before "against"). Each mined template gets its
own verbalizer fitted on train from the config's words, or from the pool with ``mined_auto_words``
automatic ones where a label has none (``search_verbalizers``: tensor operations on the template's
cached distributions, which the runner's train scoring then reuses at no cost).

Everything is proposed through ``evaluate`` (the runner scores train and dev and owns the budget), one
prompt per call so that each row's ``extra.mining`` records its pattern's kind, support, sources and a
few supporting pairs; the searcher stops when ``budget.can_afford`` says the next prompt cannot be paid.
Every template is checked through the Prompt API (the task's text fields, one answer slot, the answer
last on causal LMs, the verbalizer's words tokenizable); rejections are counted by reason and logged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any
from typing import Literal as Lit

from pydantic import Field

from miner.corpora import Corpus, CorpusError, PhraseMatcher, join_tokens, normalize, resolve, tokenize
from miner.errors import BudgetExhausted, ConfigError, PromptError
from miner.prompts import Field as FieldSlot
from miner.prompts import Prompt, PromptEnsemble, Verbalizer, parse_template
from miner.search._base import Capabilities, Evaluate, Evaluation, SearchContext, Searcher
from miner.search._registry import register_searcher

logger = logging.getLogger(__name__)

_SLOT1, _SLOT2 = "\x00A", "\x00B"  # placeholders for the slots while tokens are re-joined
_SENTENCE_PUNCT = frozenset(".!?")
DEFAULT_GENERAL_CORPORA = ("wikipedia", "lee")  # mined by default, for both task kinds, where installed


# ------------------------------------------------------------------------------------------ patterns


@dataclass
class Pattern:
    """A mined template and the evidence for it."""

    template: str
    kind: str  # "middle" | "window" (fact tasks) | "context" (classification)
    support: float  # distinct pairs (fact tasks) or the sentence score (classification): the rank
    occurrences: int
    sources: tuple[str, ...]
    examples: tuple[str, ...] = ()  # a few supporting pairs or words
    answer_first: bool = False  # the answer slot comes before the text field
    detail: dict[str, Any] = field(default_factory=dict)

    def to_extra(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "support": self.support,
            "occurrences": self.occurrences,
            "source": list(self.sources),
            "examples": list(self.examples),
            **self.detail,
        }


@dataclass
class MiningStats:
    sentences: int = 0
    matched: int = 0  # sentences with at least one pair (or label word)
    patterns: int = 0  # distinct patterns before the support cut


def _escape(token: str) -> str:
    return token.replace("{", "{{").replace("}", "}}")


def _render(prefix: Sequence[str], middle: Sequence[str], first: str, second: str, after: str = "") -> str:
    """Tokens and two slots as template text; a leading word is capitalised."""
    text = (
        _escape(join_tokens([*prefix, _SLOT1, *middle, _SLOT2]))
        .replace(_SLOT1, first)
        .replace(_SLOT2, second)
    )
    text += after
    return text[0].upper() + text[1:] if text[:1].isalpha() else text


class _Tally:
    """Support, occurrences, sources and surface forms of each pattern key, counted in one pass."""

    def __init__(self) -> None:
        self.support: dict[tuple, set[Any]] = {}
        self.count: Counter[tuple] = Counter()
        self.sources: dict[tuple, set[str]] = {}
        self.surface: dict[tuple, Counter[tuple]] = {}

    def add(self, key: tuple, witness: Any, source: str, surface: tuple) -> None:
        self.support.setdefault(key, set()).add(witness)
        self.count[key] += 1
        self.sources.setdefault(key, set()).add(source)
        self.surface.setdefault(key, Counter())[surface] += 1

    def best_surface(self, key: tuple) -> tuple:
        # most frequent original-case form; ties by first seen (Counter keeps insertion order)
        return self.surface[key].most_common(1)[0][0]


def _limited(corpus: Corpus, progress: bool, max_sentences: int | None):
    for i, item in enumerate(corpus.sentences(progress)):
        if max_sentences is not None and i >= max_sentences:
            return
        yield item


def _closed(support: Mapping[tuple, set[Any]]) -> set[tuple]:
    """Keys of all middle-word patterns and of the windows not subsumed by a one-word-longer window seen
    with the very same pairs.

    ``Capital of {subject} is {answer}`` seen with exactly the pairs of ``The capital of {subject} is
    {answer}`` says nothing more, so only the longer, more specific window is kept (closed patterns, as
    in frequent-sequence mining); a shorter window with more support than each extension stays, and
    middle-word patterns (LPAQA's own) always stay.
    """
    extensions: dict[tuple, list[set[Any]]] = {}
    for (_kind, order, prefix, middle), ws in support.items():
        if prefix:
            extensions.setdefault((order, middle, prefix[1:]), []).append(ws)
    return {
        key
        for key, ws in support.items()
        if key[0] != "window" or not any(ext == ws for ext in extensions.get((key[1], key[3], key[2]), ()))
    }


def mine_relations(
    pairs: Iterable[tuple[str, str]],
    corpora: Sequence[Corpus],
    *,
    field_name: str = "subject",
    max_middle: int = 5,
    window: int = 3,
    min_support: int = 1,
    progress: bool = False,
    max_sentences: int | None = None,
) -> tuple[list[Pattern], MiningStats]:
    """Middle-word and window patterns of ``(subject, object)`` pairs in ``corpora``, best supported first.

    One streaming pass over each corpus; a sentence is tokenized once and its phrases found by a
    first-token index (:class:`~miner.corpora.PhraseMatcher`), so the cost is linear in the corpus and
    nearly independent of the number of pairs. Ties in support go to more occurrences, then fewer tokens.
    """
    norm_pairs = {
        (" ".join(t.lower() for t in tokenize(s)), " ".join(t.lower() for t in tokenize(o))) for s, o in pairs
    }
    norm_pairs = {p for p in norm_pairs if p[0] and p[1]}
    matcher = PhraseMatcher([p for pair in norm_pairs for p in pair])
    tally = _Tally()
    stats = MiningStats()
    for corpus in corpora:
        for sentence, _ in _limited(corpus, progress, max_sentences):
            stats.sentences += 1
            toks = tokenize(sentence)
            low = [t.lower() for t in toks]
            hits = matcher.find(low)
            if len(hits) < 2:
                continue
            found = False
            for i, (a0, a1, pa) in enumerate(hits):
                for b0, _b1, pb in hits[i + 1 :]:
                    if b0 - a1 > max_middle:
                        break  # hits are in order: every later one is further away
                    for order, pair in (("subject-first", (pa, pb)), ("object-first", (pb, pa))):
                        if pair not in norm_pairs or (order == "object-first" and pa == pb):
                            continue
                        middle = toks[a1:b0]
                        if not middle or any(t in _SENTENCE_PUNCT for t in middle):
                            continue
                        found = True
                        mid_low = tuple(low[a1:b0])
                        tally.add(("middle", order, (), mid_low), pair, corpus.name, ((), tuple(middle)))
                        for w in range(1, window + 1):
                            if a0 - w < 0:
                                break
                            prefix = toks[a0 - w : a0]
                            if not prefix[0][0].isalnum() or any(t in _SENTENCE_PUNCT for t in prefix):
                                continue  # a window starting at punctuation is a shorter window
                            key = ("window", order, tuple(low[a0 - w : a0]), mid_low)
                            tally.add(key, pair, corpus.name, (tuple(prefix), tuple(middle)))
            stats.matched += found
    stats.patterns = len(tally.support)
    closed = _closed(tally.support)
    out = []
    subject, answer = "{" + field_name + "}", "{answer}"
    for key, witnesses in tally.support.items():
        if len(witnesses) < min_support or key not in closed:
            continue
        kind, order = key[0], key[1]
        prefix, middle = tally.best_surface(key)
        first, second = (subject, answer) if order == "subject-first" else (answer, subject)
        out.append(
            Pattern(
                _render(prefix, middle, first, second),
                kind,
                len(witnesses),
                tally.count[key],
                tuple(sorted(tally.sources[key])),
                tuple(f"{s} -> {o}" for s, o in sorted(witnesses)[:3]),
                answer_first=order == "object-first",
                detail={"order": order, "middle": list(middle), "window": list(prefix)},
            )
        )
    out.sort(key=lambda p: (-p.support, -p.occurrences, len(tokenize(p.template)), p.template))
    return out, stats


_COPULAS = frozenset({"is", "was", "are", "were"})
_APPOSITION = frozenset({",", ":", "(", "-", "–", "—"})


def rewrite_object_first(pattern: Pattern, field_name: str = "subject") -> Pattern | None:
    """An object-first middle-word pattern with the answer moved last, where the words allow it; else None.

    A causal LM predicts the answer from what precedes it, so ``{answer} is the capital of {subject}``
    cannot probe it as it stands. Two rewrites keep the mined words and only move the answer: a copula
    is symmetric (``{answer} is M {subject}`` -> ``M {subject} is {answer}``), and an apposition names the
    answer by its description (``{answer}, M {subject}`` or ``{answer}: M {subject}`` -> ``M {subject}:
    {answer}``). Any other object-first pattern (``{answer} lies in {subject}``) has no such reading.
    """
    middle = list(pattern.detail.get("middle") or ())
    if pattern.kind != "middle" or not pattern.answer_first or not middle:
        return None
    head, rest = middle[0], middle[1:]
    while rest and not rest[-1][0].isalnum():
        rest.pop()  # "{answer} ({subject}" leaves a bracket open before the subject
    if head.lower() in _COPULAS and rest:
        template = _render(rest, [head], "{" + field_name + "}", "{answer}")
    elif head in _APPOSITION:
        template = _render(rest, [":"], "{" + field_name + "}", "{answer}")
    else:
        return None
    detail = {**pattern.detail, "rewritten_from": pattern.template, "order": "subject-first"}
    return dataclasses.replace(pattern, template=template, answer_first=False, detail=detail)


def mine_contexts(
    words: Mapping[str, int],
    corpora: Sequence[Corpus],
    *,
    fields: Sequence[str],
    cue_lengths: Sequence[int] = (2, 3, 4),
    agreement: bool = True,
    min_support: float = 1,
    match_case: bool = True,
    balanced: bool = True,
    progress: bool = False,
    max_sentences: int | None = None,
) -> tuple[list[Pattern], MiningStats]:
    """Cue templates from the words before each label word (``words``: lower-cased word -> label).

    A cue's support is the number of distinct sentences it precedes a label word in; with ``agreement``,
    a labelled sentence (the task's own) counts +1 if the word's label is its label and -1 if not. With
    ``match_case`` a label word counts only where it is written in lower case or starts its sentence: a
    capitalised word inside a sentence is a name ("Alexander the Great", "the World Cup"), not the word.
    With ``balanced``, an unlabelled sentence counts toward its cue only as often as the cue is seen before
    the words of a second label: each label's count is clipped at the runner-up label's, so a cue seen
    only before one label's words ("Abortions are" before "against") is about a topic, not a frame for
    the answer, and scores 0, while "was a" before "good" (10) and "bad" (4) scores 8.
    """
    tally = _Tally()
    score: Counter[tuple] = Counter()
    labels: dict[tuple, Counter[int]] = {}
    unlabelled: dict[tuple, Counter[int]] = {}  # key -> label -> sentences of unlabelled corpora
    stats = MiningStats()
    lengths = sorted(set(cue_lengths))
    for corpus in corpora:
        for sentence, gold in _limited(corpus, progress, max_sentences):
            stats.sentences += 1
            toks = tokenize(sentence)
            low = [t.lower() for t in toks]
            seen: dict[tuple, int] = {}  # key -> the label of its first word in this sentence
            for i, t in enumerate(low):
                c = words.get(t)
                if c is None or (match_case and toks[i] != t and i > 0 and toks[i - 1][0].isalnum()):
                    continue
                for n in lengths:
                    if i - n < 0:
                        break
                    cue = toks[i - n : i]
                    if not cue[0][0].isalnum() or any(x in _SENTENCE_PUNCT for x in cue):
                        continue
                    key = ("context", tuple(low[i - n : i]))
                    if key in seen:
                        tally.count[key] += 1
                        continue
                    seen[key] = c
                    tally.add(key, (corpus.name, stats.sentences), corpus.name, (tuple(cue),))
                    labels.setdefault(key, Counter())[c] += 1
            for key, c in seen.items():
                if gold is None and balanced:
                    unlabelled.setdefault(key, Counter())[c] += 1
                else:
                    score[key] += 1 if (gold is None or not agreement) else (1 if c == gold else -1)
            stats.matched += bool(seen)
    for key, by_label in unlabelled.items():
        counts = sorted(by_label.values(), reverse=True) + [0]
        score[key] += sum(min(n, counts[1]) for n in counts[:-1])  # clipped at the runner-up label's count
    stats.patterns = len(tally.support)
    text = " ".join("{" + f + "}" for f in fields)
    out = []
    for key in tally.support:
        if score[key] < min_support:
            continue
        (cue,) = tally.best_surface(key)
        cue_text = _escape(join_tokens(cue))
        cue_text = cue_text[0].upper() + cue_text[1:]
        out.append(
            Pattern(
                f"{text} {cue_text} {{answer}}",
                "context",
                float(score[key]),
                tally.count[key],
                tuple(sorted(tally.sources[key])),
                detail={
                    "sentences": len(tally.support[key]),
                    "word_labels": dict(sorted(labels[key].items())),
                },
            )
        )
    out.sort(key=lambda p: (-p.support, -p.occurrences, len(tokenize(p.template)), p.template))
    return out, stats


# ------------------------------------------------------------------------------------------- searcher


@register_searcher
@dataclass
class MiningSearcher(Searcher):
    """LPAQA-style corpus mining of templates (fact tasks) and of cue templates and label words (classification)."""

    name = "mining"
    summary = (
        "templates mined from text: subject-object middle/window patterns (fact tasks), "
        "label-word contexts and label words (classification); ranked by support"
    )
    capabilities = Capabilities()
    post_search_params = ("ensemble_top",)  # adds a row after the proposals: a resume keeps the job's rows

    corpora: Annotated[
        list[str | dict[str, Any]] | None,
        Field(
            description="corpora to mine: 'task' (training texts), 'lee', 'wikipedia', 'text8', 'wordnet', a file "
            "or folder path, or {hf: PATH, split, column, data_files}; default: wikipedia + lee (where the gensim "
            "wheel is installed), and task for classification"
        ),
    ] = None
    mode: Annotated[
        Lit["auto", "relations", "classification"],
        Field(description="relations (fact tasks: one text field, the subject), classification, or auto"),
    ] = "auto"
    max_prompts: Annotated[int, Field(ge=1, description="mined prompts proposed, best supported first")] = 20
    min_support: Annotated[
        int, Field(ge=1, description="fewest distinct pairs (sentences, for classification) a pattern needs")
    ] = 2
    max_middle: Annotated[
        int, Field(ge=1, description="fact tasks: most words between the subject and the object")
    ] = 5
    window: Annotated[
        int,
        Field(ge=0, description="fact tasks: most words before the first slot in window patterns (0: none)"),
    ] = 3
    object_first: Annotated[
        bool | None,
        Field(
            description="fact tasks: keep patterns with the answer before the subject (default: masked LMs only)"
        ),
    ] = None
    rewrite_object_first: Annotated[
        bool,
        Field(
            description="fact tasks, where object-first patterns are not kept: turn '{answer} is M {subject}' into "
            "'M {subject} is {answer}' and '{answer}, M {subject}' (or ':', '(') into 'M {subject}: {answer}'"
        ),
    ] = True
    cue_lengths: Annotated[
        list[Annotated[int, Field(ge=1)]],
        Field(min_length=1, description="classification: cue lengths in words before a label word"),
    ] = field(default_factory=lambda: [2, 3, 4])
    agreement: Annotated[
        bool,
        Field(
            description="classification: a training sentence counts -1 where the word's label is not its label"
        ),
    ] = True
    balanced: Annotated[
        bool,
        Field(
            description="classification: in unlabelled corpora a cue counts only as often as it precedes a "
            "second label's words (each label's count clipped at the runner-up's)"
        ),
    ] = True
    match_case: Annotated[
        bool,
        Field(
            description="classification: a label word counts only in lower case or at a sentence's start "
            "('Great' in 'Alexander the Great' is a name)"
        ),
    ] = True
    label_words: Annotated[
        dict[str, list[str]], Field(description="classification: label -> words, always label words")
    ] = field(default_factory=dict)
    auto_words: Annotated[
        int,
        Field(
            ge=0, description="classification: automatic label words per label from the probe's distributions"
        ),
    ] = 4
    probe_template: Annotated[
        str | None,
        Field(
            description="classification: template whose answer distributions give the automatic words "
            "(default: the first seed prompt's, else '<text fields> It was {answer}')"
        ),
    ] = None
    fit_words: Annotated[
        bool,
        Field(description="classification: fit each mined template's verbalizer on train (else the probe's)"),
    ] = True
    mined_auto_words: Annotated[
        int | None,
        Field(
            ge=0,
            description="classification: automatic words per label in a mined template's fitted verbalizer "
            "(default: 0 where every label has a word of the config's, else auto_words; a few-shot train set "
            "overfits a large pool)",
        ),
    ] = None
    likely_top: Annotated[
        int,
        Field(ge=1, description="classification: automatic words come from the label's this many likeliest"),
    ] = 200
    word_pattern: Annotated[
        str, Field(description="classification: regular expression an automatic label word matches")
    ] = r"^[A-Za-z]{3,}$"
    ensemble_top: Annotated[
        int,
        Field(
            ge=0,
            description="after the proposals, also propose the mean of the best k mined prompts by dev "
            "(LPAQA's ensemble; 0 or 1: none)",
        ),
    ] = 0
    max_sentences: Annotated[
        int | None, Field(ge=1, description="read at most this many sentences of each corpus (default: all)")
    ] = None

    # ------------------------------------------------------------------ setup shared by validate and search
    def _mode(self, ctx: SearchContext) -> str:
        if self.mode != "auto":
            return self.mode
        return "relations" if tuple(ctx.text_fields) == ("subject",) else "classification"

    def _corpora(self, ctx: SearchContext, mode: str) -> list[Corpus]:
        if self.corpora is not None:
            if not self.corpora:
                raise ConfigError("mining.corpora is empty: name at least one corpus")
            out = []
            for spec in self.corpora:
                corpus = resolve(spec, ctx.task)
                corpus.check()
                out.append(corpus)
            return out
        # The defaults: the built-in general corpora where their wheel is installed (a 16-shot task's own 32
        # texts almost never hold a label word after the same cue twice), and the task's own texts.
        out = [] if mode == "relations" else [resolve("task", ctx.task)]
        missing: list[CorpusError] = []
        for spec in DEFAULT_GENERAL_CORPORA:
            try:
                out.append(resolve(spec, ctx.task))
            except CorpusError as exc:
                missing.append(exc)
        if not out:  # a fact task with no corpus at all
            raise missing[0]
        for error in missing:
            ctx.logger.info("mining: default corpus left out: %s", error)
        return out

    def _pairs(self, ctx: SearchContext) -> list[tuple[str, str]]:
        if len(ctx.text_fields) != 1:
            raise ConfigError(
                f"mining (relations) needs a task with one text field, the subject; this one has {list(ctx.text_fields)}"
            )
        f = ctx.text_fields[0]
        labels = ctx.label_names
        pairs = list(dict.fromkeys((str(e.fields[f]), labels[e.label]) for e in ctx.task.train))
        if not pairs:
            raise ConfigError(
                f"mining: task {ctx.task.name!r} has no training pairs (subject, object) to mine with"
            )
        return pairs

    def _probe(self, ctx: SearchContext) -> str:
        if self.probe_template is not None:
            return self.probe_template
        for p in ctx.prompts:
            if ctx.backend.kind != "causal" or p.parsed.answer_at_end:
                if not p.parsed.n_triggers and not p.parsed.n_soft:
                    return p.template
        return " ".join("{" + f + "}" for f in ctx.text_fields) + " It was {answer}"

    def _user_words(self, ctx: SearchContext) -> list[list[str]]:
        labels = ctx.label_names
        unknown = [k for k in self.label_words if k not in labels]
        if unknown:
            raise ConfigError(
                f"mining.label_words names unknown label {unknown[0]!r}; the labels are {list(labels)}"
            )
        words = [list(dict.fromkeys(self.label_words.get(lab, []))) for lab in labels]
        for p in ctx.prompts:
            if p.verbalizer.labels == tuple(labels):
                for c, ws in enumerate(p.verbalizer.words):
                    words[c] = list(dict.fromkeys(words[c] + list(ws)))
        return words

    def validate(self, context: SearchContext) -> None:
        mode = self._mode(context)
        if mode == "relations":
            self._pairs(context)
        else:
            probe = self._probe(context)
            tpl = parse_template(probe)
            tpl.check_fields(context.text_fields)
            if context.backend.kind == "causal" and not tpl.answer_at_end:
                raise ConfigError(
                    f"mining.probe_template {probe!r}: a causal LM needs the answer slot at the end"
                )
            words = self._user_words(context)
            if self.auto_words == 0 and any(not ws for ws in words):
                raise ConfigError(
                    "mining: auto_words is 0 and some label has no words (label_words or a seed prompt)"
                )
            if not context.task.train:
                raise ConfigError("mining: the task has no training examples to find label words with")
        self._corpora(context, mode)

    # ------------------------------------------------------------------------------------ search
    def search(self, context: SearchContext, evaluate: Evaluate) -> None:
        mode = self._mode(context)
        if mode == "relations":
            _search_relations(self, context, evaluate)
        else:
            _search_classification(self, context, evaluate)


def _relation_verbalizer(ctx: SearchContext) -> Verbalizer:
    """The seed prompt's verbalizer when it covers the task's labels, else each object's name as its word."""
    labels = tuple(ctx.label_names)
    for p in ctx.prompts:
        if p.verbalizer.labels == labels:
            return p.verbalizer
    return Verbalizer.from_mapping({lab: [lab] for lab in labels}, labels, distinct=False)


def checked_prompt(
    template: str, verbalizer: Verbalizer, ctx: SearchContext, rejected: Counter[str]
) -> Prompt | None:
    """The prompt if it keeps the task's slots and compiles on the model; else None, its reason counted."""
    try:
        prompt = Prompt(template=template, verbalizer=verbalizer)
        prompt.parsed.check_fields(ctx.text_fields)
    except PromptError:
        rejected["slots"] += 1
        return None
    fields_used = [seg.name for seg in prompt.parsed.segments if isinstance(seg, FieldSlot)]
    if len(fields_used) != len(set(fields_used)) or set(fields_used) != set(ctx.text_fields):
        rejected["slots"] += 1  # a mined template repeats or drops a text field
        return None
    if ctx.backend.kind == "causal" and not prompt.parsed.answer_at_end:
        rejected["answer_not_last"] += 1
        return None
    try:
        ctx.scorer.compile(prompt)
    except PromptError:
        rejected["compile"] += 1
        return None
    return prompt


def admit(
    template: str, verbalizer: Verbalizer, ctx: SearchContext, seen: set[str], rejected: Counter[str]
) -> Prompt | None:
    """The prompt of a template not proposed before (by its normalized text) that passes ``checked_prompt``."""
    key = normalize(template)
    if key in seen:
        rejected["duplicate"] += 1
        return None
    prompt = checked_prompt(template, verbalizer, ctx, rejected)
    if prompt is not None:
        seen.add(key)
    return prompt


def propose(
    ctx: SearchContext,
    evaluate: Evaluate,
    candidates: Iterable[tuple[Prompt, Pattern | None, dict[str, Any]]],
    *,
    prepare=None,
) -> list[Evaluation]:
    """Evaluate candidates one by one, best first, while the budget can pay for the next; returns the
    evaluations.

    ``prepare(prompt) -> (prompt, extra)`` may refine a prompt (fit its verbalizer) just before it is
    evaluated; its model calls are planned with the prompt's own scoring (they are the same requests).
    """
    out: list[Evaluation] = []
    budget = ctx.budget
    for prompt, pattern, extra in candidates:
        planned = ctx.scorer.plan(prompt, ctx.task.train) + ctx.scorer.plan(prompt, ctx.task.dev)
        if budget is not None and not budget.can_afford(forward_passes=planned, evaluations=1):
            ctx.logger.info(
                "mining: budget reached after %d proposals (the next needs %d forward passes)",
                len(out),
                planned,
            )
            break
        row_extra = dict(extra)
        try:
            if prepare is not None:
                prompt, more = prepare(prompt)
                row_extra.update(more)
            if pattern is not None:
                row_extra.update(pattern.to_extra())
            out += evaluate([prompt], extra={"mining": row_extra})
        except BudgetExhausted:
            ctx.logger.info("mining: budget exhausted after %d proposals", len(out))
            break
    return out


def propose_ensemble(
    s: MiningSearcher, ctx: SearchContext, evaluate: Evaluate, evs: Sequence[Evaluation]
) -> None:
    """LPAQA's ensemble of mined prompts: the mean of the ``ensemble_top`` best (by dev) distinct ones.

    Its members' requests are cached, so on train and dev it costs no forward pass. It is proposed as a
    candidate like any other (not declared the job's pick): the runner's ranking decides.
    """
    if s.ensemble_top < 2:
        return
    best: dict[str, Evaluation] = {}
    for ev in evs:
        if isinstance(ev.prompt, Prompt) and ev.prompt.key not in best:
            best[ev.prompt.key] = ev
    top = sorted(best.values(), key=lambda ev: ev.rank_key, reverse=True)[: s.ensemble_top]
    if len(top) < 2:
        ctx.logger.info("mining: fewer than 2 mined prompts, no ensemble")
        return
    ens = PromptEnsemble(tuple(ev.prompt for ev in top if isinstance(ev.prompt, Prompt)))
    planned = ctx.scorer.plan(ens, ctx.task.train) + ctx.scorer.plan(ens, ctx.task.dev)
    if ctx.budget is not None and not ctx.budget.can_afford(forward_passes=planned, evaluations=1):
        ctx.logger.info("mining: the budget cannot pay for the ensemble")
        return
    extra = {
        "kind": "ensemble",
        "members": [ev.prompt.template for ev in top],
        "members_dev": [ev.dev.score if ev.dev else None for ev in top],
    }
    try:
        evaluate([ens], extra={"mining": extra})
    except BudgetExhausted:
        ctx.logger.info("mining: budget exhausted before the ensemble")


def _search_relations(s: MiningSearcher, ctx: SearchContext, evaluate: Evaluate) -> None:
    pairs = s._pairs(ctx)
    corpora = s._corpora(ctx, "relations")
    field_name = ctx.text_fields[0]
    patterns, stats = mine_relations(
        pairs,
        corpora,
        field_name=field_name,
        max_middle=s.max_middle,
        window=s.window,
        min_support=s.min_support,
        progress=ctx.progress,
        max_sentences=s.max_sentences,
    )
    keep_first = s.object_first if s.object_first is not None else ctx.backend.kind == "masked"
    verbalizer = _relation_verbalizer(ctx)
    rejected: Counter[str] = Counter()
    chosen: list[tuple[Prompt, Pattern]] = []
    seen: set[str] = set()
    for pat in patterns:
        if len(chosen) >= s.max_prompts:
            break
        if pat.answer_first and not keep_first:
            rewritten = rewrite_object_first(pat, field_name) if s.rewrite_object_first else None
            if rewritten is None:
                rejected["answer_not_last"] += 1
                continue
            rejected["rewritten"] += 1  # counted, not dropped: the row records the mined original
            pat = rewritten
        prompt = admit(pat.template, verbalizer, ctx, seen, rejected)
        if prompt is not None:
            chosen.append((prompt, pat))
    ctx.logger.info(
        "mining: %d training pairs, %d sentences read (%d with a pair) from %s; %d patterns, %d with support >= %d; "
        "proposing %d; rejected %s",
        len(pairs),
        stats.sentences,
        stats.matched,
        "+".join(c.name for c in corpora),
        stats.patterns,
        len(patterns),
        s.min_support,
        len(chosen),
        dict(rejected) or "none",
    )
    if not chosen:
        ctx.logger.warning(
            "mining: no pattern with support >= %d in %s", s.min_support, [c.name for c in corpora]
        )
        return
    common = {
        "mined": len(patterns),
        "rejected": dict(rejected),
        "pairs": len(pairs),
        "sentences": stats.sentences,
    }
    evs = propose(ctx, evaluate, ((p, pat, {**common, "rank": i}) for i, (p, pat) in enumerate(chosen)))
    propose_ensemble(s, ctx, evaluate, evs)


def _single_token(be, word: str, space: bool) -> int | None:
    ids = be.tokenize((" " if space else "") + word)
    return ids[0] if len(ids) == 1 else None


def _placeholder(be, space: bool) -> str:
    """A word that is one token after the template's answer position (for probes and plans)."""
    for w in ("the", "a", "x", "I", "is", "of"):
        if _single_token(be, w, space) is not None:
            return w
    raise PromptError("mining: no single-token placeholder word in the vocabulary")  # pragma: no cover


class _WordFitter:
    """Label words for a template from its cached answer distributions on train (no extra model call
    beyond that one pass per batch, which the runner's train scoring of the prompt then reuses)."""

    def __init__(self, s: MiningSearcher, ctx: SearchContext, user: list[list[str]]) -> None:
        import torch

        from miner.search._labelwords import decoded_vocab

        self.s, self.ctx, self.user = s, ctx, user
        self.train = list(ctx.task.train)
        self.gold = torch.as_tensor([e.label for e in self.train])
        self.vocab = decoded_vocab(ctx.backend)
        self.masks: dict[bool, Any] = {}

    def placeholder_prompt(self, template: str) -> Prompt:
        labels = self.ctx.label_names
        probe = Prompt.create(template, {lab: ["x"] for lab in labels}, labels)
        space = self.ctx.scorer.compile(probe).space_to_word
        ph = _placeholder(self.ctx.backend, space)
        return Prompt.create(template, {lab: [ph] for lab in labels}, labels)

    def fit(self, template: str, pool_size: int) -> tuple[Prompt, dict[str, Any]] | None:
        """The template with its best verbalizer on train from user words and ``pool_size`` automatic ones."""
        from miner.search._labelwords import candidate_pool, search_verbalizers, word_mask

        ctx, be = self.ctx, self.ctx.backend
        labels = ctx.label_names
        probe = self.placeholder_prompt(template)
        space = ctx.scorer.compile(probe).space_to_word
        D = ctx.scorer.distributions(probe, self.train, desc="answer distributions")
        if space not in self.masks:
            self.masks[space] = word_mask(be, self.s.word_pattern, space)
        user = [
            [(w, tid) for w in ws if (tid := _single_token(be, w, space)) is not None] for ws in self.user
        ]
        pool = candidate_pool(
            D,
            self.gold,
            len(labels),
            self.masks[space],
            pool_size,
            self.s.likely_top,
            lambda w: _single_token(be, w, space),
            self.vocab,
            user,
        )
        if any(not ws for ws in pool.words):
            return None
        res = search_verbalizers(D, self.gold, pool, 1, metric=ctx.task.metric)
        words = {lab: [pool.words[c][j] for j in res.choice[c]] for c, lab in enumerate(labels)}
        info = {
            "train_fit": {"metric": res.metric, "loglik": res.loglik},
            "pool": {lab: pool.words[c][:10] for c, lab in enumerate(labels)},
        }
        return Prompt.create(template, words, labels), info


def _search_classification(s: MiningSearcher, ctx: SearchContext, evaluate: Evaluate) -> None:
    labels = ctx.label_names
    corpora = s._corpora(ctx, "classification")
    fitter = _WordFitter(s, ctx, s._user_words(ctx))
    probe_template = s._probe(ctx)
    probe = fitter.placeholder_prompt(probe_template)
    budget = ctx.budget
    planned = ctx.scorer.plan(probe, ctx.task.train) + ctx.scorer.plan(probe, ctx.task.dev)
    if budget is not None and not budget.can_afford(forward_passes=planned, evaluations=1):
        ctx.logger.info("mining: the budget cannot pay for the probe template's %d forward passes", planned)
        return
    try:
        fitted = fitter.fit(probe_template, s.auto_words)
    except BudgetExhausted:
        return
    if fitted is None:
        ctx.logger.warning("mining: a label has no candidate word on the probe template %r", probe_template)
        return
    probe_prompt, probe_info = fitted
    pool = probe_info["pool"]
    # Every word of the probe's pool (user words first) is a label word to look for in the corpora.
    words: dict[str, int] = {}
    for c, lab in enumerate(labels):
        for w in list(dict.fromkeys(fitter.user[c] + list(pool[lab]))):
            words.setdefault(w.lower(), c)
    patterns, stats = mine_contexts(
        words,
        corpora,
        fields=ctx.text_fields,
        cue_lengths=s.cue_lengths,
        agreement=s.agreement,
        min_support=s.min_support,
        match_case=s.match_case,
        balanced=s.balanced,
        progress=ctx.progress,
        max_sentences=s.max_sentences,
    )
    rejected: Counter[str] = Counter()
    chosen: list[tuple[Prompt, Pattern]] = []
    seen = {normalize(probe_template)}
    placeholder = probe.verbalizer
    for pat in patterns:
        if len(chosen) >= s.max_prompts - 1:
            break
        prompt = admit(pat.template, placeholder, ctx, seen, rejected)
        if prompt is not None:
            chosen.append((prompt, pat))
    ctx.logger.info(
        "mining: label words %s; %d sentences read (%d with a label word) from %s; %d cues, %d with support "
        ">= %d; proposing %d and the probe; rejected %s",
        {lab: pool[lab][:5] for lab in labels},
        stats.sentences,
        stats.matched,
        "+".join(c.name for c in corpora),
        stats.patterns,
        len(patterns),
        s.min_support,
        len(chosen),
        dict(rejected) or "none",
    )
    common = {"mined": len(patterns), "rejected": dict(rejected), "sentences": stats.sentences}
    probe_pattern = Pattern(probe_template, "label_words", 0.0, 0, ("model",), detail={"label_words": pool})
    first = [(probe_prompt, probe_pattern, {**common, "rank": -1, **probe_info})]
    evs = propose(ctx, evaluate, first)
    if not evs:
        return
    fixed = probe_prompt.verbalizer.to_dict()
    # 32 training examples overfit a large pool: by default the config's words where every label has some
    mined_auto = s.mined_auto_words
    if mined_auto is None:
        mined_auto = 0 if all(fitter.user) else s.auto_words

    def prepare(prompt: Prompt) -> tuple[Prompt, dict[str, Any]]:
        if not s.fit_words:
            return Prompt.create(prompt.template, fixed, labels), {}
        got = fitter.fit(prompt.template, mined_auto)
        if got is None:  # pragma: no cover - the probe's pool had words for every label
            return Prompt.create(prompt.template, fixed, labels), {}
        return got

    evs += propose(
        ctx, evaluate, ((p, pat, {**common, "rank": i}) for i, (p, pat) in enumerate(chosen)), prepare=prepare
    )
    propose_ensemble(s, ctx, evaluate, evs)


__all__ = ["MiningSearcher", "MiningStats", "Pattern", "mine_contexts", "mine_relations", "CorpusError"]
