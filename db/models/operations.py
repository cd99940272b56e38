"""Operational state: when each periodic job last succeeded, and the tasks that died."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, Identity, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base


class JobHeartbeat(Base):
    __tablename__ = "job_heartbeats"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_success_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_result: Mapped[Any | None] = mapped_column(JSONB)


class DeadLetter(Base):
    """A task that will not run again by itself: failed permanently, exhausted its
    retries, killed its worker too often (poison pill) or arrived as a bad message.

    One row per task id, so a task that fails again after ``dead retry`` updates
    its row (``attempts`` grows, ``last_seen`` moves) instead of adding another.
    """

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    task_name: Mapped[str] = mapped_column(String(200), nullable=False)
    queue: Mapped[str | None] = mapped_column(String(100))
    # NULL when the message could not be decoded (bad JSON, pickle, oversized):
    # such a letter cannot be retried, only inspected through raw_preview.
    args: Mapped[Any | None] = mapped_column(JSONB)
    kwargs: Mapped[Any | None] = mapped_column(JSONB)
    raw_preview: Mapped[str | None] = mapped_column(Text)
    exception_type: Mapped[str] = mapped_column(String(200), nullable=False)
    exception_message: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    error_code: Mapped[str] = mapped_column(String(100), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="dead")
    retried_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    retried_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now(),
                                                index=True)


class UpkeepRun(Base):
    """One run of an upkeep job (partitions, retention, purge, media sweep, backup,
    backup verification) with what it did per table in ``details``. ``status`` is
    ``ok``, ``partial`` (some table failed, the others ran) or ``failed``."""

    __tablename__ = "upkeep_runs"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    job: Mapped[str] = mapped_column(String(50), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    dry_run: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    details: Mapped[Any] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))

    __table_args__ = (Index("idx_upkeep_runs_job_finished", "job", text("finished_at DESC")),
                      CheckConstraint("status IN ('ok', 'partial', 'failed')", name="status_valid"))
