"""The front door and the record stay in order: a short README, links that resolve, every result
file and every benchmark script indexed, nothing pointing outside the repository. No model, no
network: text and the file tree only."""

from __future__ import annotations

import fnmatch
import itertools
import json
import os
import re
import subprocess
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
# Transient files SQLite and Optuna leave beside a database while it is open: not records.
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)  # a fenced code block
SIDECARS = re.compile(r"\.(db-wal|db-shm|db-journal|optuna-lock|tmp)$")
# A repository path as the docs quote it: a top-level folder, then anything up to a space, quote or
# bracket; {a,b} alternatives stay part of it.
QUOTED_PATH = re.compile(
    r"(?<![\w./:-])(?:results|benchmarks|configs|docs|miner|tests)/(?:[^\s()'\"`;,={}\[\]]|\{[^{}\s]*\})*"
)


def _docs() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _files_under(folder: str) -> list[str]:
    """Paths (relative to ``folder``) of its tracked files and its new files that git does not ignore."""
    root = REPO / folder
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", folder],
            cwd=REPO,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        names = [
            str(p.relative_to(REPO)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
        ]
    rel = [
        Path(n).relative_to(folder).as_posix() for n in names if (REPO / n).is_file()
    ]  # a deleted file is gone
    return sorted(r for r in rel if not SIDECARS.search(r))


def _strip_code(text: str) -> str:
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def _links(text: str) -> list[str]:
    return re.findall(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _strip_code(text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _expand(token: str) -> list[str]:
    parts = re.split(r"(\{[^{}]*\})", token)
    choices = [p[1:-1].split(",") if p.startswith("{") and "," in p else [p] for p in parts]
    return ["".join(c) for c in itertools.product(*choices)]


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail to docs/"
    )


@pytest.mark.parametrize(
    "doc",
    [*_docs(), REPO / "results" / "README.md", REPO / "benchmarks" / "README.md"],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_relative_links_resolve(doc):
    broken = []
    for target in _links(doc.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif REPO not in dest.parents and dest != REPO:
            broken.append(f"{target} (outside the repository)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(REPO)})")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", _docs(), ids=lambda p: str(p.relative_to(REPO)))
def test_quoted_repository_paths_exist(doc):
    """A path in backticks or a code block (`results/...`, `benchmarks/...`) names a file or folder that exists."""
    text = doc.read_text()
    spans = FENCE.findall(text) + re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    missing = set()
    for span in spans:
        for token in QUOTED_PATH.findall(span):
            token = token.rstrip(".:")
            if re.search(r"[<>…$]", token) or token.endswith(".db"):
                continue
            for path in _expand(token):
                if not (list(REPO.glob(path)) if "*" in path else (REPO / path).exists()):
                    missing.add(path)
    assert not missing, f"{doc.relative_to(REPO)} names paths that do not exist: {sorted(missing)}"


@pytest.mark.parametrize(
    ("folder", "index"), [("results", "results/README.md"), ("benchmarks", "benchmarks/README.md")]
)
def test_every_file_is_indexed(folder, index):
    text = (REPO / index).read_text()
    files = [f for f in _files_under(folder) if f"{folder}/{f}" != index]
    assert files, f"no files found under {folder}/"
    # a quoted pattern (`bench/quick/jobs/*.json`) names every file it matches: one record per job
    patterns = [s for s in re.findall(r"`([^`\n]+)`", text) if "*" in s and " " not in s]
    unnamed = [f for f in files if f not in text and not any(fnmatch.fnmatchcase(f, p) for p in patterns)]
    assert not unnamed, f"{index} does not name: {unnamed}"


def test_nothing_points_outside_the_repository():
    texts = [
        *_docs(),
        REPO / "results" / "README.md",
        REPO / "benchmarks" / "README.md",
        *sorted(p for p in (REPO / "configs").rglob("*") if p.is_file()),
    ]
    offenders = [str(p.relative_to(REPO)) for p in texts if "../shared" in p.read_text()]
    assert not offenders, (
        f"these name ../shared (say 'the shared few-shot data (set $MINER_FEWSHOT_ROOT)'): {offenders}"
    )


def test_write_result_writes_the_shared_layout(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import _record

    out = tmp_path / "sub" / "r.json"
    record = _record.write_result(
        out,
        command="python benchmarks/bench_x.py --n 2",
        config={"n": 2},
        figures={"examples_per_s": 1.5},
        load=[0.5],
    )
    on_disk = json.loads(out.read_text())
    assert on_disk == record
    assert (
        tuple(on_disk)
        == _record.KEYS
        == ("command", "commit", "machine", "date", "load", "config", "figures")
    )
    assert on_disk["command"] == "python benchmarks/bench_x.py --n 2"
    assert on_disk["config"] == {"n": 2} and on_disk["figures"] == {"examples_per_s": 1.5}
    assert on_disk["load"] == [0.5]
    assert on_disk["machine"]["cores"] == os.cpu_count() and on_disk["machine"]["cpu"]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", on_disk["date"])
    assert on_disk["commit"] is None or re.match(r"[0-9a-f]{7,}(\+dirty)?$", on_disk["commit"])
    assert not list(out.parent.glob("*.tmp"))
    default_load = _record.write_result(tmp_path / "d.json", command="x", config={}, figures={})["load"]
    assert default_load is None or len(default_load) == 3
