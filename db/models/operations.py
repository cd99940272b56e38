"""Operational state: when each periodic job last succeeded."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base


class JobHeartbeat(Base):
    __tablename__ = "job_heartbeats"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_success_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_result: Mapped[Any | None] = mapped_column(JSONB)
