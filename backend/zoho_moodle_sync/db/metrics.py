"""Counters shared by every process and host: monotonic totals kept in the database (Moodle
calls, delivery latency buckets), so that `/metrics` on any API process reports the same
figures and a restart never sends a counter back."""

from __future__ import annotations

from sqlalchemy import Float, String
from sqlalchemy.orm import Mapped, mapped_column

from zoho_moodle_sync.db.base import Base


class MetricCounter(Base):
    __tablename__ = "metric_counters"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    labels: Mapped[str] = mapped_column(String(500), primary_key=True)
    """The label values, as canonical JSON (sorted keys)."""
    value: Mapped[float] = mapped_column(Float, default=0.0)
