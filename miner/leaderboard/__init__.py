"""Append-only leaderboard of evaluated prompts in a SQL database (SQLite or PostgreSQL)."""

from miner.leaderboard._engine import LeaderboardError
from miner.leaderboard._records import EvaluationRecord, LeaderboardRow, RunRow
from miner.leaderboard._store import ORDERS, Leaderboard
from miner.leaderboard._table import DEFAULT_COLUMNS, format_table
from miner.leaderboard._versions import library_versions

__all__ = [
    "DEFAULT_COLUMNS",
    "ORDERS",
    "EvaluationRecord",
    "Leaderboard",
    "LeaderboardError",
    "LeaderboardRow",
    "RunRow",
    "format_table",
    "library_versions",
]
