"""The configs under configs/ work from a clone: they parse and build their searchers without any
data, and where the few-shot data is present (found through $MINER_FEWSHOT_ROOT) each config's task
loads its splits. Uses no fixture from conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from miner.config import load_config
from miner.errors import MinerError
from miner.tasks import load_task

REPO = Path(__file__).resolve().parents[1]
ALL_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
# bench configs (``miner bench``: a grid of tasks) and run configs (``miner run``: one task)
BENCHES = [p for p in ALL_CONFIGS if p.name.startswith("bench")]
CONFIGS = [p for p in ALL_CONFIGS if p not in BENCHES]
SHARED_FEWSHOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fewshot"


def _need_data(cfg, monkeypatch) -> None:
    """Skip unless the config's data is on this machine: the few-shot folders, or the facts wheels."""
    import importlib.util

    if cfg.task.source == "kshot":
        root = _fewshot_root()
        if root is None:
            pytest.skip(f"few-shot data not found (set $MINER_FEWSHOT_ROOT; looked at {SHARED_FEWSHOT})")
        monkeypatch.setenv("MINER_FEWSHOT_ROOT", str(root))
    if cfg.task.source == "facts" and cfg.task.path is None:
        wheel = "gensim" if cfg.task.name in _GENSIM_RELATIONS else "countryinfo"
        if importlib.util.find_spec(wheel) is None:
            pytest.skip(f"the fact task's data wheel is not installed (pip install --no-deps {wheel})")


_GENSIM_RELATIONS = {"capital_world", "capital_common", "city_in_state", "currency", "nationality_adjective"}


def _fewshot_root() -> Path | None:
    """$MINER_FEWSHOT_ROOT when it is set, else the developers' shared copy beside the checkout (when present)."""
    given = os.environ.get("MINER_FEWSHOT_ROOT")
    root = Path(given) if given else SHARED_FEWSHOT
    return root if (root / "sst-2").is_dir() else None


def test_there_are_configs_and_none_points_outside_the_clone():
    assert len(CONFIGS) >= 9 and len(BENCHES) >= 2
    for path in ALL_CONFIGS:
        text = path.read_text(encoding="utf-8")
        assert "../" not in text and "/shared/" not in text, f"{path.name} names a folder outside the clone"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_parse_and_build_their_searchers(path, monkeypatch):
    """Every config under configs/ is valid: keys, types and each searcher's parameters (no data needed)."""
    from miner.runner import build_searchers

    monkeypatch.delenv("MINER_FEWSHOT_ROOT", raising=False)
    cfg = load_config(path)
    searchers = build_searchers(cfg)
    assert len(searchers) == len(cfg.searchers) >= 1
    if cfg.task.source == "kshot":
        assert cfg.task.root is None  # found through $MINER_FEWSHOT_ROOT
        with pytest.raises(MinerError, match=r"few-shot data not found.*MINER_FEWSHOT_ROOT.*sst-2/"):
            load_task(cfg.task, cfg.k[0], cfg.seeds[0])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_their_data(path, monkeypatch):
    """Each config's task gives train/dev/test for every (k, seed) job (the data only; no model runs)."""
    cfg = load_config(path)
    _need_data(cfg, monkeypatch)
    tokenize = None
    if getattr(cfg.task, "single_token", False):  # the checked-in tokenizer is the default model's
        from miner.testing.tiny import default_tokenizer

        tok = default_tokenizer()
        tokenize = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    for k in cfg.k:
        for seed in cfg.seeds:
            data = load_task(cfg.task, k, seed, tokenize=tokenize)
            assert data.test and len(data.label_names) >= 2
            if k:  # k per label; a fact task's k is pairs (its labels are the relation's objects)
                per_split = k if cfg.task.source == "facts" else k * len(data.label_names)
                assert len(data.train) == len(data.dev) == per_split
            if cfg.task.max_test is not None:
                assert len(data.test) <= cfg.task.max_test


@pytest.mark.parametrize("path", BENCHES, ids=lambda p: p.name)
def test_shipped_bench_configs_parse_and_load_their_data(path, monkeypatch):
    """Each bench config is valid, names known searchers, and each of its tasks loads every (k, seed) job's
    splits with a test split where the few-shot data is present."""
    from miner.benchmark import load_bench_config
    from miner.config import parse_config
    from miner.runner import build_searchers

    bench = load_bench_config(path)
    specs = bench.searcher_specs()
    assert specs and build_searchers(parse_config({"searchers": [s.model_dump() for s in specs]}))
    for t in bench.tasks:
        assert len(t.prompts) >= 2 and t.task.root is None
        if t.task.source == "kshot" and _fewshot_root() is None:
            continue
        if t.task.source == "kshot":
            monkeypatch.setenv("MINER_FEWSHOT_ROOT", str(_fewshot_root()))
        for k in bench.k:
            for seed in bench.seeds:
                data = load_task(t.task, k, seed)
                assert data.test and len(data.train) == k * len(data.label_names)
                labels = set(data.label_names)
                assert all(set(p.verbalizer) == labels for p in t.prompts)


@pytest.fixture(scope="module")
def default_backend():
    from miner.models import load_backend

    return load_backend("smollm2")


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate_on_the_default_model(path, monkeypatch, default_backend, tmp_path):
    """What ``miner run`` checks before its first row, on the real model: every job's data, every prompt
    against the tokenizer and the model's positions, every searcher's parameters against every job."""
    from miner.runner import prepare

    cfg = load_config(path)
    _need_data(cfg, monkeypatch)
    monkeypatch.chdir(tmp_path)  # nothing is written; if it were, it would land here
    prep = prepare(path, backend=default_backend, dry_run=True, keep_backend=True)
    assert prep.n_jobs == len(cfg.k) * len(cfg.seeds) * len(cfg.searchers)
    assert not any(tmp_path.iterdir())
