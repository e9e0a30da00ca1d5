"""Append-only leaderboard of evaluated prompts in a SQL database (SQLite or PostgreSQL)."""

from miner.leaderboard._engine import LeaderboardError, is_sqlite_file, mask_secrets, normalize_url, safe_url
from miner.leaderboard._records import EvaluationRecord, LeaderboardRow, RunRow
from miner.leaderboard._store import HEARTBEAT_S, ORDERS, STALE_AFTER_S, Leaderboard
from miner.leaderboard._table import DEFAULT_COLUMNS, format_table
from miner.leaderboard._versions import library_versions

__all__ = [
    "DEFAULT_COLUMNS",
    "HEARTBEAT_S",
    "ORDERS",
    "STALE_AFTER_S",
    "EvaluationRecord",
    "Leaderboard",
    "LeaderboardError",
    "LeaderboardRow",
    "RunRow",
    "format_table",
    "is_sqlite_file",
    "library_versions",
    "mask_secrets",
    "normalize_url",
    "safe_url",
]
