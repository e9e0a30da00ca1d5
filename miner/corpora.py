"""Text corpora for mining: streaming readers of sentences, and whole-word phrase matching.

A corpus is named by a string or a mapping (a searcher's ``corpora`` parameter):

- ``"task"``: the job's own *training* texts (dev and test never propose anything);
- ``"lee"``: the Lee news corpus (``lee_background.cor``, 300 news stories, ~60k words) in the ``gensim``
  wheel's test data;
- ``"wikipedia"``: the English Wikipedia extract in the same test data
  (``enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``, 206 articles), read as a
  stream of XML pages with its wiki markup stripped by a few regular expressions;
- ``"text8"``: a text8 sample, if the installed ``gensim`` ships one (4.4.0 ships none: a clear error);
- ``"wordnet"``: WordNet glosses from Debian's ``wordnet-base`` package (``/usr/share/wordnet/data.*``, or
  ``$WNSEARCHDIR``): per synset, ``"<first word>: <definition>"``, then each quoted example;
- any other string: a text file (plain, ``.gz`` or ``.bz2``) or a folder (its ``*.txt``, ``*.txt.gz`` and
  ``*.txt.bz2`` files, recursively, in sorted order);
- ``{"hf": PATH_OR_BUILDER, "split": "train", "column": "text", "data_files": ...}``: one column of a
  dataset read with ``datasets.load_dataset(..., streaming=True)``, offline: a local path, or a packaged
  builder (``json``, ``csv``, ``text``, ``parquet``) with local ``data_files``; anything that would need
  the Hugging Face hub is refused in one line.

The ``gensim`` wheel is installed for its data only (``pip install --no-deps gensim``) and is never
imported: its files are found with :func:`importlib.util.find_spec`.

Every reader is a generator: a pass holds one block or one line in memory, never the corpus, and shows
a tqdm bar by bytes read (compressed bytes for ``.gz``/``.bz2``) or by rows. Lines are cut into
sentences by :func:`split_sentences`, a deliberately simple rule (no NLP dependency): a sentence ends
after ``.``, ``!`` or ``?`` (and any closing quotes or brackets) followed by white space and an
upper-case letter, a digit or an opening quote; a line with no such end (text8 has no punctuation at
all) is cut into pieces of at most :data:`MAX_SENTENCE_WORDS` words. Abbreviations ("Mr. Smith") are
split too; for pattern mining that costs a few patterns, not wrong ones.
"""

from __future__ import annotations

import bz2
import gzip
import html
import importlib.util
import io
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tqdm.auto import tqdm

from miner._lazy import require
from miner.errors import DataError
from miner.tasks import TaskData

logger = logging.getLogger(__name__)

MAX_SENTENCE_WORDS = 64  # a line without sentence ends is cut into pieces of at most this many words
_BLOCK = 1 << 20  # bytes read at a time: a 100 MB file of one line (text8) never sits in memory whole
_MAX_LINE_CHARS = 1 << 16  # a longer run without a newline is cut at its last space
_GENSIM_HINT = "pip install --no-deps gensim"
_WORDNET_HINT = "apt-get install wordnet-base"
_PACKAGED_BUILDERS = frozenset({"json", "csv", "text", "parquet", "arrow", "pandas"})
_TEXT_SUFFIXES = (".txt", ".txt.gz", ".txt.bz2")
BUILTIN_CORPORA = ("task", "lee", "wikipedia", "text8", "wordnet")


class CorpusError(DataError):
    """A corpus that cannot be read: missing, empty, unreadable, or one that would need the network."""


# ---------------------------------------------------------------------------------------------- text


_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s+[\"'“‘(\[]?[A-Z0-9])")
TOKEN = re.compile(r"\w+(?:['’\-]\w+)*|[^\w\s]")


def split_sentences(line: str, max_words: int = MAX_SENTENCE_WORDS) -> Iterator[str]:
    """The sentences of one line of text (see the module docstring for the rule)."""
    start = 0
    parts = []
    for m in _SENTENCE_END.finditer(line):
        parts.append(line[start : m.end()])
        start = m.end()
    parts.append(line[start:])
    for part in parts:
        words = part.split()
        if not words:
            continue
        for i in range(0, len(words), max_words):
            yield " ".join(words[i : i + max_words])


def tokenize(text: str) -> list[str]:
    """Words (letters, digits, inner apostrophes and hyphens) and single punctuation marks."""
    return TOKEN.findall(text)


_NO_SPACE_BEFORE = frozenset(",.;:!?)]}%'’”")
_NO_SPACE_AFTER = frozenset("([{$“‘")


def join_tokens(tokens: Sequence[str]) -> str:
    """Tokens back into text: a space between words, none before closing or after opening punctuation."""
    out: list[str] = []
    for t in tokens:
        if out and t not in _NO_SPACE_BEFORE and out[-1] not in _NO_SPACE_AFTER:
            out.append(" ")
        out.append(t)
    return "".join(out)


def normalize(text: str) -> str:
    """A dedup key for mined text: lower case, tokens re-joined (white space and punctuation spacing unified)."""
    return join_tokens(tokenize(text.lower()))


class PhraseMatcher:
    """Case-insensitive whole-word matching of many phrases in token lists, in one left-to-right scan.

    Phrases are indexed by their first token (a dict lookup per corpus token, whatever the number of
    phrases); at each position the longest phrase that matches wins and matches do not overlap.
    """

    def __init__(self, phrases: Iterable[str]) -> None:
        self.by_first: dict[str, list[tuple[str, ...]]] = {}
        self.keys: dict[tuple[str, ...], str] = {}
        for p in phrases:
            toks = tuple(t.lower() for t in tokenize(p))
            if not toks or toks in self.keys:
                continue
            self.keys[toks] = p
            self.by_first.setdefault(toks[0], []).append(toks)
        for group in self.by_first.values():
            group.sort(key=len, reverse=True)

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, lower: Sequence[str]) -> list[tuple[int, int, str]]:
        """``(start, end, phrase)`` of every match in lower-cased tokens ``lower``."""
        out = []
        i, n = 0, len(lower)
        by_first = self.by_first
        while i < n:
            group = by_first.get(lower[i])
            if group is not None:
                for toks in group:
                    k = len(toks)
                    if k == 1 or tuple(lower[i : i + k]) == toks:
                        out.append((i, i + k, self.keys[toks]))
                        i += k
                        break
                else:
                    i += 1
                continue
            i += 1
        return out


# ------------------------------------------------------------------------------------------- corpora


@dataclass(frozen=True)
class Corpus:
    """A named source of text. ``texts()`` starts a new streaming pass: ``(text, label)`` pairs, where
    ``label`` is the example's label for the task's own texts and None for any other corpus."""

    name: str
    open: Callable[[bool], Iterator[tuple[str, int | None]]]  # progress -> a fresh generator
    labelled: bool = False

    def texts(self, progress: bool = False) -> Iterator[tuple[str, int | None]]:
        return self.open(progress)

    def sentences(self, progress: bool = False) -> Iterator[tuple[str, int | None]]:
        """Each text cut into sentences (:func:`split_sentences`), with its label."""
        for text, label in self.texts(progress):
            for s in split_sentences(text):
                yield s, label

    def check(self) -> None:
        """Raise :class:`CorpusError` unless the corpus has at least one sentence (reads only that far)."""
        for _ in self.sentences(False):
            return
        raise CorpusError(f"corpus {self.name!r} is empty (no text in it)")

    @classmethod
    def from_iterable(cls, name: str, lines: Iterable[str]) -> Corpus:
        """A corpus over an iterable of lines (one pass only if ``lines`` is an iterator)."""

        def open_(progress: bool) -> Iterator[tuple[str, int | None]]:
            for line in tqdm(lines, desc=f"corpus {name}", unit="line", disable=not progress, leave=False):
                yield line, None

        return cls(name, open_)


def task_corpus(task: TaskData) -> Corpus:
    """The job's training texts, one per example and text field, with the example's label."""

    def open_(progress: bool) -> Iterator[tuple[str, int | None]]:
        for ex in tqdm(task.train, desc="corpus task", unit="example", disable=not progress, leave=False):
            for f in task.text_fields:
                text = str(ex.fields.get(f, ""))
                if text.strip():
                    yield text, ex.label

    return Corpus("task", open_, labelled=True)


def resolve(spec: str | Mapping[str, Any], task: TaskData | None = None) -> Corpus:
    """The corpus a spec names; a missing file, package or dataset is a one-line :class:`CorpusError`.

    Nothing is read beyond what locating the corpus needs; :meth:`Corpus.check` peeks at its first
    sentence (an empty corpus is an error there).
    """
    if isinstance(spec, Mapping):
        return _hf_corpus(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise CorpusError(f"a corpus is a name, a path or a mapping with 'hf', got {spec!r}")
    if spec == "task":
        if task is None:
            raise CorpusError("corpus 'task' needs a task (the job's training texts)")
        return task_corpus(task)
    if spec == "lee":
        path = _gensim_file("lee_background.cor", "lee")
        return Corpus("lee", lambda progress: _file_texts(path, progress))
    if spec == "wikipedia":
        path = _gensim_file(
            "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2", "wikipedia"
        )
        return Corpus("wikipedia", lambda progress: _wiki_texts(path, progress))
    if spec == "text8":
        found = sorted(p for p in _gensim_data().glob("*text8*") if p.is_file())
        if not found:
            raise CorpusError(
                "corpus 'text8': the installed gensim wheel's test data has no text8 sample "
                "(gensim 4.4.0 ships none); use 'wikipedia', 'lee' or a text8 file's path"
            )
        return Corpus("text8", lambda progress: _file_texts(found[0], progress))
    if spec == "wordnet":
        files = _wordnet_files()
        return Corpus("wordnet", lambda progress: _wordnet_texts(files, progress))
    return path_corpus(spec)


def path_corpus(path_like: str | os.PathLike[str]) -> Corpus:
    """A text file or a folder of text files (see the module docstring)."""
    path = Path(path_like).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(_TEXT_SUFFIXES))
        if not files:
            raise CorpusError(f"corpus folder {str(path)!r} has no *.txt, *.txt.gz or *.txt.bz2 file")

        def open_dir(progress: bool) -> Iterator[tuple[str, int | None]]:
            for f in files:
                yield from _file_texts(f, progress)

        return Corpus(str(path_like), open_dir)
    if not path.is_file():
        names = ", ".join(repr(n) for n in BUILTIN_CORPORA)
        raise CorpusError(
            f"corpus {str(path_like)!r} does not exist (not a file, a folder or one of {names})"
        )
    return Corpus(str(path_like), lambda progress: _file_texts(path, progress))


def _open_binary(path: Path, raw: BinaryIO) -> BinaryIO:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if name.endswith(".bz2"):
        return bz2.BZ2File(raw)  # type: ignore[return-value]
    return raw


def _file_texts(path: Path, progress: bool) -> Iterator[tuple[str, int | None]]:
    """The lines of a text file, read in blocks (a line longer than 64k characters is cut at a space)."""
    size = path.stat().st_size
    try:
        with (
            open(path, "rb") as raw,
            tqdm.wrapattr(
                raw, "read", total=size, desc=f"corpus {path.name}", disable=not progress, leave=False
            ) as counted,
        ):
            stream = io.TextIOWrapper(_open_binary(path, counted), encoding="utf-8", errors="replace")
            rest = ""
            while True:
                block = stream.read(_BLOCK)
                if not block:
                    break
                lines = (rest + block).split("\n")
                rest = lines.pop()
                while len(rest) > _MAX_LINE_CHARS:
                    cut = rest.rfind(" ", 0, _MAX_LINE_CHARS)
                    cut = cut if cut > 0 else _MAX_LINE_CHARS
                    lines.append(rest[:cut])
                    rest = rest[cut:]
                for line in lines:
                    if line.strip():
                        yield line, None
            if rest.strip():
                yield rest, None
    except (OSError, EOFError, ValueError) as exc:  # a truncated or corrupt .gz/.bz2, or a read error
        raise CorpusError(f"corpus file {str(path)!r} cannot be read: {exc}") from None


# --------------------------------------------------------------------------------- gensim test data


def _gensim_data() -> Path:
    spec = importlib.util.find_spec("gensim")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            f"the built-in corpora need the gensim wheel's test data; install it with: {_GENSIM_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data"


def _gensim_file(name: str, corpus: str) -> Path:
    path = _gensim_data() / name
    if not path.is_file():
        raise CorpusError(f"corpus {corpus!r}: {path} is missing; reinstall with: {_GENSIM_HINT}")
    return path


def gensim_file(name: str) -> Path:
    """A file of the ``gensim`` wheel's test data (e.g. ``questions-words.txt``), located without importing gensim."""
    return _gensim_file(name, name)


# Wiki markup: enough to turn articles into running text (templates, tables, references, links, files,
# bold/italic quotes and headings); what survives is a few stray brackets, harmless for counting patterns.
_WIKI_SUBS = [
    (re.compile(r"<!--.*?-->", re.S), " "),
    (re.compile(r"<ref[^>/]*/>", re.S), " "),
    (re.compile(r"<ref[^>]*>.*?</ref>", re.S), " "),
    (re.compile(r"<[^>]+>"), " "),
    (
        re.compile(
            r"\[\[(?:File|Image|Category|[a-z\-]{2,12}):[^\[\]]*(?:\[\[[^\[\]]*\]\][^\[\]]*)*\]\]", re.I
        ),
        " ",
    ),
    (re.compile(r"\[\[(?:[^\[\]|]*\|)?([^\[\]|]*)\]\]"), r"\1"),
    (re.compile(r"\[https?://[^\s\]]*\s?([^\]]*)\]"), r"\1"),
    (re.compile(r"'{2,}"), ""),
    (re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M), r"\1."),
    (re.compile(r"^[*#:;]+\s*", re.M), ""),
]
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|[^{}]*?\|\}", re.S)


def strip_wiki(text: str) -> str:
    """Wiki markup to plain text (templates and tables removed innermost first)."""
    for _ in range(8):  # nested {{...}}: each round removes the innermost level
        new = _TABLE.sub(" ", _TEMPLATE.sub(" ", text))
        if new == text:
            break
        text = new
    for rx, repl in _WIKI_SUBS:
        text = rx.sub(repl, text)
    return html.unescape(text)


def _wiki_texts(path: Path, progress: bool) -> Iterator[tuple[str, int | None]]:
    """Article paragraphs of a MediaWiki XML dump (``.bz2``), one page in memory at a time."""
    size = path.stat().st_size
    try:
        with (
            open(path, "rb") as raw,
            tqdm.wrapattr(
                raw, "read", total=size, desc=f"corpus {path.name[:24]}", disable=not progress, leave=False
            ) as counted,
        ):
            for _event, elem in ET.iterparse(_open_binary(path, counted), events=("end",)):
                if elem.tag.rsplit("}", 1)[-1] == "text" and elem.text:
                    body = elem.text
                    if not body.lstrip().upper().startswith("#REDIRECT"):
                        for para in strip_wiki(body).split("\n"):
                            if len(para.split()) >= 3:
                                yield para, None
                if elem.tag.rsplit("}", 1)[-1] == "page":
                    elem.clear()
    except (OSError, EOFError, ET.ParseError) as exc:
        raise CorpusError(f"corpus file {str(path)!r} cannot be read as a MediaWiki dump: {exc}") from None


# -------------------------------------------------------------------------------------------- wordnet


def wordnet_dir() -> Path:
    return Path(os.environ.get("WNSEARCHDIR") or "/usr/share/wordnet")


def _wordnet_files() -> list[Path]:
    root = wordnet_dir()
    files = [root / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    present = [f for f in files if f.is_file()]
    if not present:
        raise CorpusError(
            f"corpus 'wordnet': WordNet glosses are not installed ({root}/data.noun is missing); "
            f"install Debian's wordnet-base package: {_WORDNET_HINT}"
        )
    return present


_WN_MARKER = re.compile(r"\([a-z]+\)$")  # adjective position markers: "good(a)"


def wordnet_gloss(line: str) -> list[str]:
    """The texts of one ``data.*`` line: ``"<first word>: <definition>"`` and each quoted example."""
    if line.startswith("  ") or " | " not in line:
        return []  # the license header, or a line without a gloss
    head, gloss = line.split(" | ", 1)
    fields = head.split()
    if len(fields) < 5:
        return []
    word = _WN_MARKER.sub("", fields[4]).replace("_", " ")
    out = []
    definitions = []
    for part in gloss.strip().split(";"):
        part = part.strip()
        if not part:
            continue
        if part.startswith('"'):
            example = part.strip('"').strip()
            if example:
                out.append(example)
        else:
            definitions.append(part)
    if definitions:
        out.insert(0, f"{word}: {'; '.join(definitions)}")
    return out


def _wordnet_texts(files: Sequence[Path], progress: bool) -> Iterator[tuple[str, int | None]]:
    for path in files:
        for line, _ in _file_texts(path, progress):
            for text in wordnet_gloss(line):
                yield text, None


# ------------------------------------------------------------------------------------ hugging face


def _hf_corpus(spec: Mapping[str, Any]) -> Corpus:
    known = {"hf", "split", "column", "data_files", "name"}
    extra = sorted(set(spec) - known)
    if extra or "hf" not in spec:
        raise CorpusError(
            f"a dataset corpus is a mapping with 'hf' (and optional {sorted(known - {'hf'})}); got keys {sorted(spec)}"
        )
    path = str(spec["hf"])
    split = str(spec.get("split", "train"))
    column = str(spec.get("column", "text"))
    data_files = spec.get("data_files")
    name = str(spec.get("name") or f"hf:{path}")
    local = Path(path).expanduser().exists()
    if not local and not (path in _PACKAGED_BUILDERS and data_files):
        raise CorpusError(
            f"corpus {name!r}: {path!r} is not a local path nor a packaged builder "
            f"({', '.join(sorted(_PACKAGED_BUILDERS))}) with local data_files; reading it would need the "
            "Hugging Face hub, and miner works offline"
        )
    if data_files is not None:
        files = [data_files] if isinstance(data_files, str) else list(data_files)
        missing = [f for f in files if not Path(str(f)).expanduser().exists()]
        if missing:
            raise CorpusError(f"corpus {name!r}: data file {str(missing[0])!r} does not exist")

    def open_(progress: bool) -> Iterator[tuple[str, int | None]]:
        datasets = require("datasets")
        kw: dict[str, Any] = {"split": split, "streaming": True}
        if data_files is not None:
            kw["data_files"] = data_files
        try:
            rows = datasets.load_dataset(path, **kw)
        except Exception as exc:  # load_dataset raises many unrelated types; all mean "not loadable"
            raise CorpusError(f"corpus {name!r} cannot be loaded offline: {_one_line(exc)}") from None
        for row in tqdm(rows, desc=f"corpus {name}", unit="row", disable=not progress, leave=False):
            if column not in row:
                raise CorpusError(f"corpus {name!r} has no column {column!r}; columns: {sorted(row)}")
            value = row[column]
            if isinstance(value, str) and value.strip():
                yield value, None

    return Corpus(name, open_)


def _one_line(exc: BaseException, limit: int = 240) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
