"""Reconciliation: pulls from the Zoho API (an import, `zoho-moodle-sync pull`, or a scheduled
catch-up), with per module where it has got to (so a killed pull resumes from its last page) and
what it saw; and checks of Moodle against what was delivered (drift)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from zoho_moodle_sync.db.base import Base, BigId, JSONDocument, UTCDateTime, utcnow


class Pull(Base):
    __tablename__ = "zoho_pulls"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(10))
    """`import` (the CLI) or `catch_up` (the scheduled job)."""
    since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Only records modified (or deleted) after this; None for everything."""
    state: Mapped[str] = mapped_column(String(10))
    """running → done, or stopped (Zoho unavailable, refused, or the process killed)."""
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index(None, "tenant_id", "kind", "id"),)


class PullModule(Base):
    """One module of a pull: its records, then its deleted records, page by page."""

    __tablename__ = "zoho_pull_modules"

    pull_id: Mapped[int] = mapped_column(
        ForeignKey("zoho_pulls.id", ondelete="CASCADE"), primary_key=True
    )
    entity: Mapped[str] = mapped_column(String(30), primary_key=True)
    phase: Mapped[str] = mapped_column(String(10), default="records")
    """records → deleted → done."""
    page: Mapped[int] = mapped_column(Integer, default=1)
    page_token: Mapped[str | None] = mapped_column(String(500))
    """Where the current phase goes on: Zoho's page number, then its page token."""
    pages: Mapped[int] = mapped_column(Integer, default=0)
    records: Mapped[int] = mapped_column(Integer, default=0)
    outcomes: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    """Outcome → how many records came out so (deletions counted as DELETED)."""
    caught: Mapped[int] = mapped_column(Integer, default=0)
    """Changes no webhook had brought (found by a catch-up): a sign webhooks are being lost."""
    skipped: Mapped[str | None] = mapped_column(Text)
    """Why the module was not pulled (the org has no such module), when it was not."""
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MoodleCheck(Base):
    """One drift check of a tenant's Moodle: what it compared and what differed."""

    __tablename__ = "moodle_checks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    findings: Mapped[int] = mapped_column(Integer, default=0)
    repaired: Mapped[int] = mapped_column(Integer, default=0)
    """Records queued again to restore Zoho's state (`moodle check --repair`)."""
    summary: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    """What was compared per entity, and per kind of drift how many with the first examples."""

    __table_args__ = (Index(None, "tenant_id", "id"),)
