"""The :class:`Leaderboard`: append-only storage of evaluated prompts."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, overload

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from miner._io import process_gone
from miner.errors import ConfigError, DataError
from miner.leaderboard._engine import (
    LeaderboardError,
    create_tables,
    normalize_url,
    open_engine,
    run_read,
    run_write,
    safe_url,
)
from miner.leaderboard._records import (
    EvaluationRecord,
    LeaderboardRow,
    RunRow,
    check_float,
    check_int,
    record_to_row,
    to_json_dict,
)
from miner.leaderboard._schema import (
    evaluations,
    job_claims,
    metadata,
    picks,
    run_heartbeats,
    runs,
    test_scores,
)
from miner.leaderboard._versions import library_versions

logger = logging.getLogger(__name__)

ORDERS = ("dev", "test", "time")
# A process says it is alive every HEARTBEAT_S seconds; one silent for STALE_AFTER_S is taken for dead
# (at once, when it ran on this host and its pid is gone).
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@overload
def _utc(value: datetime) -> datetime: ...
@overload
def _utc(value: None) -> None: ...
def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back the naive UTC datetime we wrote; PostgreSQL an aware one in the
    # session's time zone. Both become aware UTC.
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _desc_nulls_last(column: Any) -> list[Any]:
    # PostgreSQL sorts NULL first under DESC, SQLite last; "IS NULL" first makes both agree.
    return [column.is_(None), column.desc()]


class Leaderboard:
    """Evaluations, runs and test scores in a SQL database (SQLite file or any SQLAlchemy URL).

    ``url`` is ``"sqlite:///path.db"``, ``"postgresql+psycopg://user:pw@host/db"`` or a bare
    file path (a SQLite file; its parent folder is created). Tables are created if missing.
    Safe to open from several processes at once; writes are single transactions.
    """

    def __init__(self, url: str, *, create: bool = True):
        """``create=False`` opens an existing leaderboard only (readers: ``leaderboard``, ``export``,
        ``plot``): a missing file or a database without the tables is an error, and nothing is created."""
        parsed = normalize_url(url)
        # ``url`` keeps the password so that Leaderboard(board.url) reconnects; anything
        # written to files or logs should use ``display_url`` instead.
        self.url: str = parsed.render_as_string(hide_password=False)
        self.display_url: str = safe_url(parsed)
        self._shown = safe_url(url)
        self._engine = open_engine(parsed, self._shown, create=create)
        self._pid = os.getpid()
        self._closed = False
        try:
            if create:
                create_tables(self._engine, metadata, self._shown)
            elif not run_read(self._engine, lambda conn: sa.inspect(conn).has_table(evaluations.name)):
                raise LeaderboardError(
                    f"{self._shown!r} holds no leaderboard (no '{evaluations.name}' table)"
                )
        except BaseException:
            self._engine.dispose()
            raise
        logger.debug("opened leaderboard %s", self._shown)

    def __repr__(self) -> str:
        return f"Leaderboard({self._shown!r})"

    def __enter__(self) -> Leaderboard:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connections. Further calls raise LeaderboardError."""
        if not self._closed:
            self._engine.dispose()
            self._closed = True

    @property
    def _db(self) -> sa.Engine:
        if self._closed:
            raise LeaderboardError(f"leaderboard {self._shown!r} is closed")
        if os.getpid() != self._pid:
            # Forked child: never reuse the parent's pooled connections (SQLAlchemy's advice).
            self._engine.dispose(close=False)
            self._pid = os.getpid()
        return self._engine

    # ----------------------------------------------------------------- runs
    def start_run(self, config: dict, provenance: dict) -> str:
        """Record a new run; returns its id (uuid4 hex). Library versions are added to provenance."""
        run_id = uuid.uuid4().hex
        values = {
            "run_id": run_id,
            "created_at": _utc_now(),
            "finished_at": None,
            "status": "running",
            "config": to_json_dict(config, "run config"),
            "provenance": {"versions": library_versions(), **to_json_dict(provenance, "run provenance")},
        }
        run_write(self._db, lambda conn: conn.execute(sa.insert(runs), values))
        return run_id

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        """Mark a run finished (or "failed", "interrupted", ...) and stamp finished_at."""
        if not isinstance(status, str) or not status:
            raise DataError(f"run status must be a non-empty string, got {status!r}")
        stmt = sa.update(runs).where(runs.c.run_id == run_id).values(status=status, finished_at=_utc_now())

        def work(conn: Connection) -> None:
            if conn.execute(stmt).rowcount == 0:
                raise LeaderboardError(f"unknown run_id {run_id!r}")

        run_write(self._db, work)

    def beat(self, run_id: str) -> None:
        """Say that this process is still running ``run_id`` (see ``mark_stale_runs``)."""
        values = {"host": socket.gethostname(), "pid": os.getpid(), "beat_at": _utc_now()}

        def work(conn: Connection) -> None:
            hb = run_heartbeats.c
            if (
                conn.execute(sa.update(run_heartbeats).where(hb.run_id == run_id).values(values)).rowcount
                == 0
            ):
                conn.execute(sa.insert(run_heartbeats), {"run_id": run_id, **values})

        run_write(self._db, work)

    def mark_stale_runs(self, stale_after_s: float = STALE_AFTER_S) -> list[str]:
        """Mark "interrupted" every run still "running" whose process is gone; returns their ids.

        A run's process is gone when it ran on this host and its pid no longer exists, or when its
        heartbeat (``beat``) is older than ``stale_after_s`` (a run with no heartbeat at all, from an
        older version, counts from its start).
        """
        hb = run_heartbeats.c
        stmt = (
            sa.select(runs.c.run_id, runs.c.created_at, hb.host, hb.pid, hb.beat_at)
            .select_from(runs.outerjoin(run_heartbeats, hb.run_id == runs.c.run_id))
            .where(runs.c.status == "running")
        )
        found = run_read(self._db, lambda conn: conn.execute(stmt).mappings().all())
        dead = [
            m["run_id"]
            for m in found
            if not _alive(m["host"], m["pid"], _utc(m["beat_at"] or m["created_at"]), stale_after_s)
        ]
        if dead:
            upd = (
                sa.update(runs)
                .where(runs.c.run_id.in_(dead), runs.c.status == "running")
                .values(status="interrupted", finished_at=_utc_now())
            )
            run_write(self._db, lambda conn: conn.execute(upd))
            logger.info(
                "marked %d run(s) whose process is gone as interrupted: %s", len(dead), ", ".join(dead)
            )
        return dead

    # ----------------------------------------------------------- job claims
    def claim_job(self, job_key: str, run_id: str, stale_after_s: float = STALE_AFTER_S) -> dict | None:
        """Take the claim on a job for ``run_id``: None when taken (it was free, stale, or ours already),
        else the live holder (``run_id``, ``host``, ``pid``). Only one process holds a job at a time."""
        me = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid()}
        jc = job_claims.c

        def work(conn: Connection) -> dict | None:
            now = _utc_now()
            held = conn.execute(sa.select(job_claims).where(jc.job_key == job_key)).mappings().first()
            if held is None:
                conn.execute(_insert_ignore(conn, job_claims), {"job_key": job_key, **me, "beat_at": now})
            elif (held["run_id"], held["host"], held["pid"]) != tuple(me.values()) and _alive(
                held["host"], held["pid"], _utc(held["beat_at"]), stale_after_s
            ):
                return {k: held[k] for k in ("run_id", "host", "pid")}
            else:  # ours, or its holder is gone: take it over
                conn.execute(sa.update(job_claims).where(jc.job_key == job_key).values(**me, beat_at=now))
            # an insert that lost a race to another process's insert did nothing: that process holds it
            now_held = conn.execute(sa.select(job_claims).where(jc.job_key == job_key)).mappings().one()
            holder = {k: now_held[k] for k in ("run_id", "host", "pid")}
            return None if holder == me else holder

        return run_write(self._db, work)

    def beat_claim(self, job_key: str, run_id: str) -> None:
        jc = job_claims.c
        stmt = (
            sa.update(job_claims).where(jc.job_key == job_key, jc.run_id == run_id).values(beat_at=_utc_now())
        )
        run_write(self._db, lambda conn: conn.execute(stmt))

    def release_job(self, job_key: str, run_id: str) -> None:
        jc = job_claims.c
        stmt = sa.delete(job_claims).where(jc.job_key == job_key, jc.run_id == run_id)
        run_write(self._db, lambda conn: conn.execute(stmt))

    def resolve_run_id(self, prefix: str) -> str:
        """The full id of the one run whose id starts with ``prefix`` (as ``git`` takes commit prefixes)."""
        if (
            not isinstance(prefix, str)
            or not prefix.strip()
            or not all(c in "0123456789abcdef" for c in prefix.lower())
        ):
            raise LeaderboardError(f"run id {prefix!r} is not a hex run id (or a prefix of one)")
        stmt = (
            sa.select(runs.c.run_id).where(runs.c.run_id.startswith(prefix.lower(), autoescape=True)).limit(2)
        )
        found = run_read(self._db, lambda conn: list(conn.execute(stmt).scalars()))
        if not found:
            raise LeaderboardError(f"no run with id {prefix!r} in {self._shown!r}")
        if len(found) > 1:
            raise LeaderboardError(f"run id prefix {prefix!r} matches several runs; give more characters")
        return found[0]

    def runs(self) -> list[RunRow]:
        """All runs, oldest first, with how many evaluations each wrote."""
        counts = (
            sa.select(evaluations.c.run_id, sa.func.count().label("n"))
            .group_by(evaluations.c.run_id)
            .subquery()
        )
        stmt = (
            sa.select(runs, sa.func.coalesce(counts.c.n, 0).label("n_evaluations"))
            .select_from(runs.outerjoin(counts, counts.c.run_id == runs.c.run_id))
            .order_by(runs.c.created_at, runs.c.run_id)
        )
        found = run_read(self._db, lambda conn: conn.execute(stmt).mappings().all())
        return [
            RunRow(
                run_id=m["run_id"],
                created_at=_utc(m["created_at"]),
                finished_at=_utc(m["finished_at"]),
                status=m["status"],
                config=m["config"],
                provenance=m["provenance"],
                n_evaluations=int(m["n_evaluations"]),
            )
            for m in found
        ]

    # ----------------------------------------------------------- evaluations
    def add_evaluations(self, records: Sequence[EvaluationRecord]) -> list[int]:
        """Append records in ONE transaction; returns their ids in order. All or nothing."""
        rows = [record_to_row(record, i) for i, record in enumerate(records)]
        if not rows:
            return []
        now, versions = _utc_now(), library_versions()
        for row in rows:
            row["created_at"] = now
            row["versions"] = versions
        run_ids = sorted({row["run_id"] for row in rows})

        def work(conn: Connection) -> list[int]:
            known = set(conn.execute(sa.select(runs.c.run_id).where(runs.c.run_id.in_(run_ids))).scalars())
            missing = [r for r in run_ids if r not in known]
            if missing:
                raise LeaderboardError(f"unknown run_id {missing[0]!r}: call start_run first")
            if conn.dialect.insert_executemany_returning_sort_by_parameter_order:
                stmt = sa.insert(evaluations).returning(evaluations.c.id, sort_by_parameter_order=True)
                return [int(i) for i in conn.execute(stmt, rows).scalars()]
            # Older SQLite without RETURNING: one statement per row, still one transaction.
            return [_inserted_id(conn, row) for row in rows]

        return run_write(self._db, work)

    def add_test_score(self, evaluation_id: int, test_score: float, n_test: int, metrics: dict) -> None:
        """Append a test score for a stored evaluation (the latest one wins in ``rows``)."""
        values = {
            "evaluation_id": check_int(evaluation_id, "evaluation_id"),
            "created_at": _utc_now(),
            "test_score": check_float(test_score, "test_score", optional=False),
            "n_test": check_int(n_test, "n_test", minimum=0),
            "metrics": to_json_dict(metrics, "test metrics"),
        }

        def work(conn: Connection) -> None:
            exists = conn.execute(
                sa.select(evaluations.c.id).where(evaluations.c.id == values["evaluation_id"])
            )
            if exists.first() is None:
                raise LeaderboardError(f"no evaluation with id {values['evaluation_id']} in the leaderboard")
            conn.execute(sa.insert(test_scores), values)

        run_write(self._db, work)

    def add_pick(self, run_id: str, job_key: str, evaluation_id: int, details: dict) -> None:
        """Record a job's pick decision: ``evaluation_id`` is its pick; ``details`` say why (docs/selection.md).

        ``details["roles"]`` maps role names (``guarded``, ``unguarded``, ``manual``) to row ids; rows read
        back carry them in ``extra["pick_roles"]``, and the pick row ``extra["pick"]`` and ``extra["pick_reason"]``.
        """
        values = {
            "run_id": run_id,
            "job_key": job_key,
            "evaluation_id": check_int(evaluation_id, "evaluation_id"),
            "created_at": _utc_now(),
            "details": to_json_dict(details, "pick details"),
        }

        def work(conn: Connection) -> None:
            conn.execute(sa.insert(picks), values)

        run_write(self._db, work)

    def picks(self, job_keys: Sequence[str] | None = None) -> dict[str, dict]:
        """The latest pick decision of each job (by job key): ``{"evaluation_id": id, **details}``."""
        stmt = sa.select(picks.c.job_key, picks.c.evaluation_id, picks.c.details).order_by(picks.c.id.asc())
        if job_keys is not None:
            stmt = stmt.where(picks.c.job_key.in_(list(job_keys)))
        found = run_read(self._db, lambda conn: conn.execute(stmt).all())
        return {key: {**(details or {}), "evaluation_id": int(eid)} for key, eid, details in found}

    def _with_picks(self, rows: list[LeaderboardRow]) -> list[LeaderboardRow]:
        """Rows with their job's latest pick decision merged into ``extra`` (pick, pick_reason, pick_roles)."""
        import dataclasses

        keys = {str(k) for k in ((r.extra or {}).get("job_key") for r in rows) if k}
        if not keys:
            return rows
        decided = self.picks(sorted(keys))
        if not decided:
            return rows
        out = []
        for r in rows:
            d = decided.get(str((r.extra or {}).get("job_key")))
            if d is None:
                out.append(r)
                continue
            extra = dict(r.extra or {})
            extra["declared_pick"] = bool(extra.get("pick"))  # what the searcher declared, if anything
            extra["pick"] = r.id == d["evaluation_id"]
            roles = sorted(role for role, rid in (d.get("roles") or {}).items() if rid == r.id)
            if roles:
                extra["pick_roles"] = roles
            if extra["pick"]:
                extra["pick_reason"] = d.get("reason")
            out.append(dataclasses.replace(r, extra=extra))
        return out

    def rows(
        self,
        *,
        task: str | None = None,
        model: str | None = None,
        searcher: str | None = None,
        seed: int | None = None,
        k: Any = ...,
        run_id: str | None = None,
        limit: int | None = None,
        order: str = "dev",
    ) -> list[LeaderboardRow]:
        """Stored evaluations joined with their latest test score.

        ``None`` filters mean "any", except ``k`` where ``...`` means any and ``None`` means
        full data. ``order``: "dev" (dev_score, dev_loglik, train_score, all descending
        with missing values last, then id), "test" (test_score first, then as "dev"),
        "time" (newest first).
        """
        if order not in ORDERS:
            raise ConfigError(f"unknown leaderboard order {order!r}; expected one of: {', '.join(ORDERS)}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ConfigError(f"leaderboard limit must be a non-negative int, got {limit!r}")

        latest = (
            sa.select(test_scores.c.evaluation_id, sa.func.max(test_scores.c.id).label("latest_id"))
            .group_by(test_scores.c.evaluation_id)
            .subquery("latest")
        )
        ts = test_scores.alias("ts")
        e = evaluations.c
        stmt = sa.select(
            evaluations, ts.c.test_score, ts.c.n_test, ts.c.metrics.label("test_metrics")
        ).select_from(
            evaluations.outerjoin(latest, latest.c.evaluation_id == e.id).outerjoin(
                ts, ts.c.id == latest.c.latest_id
            )
        )
        for column, wanted in (
            (e.task, task),
            (e.model, model),
            (e.searcher, searcher),
            (e.seed, seed),
            (e.run_id, run_id),
        ):
            if wanted is not None:
                stmt = stmt.where(column == wanted)
        if k is not ...:
            stmt = stmt.where(e.k.is_(None) if k is None else e.k == k)

        by_dev = [
            *_desc_nulls_last(e.dev_score),
            *_desc_nulls_last(e.dev_loglik),
            *_desc_nulls_last(e.train_score),
            e.id.asc(),
        ]
        if order == "dev":
            stmt = stmt.order_by(*by_dev)
        elif order == "test":
            stmt = stmt.order_by(*_desc_nulls_last(ts.c.test_score), *by_dev)
        else:
            stmt = stmt.order_by(e.created_at.desc(), e.id.desc())
        if limit is not None:
            stmt = stmt.limit(limit)

        found = run_read(self._db, lambda conn: conn.execute(stmt).mappings().all())
        return self._with_picks([_to_row(m) for m in found])

    def best(
        self,
        *,
        task: str,
        model: str,
        searcher: str | None = None,
        seed: int | None = None,
        k: Any = ...,
        run_id: str | None = None,
    ) -> LeaderboardRow | None:
        """The top row by dev order for these filters, or None when there is none.

        A job with a pick (the runner's pick decision, ``add_pick``; or, in older databases, a row its
        searcher declared with ``extra["pick"]``) is represented by its pick alone: its other rows are passed over.
        """
        rows = self.rows(task=task, model=model, searcher=searcher, seed=seed, k=k, run_id=run_id)
        picked = {_job_of(r) for r in rows if (r.extra or {}).get("pick")}
        for r in rows:
            if _job_of(r) not in picked or (r.extra or {}).get("pick"):
                return r
        return None


def _inserted_id(conn: Connection, row: dict[str, Any]) -> int:
    key = conn.execute(sa.insert(evaluations), row).inserted_primary_key
    assert key is not None  # a single-row INSERT reports the primary key it made
    return int(key[0])


def _insert_ignore(conn: Connection, table: sa.Table) -> Any:
    """INSERT that does nothing when the primary key exists (both dialects we support have it)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


def _alive(host: str | None, pid: int | None, beat_at: datetime | None, stale_after_s: float) -> bool:
    """Whether the process that wrote a heartbeat may still be running."""
    if beat_at is None or (_utc_now() - beat_at).total_seconds() > stale_after_s:
        return False
    return not process_gone(host, pid)


def _job_of(row: LeaderboardRow) -> tuple:
    """The job a row belongs to: its runner job key (shared by a job's workers), else its run and job fields."""
    key = (row.extra or {}).get("job_key")
    return ("key", key) if key else ("run", row.run_id, row.task, row.model, row.searcher, row.seed, row.k)


def _to_row(m: RowMapping) -> LeaderboardRow:
    values = dict(m)
    values["created_at"] = _utc(values["created_at"])
    return LeaderboardRow(**values)
