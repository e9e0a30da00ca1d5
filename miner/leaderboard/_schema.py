"""Table definitions (SQLAlchemy Core), portable between SQLite and PostgreSQL.

The three result tables are append-only except ``runs.finished_at`` / ``runs.status``,
which ``finish_run`` fills in once (or the next run's start, for a run whose process died).
Two small bookkeeping tables are rewritten in place: ``run_heartbeats`` (which process runs a
run, and when it last said so) and ``job_claims`` (which run is running a job right now, so
that two ``--resume`` runs of one config never evaluate the same job side by side).
New tables are created on open, so older databases gain them without a migration.
``picks`` is append-only too: the runner's pick decision for a job (which row is its pick, and why),
written after the job's search; the latest one of a job is the one that counts.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# BIGINT primary keys do not become SQLite's auto-incrementing rowid alias; INTEGER does.
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Timestamps are written as aware UTC datetimes; SQLite gives them back naive (see _store._utc).
_Time = sa.DateTime(timezone=True)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("created_at", _Time, nullable=False),
    sa.Column("finished_at", _Time, nullable=True),
    sa.Column("status", sa.String(64), nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("provenance", sa.JSON, nullable=False),
)

evaluations = sa.Table(
    "evaluations",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("created_at", _Time, nullable=False),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("task", sa.String, nullable=False),
    sa.Column("model", sa.String, nullable=False),
    sa.Column("searcher", sa.String, nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("k", sa.Integer, nullable=True),
    sa.Column("prompt_key", sa.String, nullable=False),
    sa.Column("prompt", sa.JSON, nullable=False),
    sa.Column("metric", sa.String, nullable=False),
    sa.Column("train_score", sa.Double, nullable=True),
    sa.Column("dev_score", sa.Double, nullable=True),
    sa.Column("dev_loglik", sa.Double, nullable=True),
    sa.Column("n_train", sa.Integer, nullable=False),
    sa.Column("n_dev", sa.Integer, nullable=False),
    sa.Column("forward_passes", sa.BigInteger, nullable=False),
    sa.Column("tokens", sa.BigInteger, nullable=False),
    sa.Column("seconds", sa.Double, nullable=False),
    sa.Column("extra", sa.JSON, nullable=False),
    sa.Column("versions", sa.JSON, nullable=False),
    sa.Index("ix_evaluations_task_model", "task", "model"),
    sa.Index("ix_evaluations_run_id", "run_id"),
    sa.Index("ix_evaluations_prompt_key", "prompt_key"),
)

test_scores = sa.Table(
    "test_scores",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("evaluation_id", _BigId, sa.ForeignKey("evaluations.id"), nullable=False),
    sa.Column("created_at", _Time, nullable=False),
    sa.Column("test_score", sa.Double, nullable=False),
    sa.Column("n_test", sa.Integer, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Index("ix_test_scores_evaluation_id", "evaluation_id"),
)

run_heartbeats = sa.Table(
    "run_heartbeats",
    metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), primary_key=True),
    sa.Column("host", sa.String, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("beat_at", _Time, nullable=False),
)

job_claims = sa.Table(
    "job_claims",
    metadata,
    sa.Column("job_key", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("host", sa.String, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("beat_at", _Time, nullable=False),
)

picks = sa.Table(
    "picks",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("created_at", _Time, nullable=False),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("job_key", sa.String(64), nullable=False),
    sa.Column("evaluation_id", _BigId, sa.ForeignKey("evaluations.id"), nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Index("ix_picks_job_key", "job_key"),
)
