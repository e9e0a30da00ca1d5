"""``miner bench``: discrete against continuous prompts at one budget, with baselines, statistics,
plots and a report (docs/bench.md)."""

from miner.benchmark._config import BenchConfig, load_bench_config, parse_bench_config
from miner.benchmark._run import Bench, BenchResult, bench, measure_backward_cost
from miner.benchmark._stats import paired_bootstrap, summarize

__all__ = [
    "Bench",
    "BenchConfig",
    "BenchResult",
    "bench",
    "load_bench_config",
    "measure_backward_cost",
    "paired_bootstrap",
    "parse_bench_config",
    "summarize",
]
