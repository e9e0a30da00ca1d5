"""Third-party searchers: an installed package's entry point is a searcher like the built-in ones,
listed by ``miner searchers``, described by ``miner searchers NAME``, and checked by the conformance kit
with one fixture."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from miner.cli import main
from miner.search import searchers
from miner.testing.conformance import SearcherConformance

PLUGIN = '''
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from miner.prompts import Prompt
from miner.search import Searcher


@dataclass
class EchoSearcher(Searcher):
    """Scores the seed prompts, then each with its label words swapped."""

    name = "echo"
    summary = "a test plugin: the seed prompts and their label words reversed"

    rounds: Annotated[int, Field(ge=1, description="how many times to propose the seed prompts")] = 1

    def search(self, context, evaluate):
        for _ in range(self.rounds):
            for p in context.prompts:
                evaluate([p])
                words = dict(zip(p.verbalizer.labels, reversed([list(w) for w in p.verbalizer.words])))
                evaluate([Prompt.create(p.template, words, context.label_names)])
'''


def _install(root: Path, name: str, module: str, body: str, entry: str) -> None:
    """A package as pip would leave it: the module and a dist-info folder with its entry points."""
    (root / f"{module}.py").write_text(body)
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[miner.searchers]\n{entry}\n")


@pytest.fixture(scope="module")
def plugin_installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    _install(root, "miner_echo", "miner_echo", PLUGIN, "echo = miner_echo:EchoSearcher")
    _install(
        root,
        "miner_broken",
        "miner_broken",
        "raise ImportError('needs a missing package')\n",
        "broken = miner_broken:Nothing",
    )
    sys.path.insert(0, str(root))
    saved = dict(searchers._items), searchers._plugins_loaded, dict(searchers.broken)
    searchers._plugins_loaded = False  # look the entry points up again, with the new package on the path
    yield
    sys.path.remove(str(root))
    searchers._items.clear()
    searchers._items.update(saved[0])
    searchers._plugins_loaded, searchers.broken = saved[1], saved[2]
    sys.modules.pop("miner_echo", None)


def test_an_installed_plugin_is_listed_and_described(plugin_installed, capsys):
    assert main(["searchers"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("echo ") and "test plugin" in line for line in out.splitlines())
    assert "broken" in out and "failed to load" in out and "ImportError" in out  # named, not fatal
    assert main(["searchers", "echo"]) == 0
    out = capsys.readouterr().out
    assert "rounds" in out and "int = 1" in out and "how many times to propose" in out
    assert main(["searchers", "ecoh"]) == 2
    assert "did you mean 'echo'" in capsys.readouterr().err


def test_a_plugin_runs_from_a_config(plugin_installed, make_config, capsys):
    path, cfg = make_config(seeds=[1], searchers=[{"name": "echo", "params": {"rounds": 2}}])
    assert main(["run", str(path)]) == 0
    assert (
        "4 prompts" in capsys.readouterr().out
    )  # 2 seeds prompts + their swaps; round 2 adds duplicates only
    bad, _ = make_config("bad.yaml", searchers=[{"name": "echo", "params": {"rounds": 0}}])
    assert main(["run", str(bad)]) == 2
    assert "searchers[0].params.rounds" in capsys.readouterr().err


@pytest.mark.usefixtures("plugin_installed")
class TestEchoPlugin(SearcherConformance):
    @pytest.fixture
    def searcher(self):
        return searchers.build("echo", {"rounds": 1})


def test_every_builtin_parameter_is_described():
    from miner.search import parameters

    missing = [
        f"{name}.{p.name}" for name, cls in searchers.items() for p in parameters(cls) if not p.description
    ]
    assert not missing, f"parameters without a description: {missing}"
