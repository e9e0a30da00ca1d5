"""The code's shape, kept by tests: no import cycles, no reaching into another package's private
modules, and one scoring engine (only ``miner/scoring`` and ``miner/models`` call the model)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _modules(root: str) -> dict[str, Path]:
    out = {}
    for p in sorted((REPO / root).rglob("*.py")):
        name = ".".join(p.relative_to(REPO).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


MODULES = _modules("miner")


def _resolve(name: str) -> str:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(path: Path):
    """Every ``miner`` import of a file, at module level or inside a function: (line, module, names)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "miner":
                    yield node.lineno, a.name, ()
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "miner"
        ):
            yield node.lineno, node.module, tuple(a.name for a in node.names)


def test_no_import_cycles():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, path in MODULES.items():
        for _, module, names in _imports(path):
            targets = {
                _resolve(f"{module}.{n}") if f"{module}.{n}" in MODULES else _resolve(module) for n in names
            }
            graph[m] |= (targets or {_resolve(module)}) - {m, "miner"}  # the package facade imports lazily
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_private_imports_across_packages():
    bad = []
    for root in ("miner", "benchmarks"):
        for name, path in _modules(root).items():
            mine = _package(name) if root == "miner" else "benchmarks"
            for line, module, names in _imports(path):
                theirs = _package(module)
                private_module = any(part.startswith("_") for part in module.split(".")[1:])
                private_names = [n for n in names if n.startswith("_") and not n.startswith("__")]
                top_level = (
                    len(module.split(".")) == 2 and root == "miner"
                )  # miner._io, miner._version: shared helpers
                if theirs != mine and ((private_module and not top_level) or private_names):
                    bad.append(f"{path.relative_to(REPO)}:{line}: from {module} import {', '.join(names)}")
    assert not bad, "private names of another package:\n" + "\n".join(bad)


def test_only_the_scoring_layer_calls_the_model():
    """``Backend.forward``/``forward_cached`` and the model itself are called from scoring and models only."""
    bad = []
    for name, path in MODULES.items():
        if name.startswith(("miner.scoring", "miner.models")):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("forward", "forward_cached") or (
                    node.func.attr == "model" and isinstance(node.func.value, ast.Name)
                ):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}: .{node.func.attr}(...)")
    assert not bad, "model calls outside miner/scoring:\n" + "\n".join(bad)
