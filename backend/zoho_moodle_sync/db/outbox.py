"""Tables of Moodle delivery: the outbox of jobs, the links from Zoho records to Moodle objects,
the log of Moodle calls, and per-tenant pauses."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from zoho_moodle_sync.db.base import Base, BigId, JSONDocument, UTCDateTime, utcnow

OPEN_STATES = ("pending", "waiting", "held")
"""States of a job not yet taken by a worker; a record has at most one job in them."""
OPEN_CONDITION = "state IN ('pending', 'waiting', 'held')"


class MoodleJob(Base):
    """Make Moodle reflect the stored state of one record (`sync`), or apply the removal policy
    to it (`remove`). Written in the transaction that changed the record."""

    __tablename__ = "moodle_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    entity: Mapped[str] = mapped_column(String(30))
    zoho_id: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(10))
    state: Mapped[str] = mapped_column(String(10))
    """pending → running → done | dead; waiting (for a prerequisite's Moodle id), held (by the
    mass-change guard), superseded (a dead job whose record was delivered later)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    """An operator let this removal past the mass-change guard."""
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    wait_reason: Mapped[str | None] = mapped_column(Text)
    last_errorcode: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index(None, "state", "due_at"),
        Index(None, "tenant_id", "entity", "zoho_id"),
        Index(
            "uq_moodle_jobs_open_record",
            "tenant_id",
            "entity",
            "zoho_id",
            unique=True,
            postgresql_where=text(OPEN_CONDITION),
            sqlite_where=text(OPEN_CONDITION),
        ),
    )


class MoodleLink(Base):
    """The Moodle object a Zoho record became: user, category or course id, or for an
    enrolment the user and course; `adopted` when it existed in Moodle before the service."""

    __tablename__ = "moodle_links"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    entity: Mapped[str] = mapped_column(String(30))
    zoho_id: Mapped[str] = mapped_column(String(32))
    moodle_id: Mapped[int | None] = mapped_column(Integer)
    adopted: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(10), default="active")
    """active, suspended or removed (what the service last made of it in Moodle)."""
    detail: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    delivered_fingerprint: Mapped[str | None] = mapped_column(String(64))
    delivered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("tenant_id", "entity", "zoho_id"),)


class MoodleCall(Base):
    """One web-service call the worker made, successful or not."""

    __tablename__ = "moodle_calls"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    function: Mapped[str] = mapped_column(String(100))
    items: Mapped[int] = mapped_column(Integer)
    job_ids: Mapped[list[int]] = mapped_column(JSONDocument, default=list)
    ok: Mapped[bool] = mapped_column(Boolean)
    errorcode: Mapped[str | None] = mapped_column(String(100))
    message: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index(None, "tenant_id", "at"),)


class DeliveryPause(Base):
    """A tenant whose Moodle refused the token or a capability: delivery stops until fixed."""

    __tablename__ = "delivery_pauses"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    errorcode: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    paused_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    probe_at: Mapped[datetime] = mapped_column(UTCDateTime)
