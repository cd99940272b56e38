"""Engagement-counter reconciliation: the dirty queue, the drift ledger and run summaries."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Identity, Index, Integer,
    String, Text, text,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, created_at_column, uuid_pk

RUN_MODES = ("dirty", "refresh", "full")
RUN_STATUSES = ("running", "finished", "failed")


class CounterDirty(Base):
    """Append-only queue of parents whose counters may be stale, fed by statement-level
    triggers on the source tables. One table for every parent table: the id is stored as
    text so a counter on a new parent table needs no new queue, and the cast back to the
    key type happens once per batch of at most a few thousand ids."""

    __tablename__ = "counter_dirty"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    parent_table: Mapped[str] = mapped_column(Text, nullable=False)
    parent_id: Mapped[str] = mapped_column(Text, nullable=False)
    marked_at: Mapped[datetime] = created_at_column()

    __table_args__ = (Index("idx_counter_dirty_parent_table_id", "parent_table", "id"),)


class CounterRun(Base):
    """One reconcile run (dirty pass, forced refresh or full sweep) and its summary."""

    __tablename__ = "counter_runs"

    id: Mapped[str] = uuid_pk()
    mode: Mapped[str] = mapped_column(String(10), nullable=False)
    dry_run: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false", default=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False, server_default="running", default="running")
    started_at: Mapped[datetime] = created_at_column()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    rows_checked: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0", default=0)
    rows_fixed: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0", default=0)
    max_drift: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0", default=0)
    chunks_total: Mapped[int | None] = mapped_column(Integer)
    chunks_done: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0", default=0)
    # Why a run is 'failed' (e.g. closed as stale by the next run of its mode).
    failure_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("mode IN ('dirty', 'refresh', 'full')", name="mode_valid"),
        CheckConstraint("status IN ('running', 'finished', 'failed')", name="status_valid"),
        Index("idx_counter_runs_mode_started", "mode", "started_at"),
        # Closing stale runs reads only running rows, however long the history grows.
        Index("idx_counter_runs_running", "mode", "started_at", postgresql_where=text("status = 'running'")),
    )


class CounterRunChunk(Base):
    """One finished chunk of a full sweep; the run's totals are summed from these, so a
    chunk delivered twice is counted once."""

    __tablename__ = "counter_run_chunks"

    run_id: Mapped[str] = mapped_column(ForeignKey("counter_runs.id", ondelete="CASCADE"), primary_key=True)
    parent_table: Mapped[str] = mapped_column(Text, primary_key=True)
    start_id: Mapped[str] = mapped_column(Text, primary_key=True)
    end_id: Mapped[str] = mapped_column(Text, nullable=False)
    rows_checked: Mapped[int] = mapped_column(BigInteger, nullable=False)
    rows_fixed: Mapped[int] = mapped_column(BigInteger, nullable=False)
    max_drift: Mapped[int] = mapped_column(BigInteger, nullable=False)
    finished_at: Mapped[datetime] = created_at_column()


class CounterDrift(Base):
    """The ledger: one row per counter value a run corrected."""

    __tablename__ = "counter_drift"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("counter_runs.id", ondelete="CASCADE"), nullable=False, index=True)
    table_name: Mapped[str] = mapped_column(Text, nullable=False)
    column_name: Mapped[str] = mapped_column(Text, nullable=False)
    entity_id: Mapped[str] = mapped_column(Text, nullable=False)
    stored_value: Mapped[int] = mapped_column(Integer, nullable=False)
    true_value: Mapped[int] = mapped_column(Integer, nullable=False)
    detected_at: Mapped[datetime] = created_at_column()

    __table_args__ = (Index("idx_counter_drift_entity", "table_name", "entity_id"),)
