"""Synonyms from WordNet's own data files (Debian's ``wordnet-base``), read directly: no nltk, no download.

A data file (``data.noun``, ``data.verb``, ``data.adj``, ``data.adv``) holds one synset a line::

    06613686 10 n 02 movie 0 film 0 005 @ 06613056 n 0000 ... | a form of entertainment ...

offset, lexicographer file, synset type, the word count in two hex digits, then each word with its
lexical id (underscores for spaces; adjectives may carry a marker such as ``(a)`` or ``(ip)``), the
pointers, and the gloss after ``|``. Lines that start with spaces are the licence header. The files
are streamed once per call, keeping only the synsets of the words asked for.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

# Where Debian and Ubuntu's wordnet-base put the files; MINER_WORDNET_DIR overrides.
DEFAULT_DIRS = (Path("/usr/share/wordnet"), Path("/usr/local/share/wordnet"))
PARTS = ("noun", "verb", "adj", "adv")
_MARKER = re.compile(r"\([a-z]+\)$")


def find_wordnet(root: str | Path | None = None) -> Path | None:
    """The folder holding WordNet's ``data.*`` files, or None when there is none."""
    candidates = [Path(root)] if root else []
    env = os.environ.get("MINER_WORDNET_DIR")
    if env and not root:
        candidates.append(Path(env))
    if not root:
        candidates.extend(DEFAULT_DIRS)
    for c in candidates:
        if any((c / f"data.{p}").is_file() for p in PARTS):
            return c
    return None


def parse_synset(line: str) -> list[str] | None:
    """The words of one data-file line (lower case, spaces for underscores), or None for a header line."""
    if not line or line[0] == " ":
        return None
    parts = line.split(" ", 4 + 2 * 255)
    try:
        count = int(parts[3], 16)
    except (IndexError, ValueError):
        return None
    words = parts[4 : 4 + 2 * count : 2]
    return [_MARKER.sub("", w).replace("_", " ").lower() for w in words]


def synonyms(words: Iterable[str], root: str | Path, max_words: int = 2) -> dict[str, list[str]]:
    """For each of ``words`` (matched in lower case), the other words of every synset it belongs to, in the
    files' order (noun, verb, adjective, adverb), each once; phrases longer than ``max_words`` words are
    left out. A word WordNet does not know maps to an empty list."""
    wanted = {w.lower() for w in words}
    found: dict[str, list[str]] = {w: [] for w in wanted}
    seen: dict[str, set[str]] = {w: {w} for w in wanted}
    base = Path(root)
    for part in PARTS:
        path = base / f"data.{part}"
        if not path.is_file():
            continue
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                synset = parse_synset(line)
                if not synset or wanted.isdisjoint(synset):
                    continue
                for w in wanted.intersection(synset):
                    for other in synset:
                        if other not in seen[w] and len(other.split()) <= max_words:
                            seen[w].add(other)
                            found[w].append(other)
    return found
