"""Opening a database and running write transactions that survive concurrent writers.

SQLite is the default and the delicate one. Several processes (parallel runner
jobs, a CLI reading while a run writes) may open one file, so:

* WAL journal mode lets readers proceed while one writer writes;
* a busy timeout (both the driver's ``timeout=`` and ``PRAGMA busy_timeout``)
  makes a writer wait for the lock instead of failing at once;
* write transactions start with ``BEGIN IMMEDIATE``: a deferred transaction
  that reads and then tries to write can hit "database is locked" *without*
  the busy handler ever being called (its snapshot is stale), which is the
  classic way rows get lost;
* and whatever still fails with "database is locked" is retried with backoff.

pysqlite's own implicit BEGIN handling is switched off (``isolation_level =
None``) so that SQLAlchemy's ``begin`` event can emit the BEGIN we choose; this
is the recipe from SQLAlchemy's SQLite dialect documentation.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError

from miner.errors import MinerError

logger = logging.getLogger(__name__)

T = TypeVar("T")

SQLITE_TIMEOUT_S = 30.0
WRITE_ATTEMPTS = 8
_BACKOFF_BASE_S = 0.05
_BACKOFF_MAX_S = 2.0
# Execution option that marks a connection whose transaction will write.
_WRITE_OPTION = "miner_write"
# PostgreSQL SQLSTATEs worth retrying: serialization failure, deadlock detected.
_PG_RETRY_STATES = {"40001", "40P01"}
# Any constant works; it only has to be the same in every process creating the tables.
_PG_DDL_LOCK_KEY = 0x6D696E6572  # "miner"


class LeaderboardError(MinerError):
    """The leaderboard database could not be opened, read or written."""


def one_line(exc: BaseException) -> str:
    """A driver error as one line, without SQLAlchemy's SQL echo and help link."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = " ".join(part.strip() for part in str(inner).splitlines() if part.strip())
    if isinstance(exc, SQLAlchemyError) and inner is exc:
        # SQLAlchemy appends "(Background on this error at: ...)" to its own messages.
        text = text.split(" (Background on this error")[0]
    return text or type(inner).__name__


def safe_url(url: str | URL) -> str:
    """The URL for messages and logs: never print a password."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # ValueError: e.g. a non-numeric port
        # Unparseable, but it may still hold "user:password@": hide what looks like one.
        return mask_secrets(url)


def normalize_url(url: str) -> URL:
    """Parse ``url``; a bare file path means a SQLite file."""
    if not isinstance(url, str) or not url.strip():
        raise LeaderboardError(f"cannot open leaderboard {url!r}: expected a database URL or a file path")
    if "://" not in url:
        if url == ":memory:":
            return sa.make_url("sqlite://")
        return URL.create("sqlite", database=str(Path(url).expanduser().resolve()))
    try:
        return sa.make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise LeaderboardError(f"cannot open leaderboard {safe_url(url)!r}: {one_line(exc)}") from None


def is_sqlite_file(url: URL) -> bool:
    return (
        url.get_backend_name() == "sqlite"
        and url.database not in (None, "", ":memory:")
        and not (url.database.startswith("file:"))
    )


def _install_sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, see module doc
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock another process may hold.
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        writes = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (for records, argv and logs)."""
    return re.sub(r"(://[^/:@\s]*:)[^/@\s]+@", r"\1***@", text)


def open_engine(url: URL, shown: str, *, create: bool = True) -> Engine:
    """Create the engine (no connection yet); driver problems become LeaderboardError.

    ``shown`` is how the URL appears in messages (as the user wrote it, password hidden).
    With ``create=False`` a SQLite file must already exist (nothing is created for a reader).
    """
    kwargs: dict = {}
    if url.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S, "check_same_thread": False}
        if is_sqlite_file(url) and not create:
            # is_sqlite_file: the database is a file path
            if not Path(cast(str, url.database)).expanduser().is_file():
                raise LeaderboardError(
                    f"no leaderboard at {shown!r}: the file does not exist "
                    "(run 'miner run CONFIG' first, or name another with --storage)"
                )
        elif is_sqlite_file(url):
            parent = Path(cast(str, url.database)).expanduser().parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LeaderboardError(
                    f"cannot open leaderboard {shown!r}: cannot create {parent}: {exc.strerror}"
                ) from None
    else:
        # A server may drop idle connections between two long evaluations.
        kwargs["pool_pre_ping"] = True
    try:
        engine = sa.create_engine(url, **kwargs)
    except ImportError as exc:
        hint = f"install the driver for {url.drivername}"
        if url.get_backend_name() == "postgresql":
            hint += " (or pip install 'psycopg[binary]' and use a postgresql+psycopg:// URL)"
        raise LeaderboardError(
            f"cannot open leaderboard {shown!r}: database driver not installed ({exc}); {hint}"
        ) from None
    except (ArgumentError, TypeError) as exc:
        raise LeaderboardError(f"cannot open leaderboard {shown!r}: {one_line(exc)}") from None
    if url.get_backend_name() == "sqlite":
        _install_sqlite_events(engine)
    return engine


def create_tables(engine: Engine, metadata: sa.MetaData, shown_url: str) -> None:
    """Create missing tables; safe when several processes open a new database at once."""

    def _create(conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            # Two processes racing through CREATE TABLE IF NOT EXISTS can still collide on
            # the catalog; a transaction-scoped advisory lock serialises them.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_DDL_LOCK_KEY})
        metadata.create_all(conn, checkfirst=True)

    # On SQLite the write transaction (BEGIN IMMEDIATE) is what serialises the creators.
    run_write(engine, _create, failure=f"cannot open leaderboard {shown_url!r}")


def _retryable(exc: DBAPIError) -> bool:
    if isinstance(exc, OperationalError) and "locked" in str(exc.orig).lower():
        return True
    return getattr(exc.orig, "sqlstate", None) in _PG_RETRY_STATES


def run_write(
    engine: Engine,
    work: Callable[[Connection], T],
    *,
    attempts: int = WRITE_ATTEMPTS,
    failure: str = "leaderboard write failed",
) -> T:
    """Run ``work(conn)`` in one write transaction, retrying lock conflicts with backoff.

    ``work`` must be safe to run again: everything it did in a failed attempt was
    rolled back, so it only needs not to keep Python-side state between attempts.
    MinerErrors raised by ``work`` roll back and propagate unchanged.
    """
    for attempt in range(1, attempts + 1):
        try:
            with engine.connect() as conn:
                conn.execution_options(**{_WRITE_OPTION: True})
                with conn.begin():
                    return work(conn)
        except DBAPIError as exc:
            if attempt < attempts and _retryable(exc):
                delay = min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2 ** (attempt - 1)) * (0.5 + random.random())
                logger.warning(
                    "leaderboard write conflict (%s); retry %d/%d in %.2fs",
                    one_line(exc),
                    attempt,
                    attempts - 1,
                    delay,
                )
                time.sleep(delay)
                continue
            raise LeaderboardError(f"{failure}: {one_line(exc)}") from None
        except SQLAlchemyError as exc:
            raise LeaderboardError(f"{failure}: {one_line(exc)}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def run_read(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run ``work(conn)`` in a read transaction; driver errors become LeaderboardError."""
    try:
        with engine.connect() as conn:
            with conn.begin():
                return work(conn)
    except SQLAlchemyError as exc:
        raise LeaderboardError(f"leaderboard read failed: {one_line(exc)}") from None
