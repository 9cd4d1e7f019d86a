"""Tables of background work: the one queue of jobs, and for Moodle delivery the links from Zoho
records to Moodle objects, the log of Moodle calls, and per-tenant pauses."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from zoho_moodle_sync.db.base import Base, BigId, JSONDocument, UTCDateTime, utcnow


class JobKind(StrEnum):
    """What a job does; every kind is claimed, leased, retried and settled the same way."""

    DELIVER = "deliver"
    """Make Moodle reflect one stored record (`action` sync), or apply the removal policy to it
    (`action` remove)."""
    WEBHOOK = "webhook"
    """Complete an accepted webhook event: fetch what it names from Zoho and store it."""
    SWEEP_PARKED = "sweep_parked"
    """Release parked records whose dependencies a concurrent transaction stored (per tenant)."""
    RETENTION = "retention"
    """Delete what is past its keeping time: idempotency keys, old events and history."""
    CATCH_UP = "catch_up"
    """Pull what changed in Zoho since the tenant's last pull (per tenant, periodic)."""
    MOODLE_CHECK = "moodle_check"
    """Read Moodle back and report where it differs from what was delivered (per tenant)."""


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    """A delivery whose prerequisite has no Moodle id yet."""
    HELD = "held"
    """A removal held by the mass-change guard until an operator confirms it."""
    DONE = "done"
    DEAD = "dead"
    SUPERSEDED = "superseded"
    """Finished without running: a newer job for the same thing carries on."""


OPEN_STATES = (JobState.PENDING, JobState.WAITING, JobState.HELD)
"""States of a job not yet taken by a worker; at most one open job has a given `key`."""
OPEN_CONDITION = "state IN ('pending', 'waiting', 'held')"


class Job(Base):
    """One unit of background work, written in the transaction that made it necessary (the
    record change, the accepted webhook) or by the scheduler (periodic upkeep)."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"))
    key: Mapped[str | None] = mapped_column(String(200))
    """What the job is about (`deliver:3:students:57257...`): a newer job with the same key
    replaces an open one instead of queueing a second."""
    entity: Mapped[str | None] = mapped_column(String(30))
    zoho_id: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str | None] = mapped_column(String(10))
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("inbound_events.id", ondelete="CASCADE")
    )
    state: Mapped[str] = mapped_column(String(10))
    """pending → running → done | dead; waiting, held and superseded as `JobState` says."""
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
        Index(None, "event_id"),
        Index(
            "uq_jobs_open_key",
            "key",
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
    """A tenant whose delivery stops until its Moodle is probed successfully: Moodle refused the
    token or a capability (`access`, until someone fixes it), or could not be reached (`outage`,
    the circuit breaker: jobs wait without spending their attempts)."""

    __tablename__ = "delivery_pauses"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), default="access")
    errorcode: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    paused_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    probe_at: Mapped[datetime] = mapped_column(UTCDateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    """Failed probes in a row: the next probe waits longer (up to MOODLE_PROBE_MAX_SECONDS)."""
