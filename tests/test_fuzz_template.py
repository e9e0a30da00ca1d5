"""Fuzzing templates: whatever the string, parsing, building and compiling a prompt raise only
``MinerError``s, and never allocate more than a bounded amount.

``MINER_FUZZ_EXAMPLES`` sets the number of examples (default 300: a few seconds); for a long run,
``MINER_FUZZ_EXAMPLES=10000 python -m pytest -q tests/test_fuzz_template.py``.
"""

from __future__ import annotations

import os
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miner.errors import MinerError
from miner.prompts import Prompt, parse_template

N_EXAMPLES = int(os.environ.get("MINER_FUZZ_EXAMPLES", "300"))
PEAK_LIMIT = 200 * 2**20

_huge = st.one_of(
    st.integers(min_value=0, max_value=10),
    st.integers(min_value=0, max_value=10**40),
    st.sampled_from(["4096", "4097", "300000000", "400000000", "0", "00", "-1", "9" * 5000, "1e3", "٣"]),
)
_name = st.one_of(
    st.sampled_from(
        ["sentence", "answer", "trigger", "soft", "question", "Sentence", "_x", "a-b", "9x", "ünï"]
    ),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_\-]{0,8}", fullmatch=True),
)
_slot = st.one_of(
    st.sampled_from(
        [
            "{answer}",
            "{sentence}",
            "{trigger}",
            "{soft}",
            "{",
            "}",
            "{{",
            "}}",
            "{}",
            "{ answer }",
            "{answer:2}",
            "{sentence:1}",
            "{trigger:}",
            "{:3}",
            "{trigger:3:4}",
        ]
    ),
    st.builds(
        lambda kind, n: f"{{{kind}:{n}}}", st.sampled_from(["trigger", "soft", "answer", "sentence"]), _huge
    ),
    st.builds(lambda n: "{" + n + "}", _name),
)
_literal = st.one_of(
    st.text(max_size=12),
    st.sampled_from([" ", "\n", "It was ", "Review: ", "\u0000", "\ufeff", "🙂", "\u202e", "word " * 40]),
)
_wellformed = st.one_of(
    st.sampled_from(["{trigger}", "{soft}", "{sentence}", "{{", "}}", "{ trigger }"]),
    st.builds(
        lambda kind, n: f"{{{kind}:{n}}}",
        st.sampled_from(["trigger", "soft"]),
        st.one_of(st.integers(min_value=1, max_value=8), _huge),
    ),
    _literal.filter(lambda t: "{" not in t and "}" not in t),
)


@st.composite
def _mostly_valid(draw) -> str:
    """Well-formed slots around one {sentence} and one {answer}, so that many strings reach compile_prompt."""
    parts = draw(st.lists(_wellformed, max_size=6))
    for piece in ("{sentence}", "{answer}"):
        parts.insert(draw(st.integers(min_value=0, max_value=len(parts))), piece)
    return "".join(parts)


TEMPLATES = st.one_of(
    st.text(max_size=60), st.lists(st.one_of(_slot, _literal), max_size=10).map("".join), _mostly_valid()
)

_word = st.one_of(
    st.sampled_from(["great", "terrible", " good", "bad ", "", " ", "🙂", "\n"]), st.text(max_size=6)
)
VERBALIZERS = st.one_of(
    st.just({"negative": "terrible", "positive": "great"}),
    st.just({"negative": ["bad", "awful"], "positive": ["good"]}),
    st.dictionaries(
        st.one_of(st.text(max_size=5), st.integers(), st.none()),
        st.one_of(
            _word,
            st.lists(_word, max_size=3),
            st.integers(),
            st.none(),
            st.dictionaries(st.text(max_size=2), st.text(max_size=2), max_size=1),
        ),
        max_size=4,
    ),
)
TRIGGER_IDS = st.one_of(
    st.integers(min_value=-5, max_value=60_000), st.integers(), st.booleans(), st.text(max_size=3)
)


@pytest.fixture(scope="module")
def backend():
    from miner.testing.tiny import tiny_causal

    return tiny_causal()


def _exercise(backend, template, verbalizer, trigger_ids, fields_text, distinct) -> str:
    """How far the string got: "parse", "compile" (refused there, with a MinerError) or "encoded"."""
    from miner.scoring import compile_prompt, encode

    try:
        parsed = parse_template(template)
    except MinerError:
        return "parse"
    triggers = (
        tuple(trigger_ids[i % len(trigger_ids)] for i in range(parsed.n_triggers))
        if trigger_ids
        else (5,) * parsed.n_triggers
    )
    try:
        prompt = Prompt.create(
            template, verbalizer, triggers=triggers, soft="fuzz" if parsed.n_soft else None, distinct=distinct
        )
        cp = compile_prompt(prompt, backend)
    except MinerError:
        return "compile"
    enc = encode(cp, backend, {f: fields_text for f in parsed.fields})
    assert len(enc.prefix) + len(enc.suffix) + cp.max_word_len <= backend.max_length
    return "encoded"


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_fuzz_parse_create_compile(backend):
    peaks: list[int] = []

    @settings(
        max_examples=N_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(TEMPLATES, VERBALIZERS, st.lists(TRIGGER_IDS, max_size=3), st.text(max_size=300), st.booleans())
    def check(template, verbalizer, trigger_ids, fields_text, distinct):
        tracemalloc.start()
        try:
            _exercise(backend, template, verbalizer, trigger_ids, fields_text, distinct)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert peaks[-1] < PEAK_LIMIT, f"{template!r} allocated {peaks[-1] / 2**20:.0f} MB"

    check()
    assert len(peaks) >= min(N_EXAMPLES, 50)


@pytest.mark.parametrize(
    "template",
    [
        "{sentence} {trigger:300000000} {answer}",
        "{sentence} {soft:400000000} {answer}",
        "{trigger:4096}{answer}{sentence}",
        "{sentence}" + " word" * 700 + " {answer}",
        "{sentence} {trigger:" + "9" * 5000 + "} {answer}",
    ],
    ids=["trigger-huge", "soft-huge", "trigger-bound", "long-literal", "count-digits"],
)
def test_known_bombs(backend, template):
    tracemalloc.start()
    try:
        stage = _exercise(backend, template, {"negative": "bad", "positive": "good"}, [5], "text", True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stage in ("parse", "compile") and peak < PEAK_LIMIT
