"""Fuzz ``load_exported``: a mutated export either loads or raises a ``MinerError``, in bounded memory.

Valid exports (a discrete, a calibrated, a trigger and a soft-reference prompt, and an ensemble,
shaped as ``export_best`` writes them) get random JSON mutations: any value at any path replaced
by a random JSON value (null, booleans, huge integers, NaN/inf, strings with slot syntax, lists,
objects), keys deleted, keys added. ``MINER_FUZZ_EXAMPLES`` sets the number of cases (the
default keeps the test to a few seconds; the issue's acceptance run uses 10000).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import tracemalloc
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miner.errors import MinerError
from miner.export import ExportedPrompt, load_exported
from miner.prompts import Prompt, PromptEnsemble

EXAMPLES = int(os.environ.get("MINER_FUZZ_EXAMPLES", "200"))
PEAK_BYTES = 200 * 2**20
LABELS = ["negative", "positive"]


def _export(prompt) -> dict:
    """What ``export_best`` writes for ``prompt`` (provenance and the run config included)."""
    run_config = {
        "task": {"source": "builtin", "name": "rotten_tomatoes", "max_test": 40},
        "model": {"name": "tiny"},
        "searchers": [{"name": "manual", "params": {"with_calibration": True}}],
        "seeds": [1, 2],
        "k": 4,
    }
    ex = ExportedPrompt(
        prompt=prompt,
        model="/models/tiny",
        task={
            "name": "rotten_tomatoes",
            "text_fields": ["sentence"],
            "label_names": LABELS,
            "metric": "accuracy",
            "k": 4,
            "seed": 1,
            "spec": run_config["task"],
        },
        scores={
            "metric": "accuracy",
            "train": 0.625,
            "dev": 0.5,
            "dev_loglik": -0.69,
            "test": None,
            "n_train": 8,
            "n_dev": 8,
            "n_test": 40,
        },
        provenance={
            "exported_at": "2026-01-01T00:00:00+00:00",
            "exported_by": "0.1.0",
            "searcher": "manual",
            "created_at": "2026-01-01 00:00:00",
            "versions": {"miner": "0.1.0", "torch": "2.13"},
            "run_config": run_config,
        },
        leaderboard={"storage": "sqlite:///lb.db", "row_id": 3, "run_id": "abc123"},
    )
    return ex.to_dict()


def _bases() -> list[dict]:
    verb = {"negative": ["terrible", "bad"], "positive": "great"}
    plain = Prompt.create("{sentence} It was {answer}", verb, LABELS)
    calibrated = Prompt.create(
        "Review: {sentence}\nSentiment: {answer}", verb, LABELS, calibrate=True, meta={"searcher": "manual"}
    )
    trigger = Prompt.create("{trigger:3} {sentence} It was {answer}", verb, LABELS, triggers=(101, 7, 4093))
    soft = Prompt.create("{soft:2}{sentence} It was {answer}", verb, LABELS, soft="soft:0123456789abcdef")
    ensemble = PromptEnsemble((plain, calibrated, trigger), meta={"ensemble_of": [1, 2, 3]})
    out = [_export(p) for p in (plain, calibrated, trigger, ensemble)]
    out.append({**_export(soft), "soft_export": "best"})
    return out


BASES = _bases()

# Strings that reach the template parser and the slot counter, beside arbitrary text.
slot_text = st.lists(
    st.sampled_from(
        [
            "{sentence}",
            "{answer}",
            "{soft:400000000}",
            "{trigger:99999999999999}",
            "{soft:0}",
            "{trigger}",
            "{trigger:5000}",
            "{soft:" + "9" * 5000 + "}",
            "{{",
            "}}",
            "{",
            "}",
            " It was ",
            "{ soft:3 }",
            "{text}",
        ]
    ),
    max_size=6,
).map("".join)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**31, 2**63, 10**30, -(10**30), 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    slot_text,
    st.text(
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2
    ),  # JSON's "\\ud800"
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(doc, prefix=()) -> list[tuple]:
    """Every path into ``doc`` (the root excluded)."""
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        out.append((*prefix, k))
        out.extend(_paths(v, (*prefix, k)))
    return out


def _at(doc, path):
    for k in path:
        doc = doc[k]
    return doc


@st.composite
def mutated(draw):
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        # the format tag last: Hypothesis favours early choices, and a changed tag only tests one check
        paths = sorted(_paths(doc), key=lambda p: p == ("format",))
        path = draw(st.sampled_from(paths)) if paths else ()
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if not path:
            break
        parent, key = _at(doc, path[:-1]), path[-1]
        if op == "replace":
            parent[key] = draw(json_values)
        elif op == "delete":
            del parent[key]
        else:
            target = _at(doc, path)
            if isinstance(target, dict):
                target[draw(st.text(max_size=12))] = draw(json_values)
            elif isinstance(target, list):
                target.insert(draw(st.integers(0, len(target))), draw(json_values))
            else:
                parent[key] = draw(json_values)
    return doc


_DIR = Path(tempfile.mkdtemp(prefix="miner-fuzz-export-"))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(doc=mutated())
def test_mutated_export_loads_or_raises_a_miner_error(doc):
    path = _DIR / "best.json"
    path.write_text(json.dumps(doc))
    tracemalloc.start()
    try:
        try:
            ex = load_exported(path)
        except MinerError as exc:
            assert "\n" not in str(exc), str(exc)
        else:
            assert isinstance(ex.prompt, (Prompt, PromptEnsemble))
            assert ex.label_names and ex.text_fields
            json.dumps(ex.prompt.to_dict(), ensure_ascii=False).encode("utf-8")  # all of it is text
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"load_exported peaked at {peak / 2**20:.0f} MB"


def test_the_unmutated_exports_load():
    for doc in BASES:
        path = _DIR / "base.json"
        path.write_text(json.dumps(doc))
        assert load_exported(path).prompt.to_dict() == doc["prompt"]
