"""miner: automatic prompt mining and search for frozen language models."""

from miner._version import __version__  # noqa: E402
from miner.errors import BudgetExhausted, ConfigError, DataError, MinerError, ModelLoadError, PromptError  # noqa: E402
from miner.prompts import Prompt, PromptEnsemble, Verbalizer, parse_template  # noqa: E402

__all__ = [
    "__version__",
    "BudgetExhausted",
    "ConfigError",
    "DataError",
    "MinerError",
    "ModelLoadError",
    "Prompt",
    "PromptEnsemble",
    "PromptError",
    "Verbalizer",
    "parse_template",
    "run",
    "load_config",
    "load_backend",
    "load_task",
    "Leaderboard",
    "Scorer",
    "export_best",
    "load_exported",
    "predict",
    "plot_leaderboard",
    "bench",
]


def __getattr__(name: str):
    # Heavy modules (torch, transformers) load only when used.
    if name in ("run", "score_prompt"):
        from miner import runner

        return getattr(runner, name)
    if name == "load_config":
        from miner.config import load_config

        return load_config
    if name == "load_backend":
        from miner.models import load_backend

        return load_backend
    if name in ("load_task", "TaskSpec"):
        from miner import tasks

        return getattr(tasks, name)
    if name == "Leaderboard":
        from miner.leaderboard import Leaderboard

        return Leaderboard
    if name == "Scorer":
        from miner.scoring import Scorer

        return Scorer
    if name in ("export_best", "load_exported", "predict"):
        from miner import export

        return getattr(export, name)
    if name == "bench":
        from miner.benchmark import bench

        return bench
    if name == "plot_leaderboard":
        from miner.plot import plot_leaderboard

        return plot_leaderboard
    raise AttributeError(f"module 'miner' has no attribute {name!r}")
