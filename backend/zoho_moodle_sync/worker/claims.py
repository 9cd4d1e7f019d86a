"""The worker's database side: claim due jobs, read what they need, and settle them (job states,
Moodle links, the call log) in one transaction per delivered batch."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.models import ENTITY_TABLES
from zoho_moodle_sync.db.outbox import OPEN_STATES, DeliveryPause, MoodleCall, MoodleJob, MoodleLink
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.outbox import due_condition, enqueue
from zoho_moodle_sync.settings import Settings

PREREQUISITE_ENTITIES = frozenset({"programs", "teachers", "students", "classes"})
"""Entities whose delivery can let a waiting job go on."""


@dataclass(frozen=True)
class Job:
    id: int
    entity: str
    zoho_id: str
    action: str
    attempts: int
    confirmed: bool


@dataclass(frozen=True)
class StoredRecord:
    data: dict[str, Any]
    deleted: bool


@dataclass(frozen=True)
class Link:
    moodle_id: int | None
    adopted: bool
    state: str
    detail: dict[str, Any]
    fingerprint: str | None


VerdictKind = Literal["done", "wait", "retry", "relink", "dead", "hold", "release", "superseded"]
_REOPENING = ("wait", "retry", "relink", "hold", "release")


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    reason: str | None = None
    errorcode: str | None = None


@dataclass(frozen=True)
class LinkWrite:
    entity: str
    zoho_id: str
    moodle_id: int | None
    adopted: bool
    state: str = "active"
    detail: dict[str, Any] = field(default_factory=dict)
    fingerprint: str | None = None
    drop: bool = False


@dataclass(frozen=True)
class CallRecord:
    function: str
    items: int
    job_ids: list[int]
    ok: bool
    errorcode: str | None
    message: str | None
    duration_ms: int


@dataclass
class Settlement:
    """What one delivered batch decided, written together."""

    verdicts: dict[int, Verdict] = field(default_factory=dict)
    links: list[LinkWrite] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)


def claim(
    db: Database, *, tenant_id: int, worker_id: str, limit: int, lease_seconds: float
) -> list[Job]:
    """Take up to `limit` due jobs of a tenant, oldest first. On PostgreSQL rows another worker
    is claiming are skipped (`FOR UPDATE SKIP LOCKED`); SQLite has one writer at a time."""
    now = utcnow()
    with db.sessions.begin() as session:
        query = (
            select(MoodleJob)
            .where(MoodleJob.tenant_id == tenant_id, due_condition(now))
            .order_by(MoodleJob.id)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        jobs = list(session.scalars(query))
        busy = _records_running_elsewhere(session, tenant_id, jobs, now)
        claimed = []
        for job in jobs:
            if (job.entity, job.zoho_id) in busy:
                continue
            job.state = "running"
            job.claimed_by = worker_id
            job.lease_until = now + timedelta(seconds=lease_seconds)
            job.updated_at = now
            claimed.append(
                Job(job.id, job.entity, job.zoho_id, job.action, job.attempts, job.confirmed)
            )
        return claimed


def renew(db: Database, *, worker_id: str, jobs: Sequence[Job], lease_seconds: float) -> list[Job]:
    """Extend the lease on the jobs of a claim this worker still holds, before delivering
    them. A job whose lease ran out meanwhile (a slow Moodle) may belong to another worker now,
    which delivers it; this worker leaves it alone."""
    if not jobs:
        return []
    lease_until = utcnow() + timedelta(seconds=lease_seconds)
    with db.sessions.begin() as session:
        held = set(
            session.scalars(
                update(MoodleJob)
                .where(
                    MoodleJob.id.in_([job.id for job in jobs]),
                    MoodleJob.claimed_by == worker_id,
                    MoodleJob.state == "running",
                )
                .values(lease_until=lease_until)
                .returning(MoodleJob.id)
            )
        )
    return [job for job in jobs if job.id in held]


def _records_running_elsewhere(
    session: Session, tenant_id: int, jobs: Sequence[MoodleJob], now: datetime
) -> set[tuple[str, str]]:
    """Records of `jobs` that another live job is being delivered for: per-record order."""
    if not jobs:
        return set()
    ids = [job.id for job in jobs]
    rows = session.execute(
        select(MoodleJob.entity, MoodleJob.zoho_id).where(
            MoodleJob.tenant_id == tenant_id,
            MoodleJob.state == "running",
            MoodleJob.lease_until >= now,
            MoodleJob.zoho_id.in_({job.zoho_id for job in jobs}),
            MoodleJob.id.not_in(ids),
        )
    ).all()
    return {(entity, zoho_id) for entity, zoho_id in rows}


def load_records(
    session: Session, *, tenant_id: int, entity: str, zoho_ids: Iterable[str]
) -> dict[str, StoredRecord]:
    table = ENTITY_TABLES[entity]
    rows = session.execute(
        select(table.c.zoho_id, table.c.data, table.c.deleted_at).where(
            table.c.tenant_id == tenant_id, table.c.zoho_id.in_(set(zoho_ids))
        )
    ).all()
    return {zoho_id: StoredRecord(data, deleted is not None) for zoho_id, data, deleted in rows}


def load_links(
    session: Session, *, tenant_id: int, entity: str, zoho_ids: Iterable[str]
) -> dict[str, Link]:
    rows = session.scalars(
        select(MoodleLink).where(
            MoodleLink.tenant_id == tenant_id,
            MoodleLink.entity == entity,
            MoodleLink.zoho_id.in_(set(zoho_ids)),
        )
    )
    return {
        row.zoho_id: Link(
            row.moodle_id, row.adopted, row.state, dict(row.detail), row.delivered_fingerprint
        )
        for row in rows
    }


def owners_of(
    session: Session, *, tenant_id: int, entities: Sequence[str], moodle_ids: Iterable[int]
) -> dict[int, tuple[str, str]]:
    """Which record already holds each Moodle id (to refuse linking one Moodle user twice)."""
    rows = session.execute(
        select(MoodleLink.moodle_id, MoodleLink.entity, MoodleLink.zoho_id).where(
            MoodleLink.tenant_id == tenant_id,
            MoodleLink.entity.in_(entities),
            MoodleLink.moodle_id.in_(set(moodle_ids)),
        )
    ).all()
    return {
        moodle_id: (entity, zoho_id) for moodle_id, entity, zoho_id in rows if moodle_id is not None
    }


def active_links(session: Session, *, tenant_id: int, entity: str) -> int:
    return int(
        session.scalar(
            select(func.count()).where(
                MoodleLink.tenant_id == tenant_id,
                MoodleLink.entity == entity,
                MoodleLink.state == "active",
            )
        )
        or 0
    )


def removed_links(session: Session, *, tenant_id: int, entity: str, since: datetime) -> int:
    """Records of `entity` the service suspended or removed in Moodle since `since`."""
    return int(
        session.scalar(
            select(func.count()).where(
                MoodleLink.tenant_id == tenant_id,
                MoodleLink.entity == entity,
                MoodleLink.state.in_(("suspended", "removed")),
                MoodleLink.delivered_at >= since,
            )
        )
        or 0
    )


def settle(
    db: Database,
    *,
    tenant_id: int,
    worker_id: str,
    jobs: Sequence[Job],
    settlement: Settlement,
    settings: Settings,
) -> None:
    """Write the batch's links, job states and calls in one transaction. Only jobs this
    worker still holds are settled: one whose lease ran out and that another worker took is
    that worker's to settle."""
    now = utcnow()
    with db.sessions.begin() as session:
        jobs = _still_held(session, worker_id, jobs)
        records = {(job.entity, job.zoho_id) for job in jobs}
        links = [link for link in settlement.links if (link.entity, link.zoho_id) in records]
        _write_links(session, tenant_id, links, now)
        reopened = [job for job in jobs if _kind(settlement, job) in _REOPENING]
        newer = _records_with_open_job(session, tenant_id, reopened)
        # Jobs whose new values are alike are written by one statement.
        alike: dict[tuple[tuple[str, Any], ...], list[int]] = {}
        for job in jobs:
            verdict = settlement.verdicts.get(job.id, Verdict("release"))
            if verdict.kind in _REOPENING and (job.entity, job.zoho_id) in newer:
                # The record changed meanwhile and has its own job: that one carries on.
                verdict = Verdict("superseded", "a newer job for this record is queued")
            values = _settled_values(job, verdict, now, settings)
            alike.setdefault(tuple(sorted(values.items())), []).append(job.id)
        for columns, ids in alike.items():
            session.execute(
                update(MoodleJob)
                .where(MoodleJob.id.in_(ids), MoodleJob.claimed_by == worker_id)
                .values(**dict(columns))
            )
        done = [job for job in jobs if _kind(settlement, job) == "done"]
        _supersede_dead(session, tenant_id, done, now)
        if any(job.entity in PREREQUISITE_ENTITIES for job in done):
            session.execute(
                update(MoodleJob)
                .where(MoodleJob.tenant_id == tenant_id, MoodleJob.state == "waiting")
                .values(due_at=now)
            )
        session.add_all(
            MoodleCall(
                tenant_id=tenant_id,
                function=call.function,
                items=call.items,
                job_ids=call.job_ids,
                ok=call.ok,
                errorcode=call.errorcode,
                message=call.message,
                duration_ms=call.duration_ms,
                at=now,
            )
            for call in settlement.calls
        )


def _still_held(session: Session, worker_id: str, jobs: Sequence[Job]) -> list[Job]:
    """`jobs` this worker still holds, locked until the settlement commits (so no other
    worker can claim them meanwhile)."""
    if not jobs:
        return []
    query = select(MoodleJob.id).where(
        MoodleJob.id.in_([job.id for job in jobs]),
        MoodleJob.claimed_by == worker_id,
        MoodleJob.state == "running",
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    held = set(session.scalars(query))
    return [job for job in jobs if job.id in held]


def _kind(settlement: Settlement, job: Job) -> VerdictKind:
    """A job the batch reached no verdict on goes back to the queue unchanged."""
    return settlement.verdicts.get(job.id, Verdict("release")).kind


def _settled_values(
    job: Job, verdict: Verdict, now: datetime, settings: Settings
) -> dict[str, Any]:
    """The job's columns once the verdict is applied."""
    values: dict[str, Any] = {"updated_at": now, "claimed_by": None, "lease_until": None}
    if verdict.kind == "done":
        values |= {"state": "done", "finished_at": now, "wait_reason": verdict.reason}
    elif verdict.kind == "wait":
        due = now + timedelta(seconds=settings.worker_wait_seconds)
        values |= {"state": "waiting", "due_at": due, "wait_reason": verdict.reason}
    elif verdict.kind == "superseded":
        values |= {"state": "superseded", "finished_at": now, "wait_reason": verdict.reason}
    elif verdict.kind == "hold":
        values |= {"state": "held", "wait_reason": verdict.reason}
    elif verdict.kind in ("relink", "release"):
        values |= {"state": "pending", "due_at": now, "wait_reason": verdict.reason}
    elif verdict.kind == "retry":
        attempts = job.attempts + 1
        values |= {"attempts": attempts, "last_errorcode": verdict.errorcode}
        values["last_error"] = verdict.reason
        if attempts >= settings.worker_max_attempts:
            values |= {"state": "dead", "finished_at": now}
            values["last_error"] = f"gave up after {attempts} attempts: {verdict.reason}"
        else:
            values |= {"state": "pending", "due_at": now + backoff(attempts, settings)}
    else:
        values |= {
            "state": "dead",
            "finished_at": now,
            "attempts": job.attempts + 1,
            "last_errorcode": verdict.errorcode,
            "last_error": verdict.reason,
        }
    return values


def backoff(attempts: int, settings: Settings) -> timedelta:
    """Exponential with full jitter in its upper half: 5 s, 10 s, 20 s ... capped."""
    ceiling = min(
        settings.worker_backoff_max_seconds, settings.worker_backoff_seconds * 2 ** (attempts - 1)
    )
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 (not a secret)


def _records_with_open_job(
    session: Session, tenant_id: int, jobs: Sequence[Job]
) -> set[tuple[str, str]]:
    """Records for which a newer change queued another job while these ran."""
    if not jobs:
        return set()
    rows = session.execute(
        select(MoodleJob.entity, MoodleJob.zoho_id).where(
            MoodleJob.tenant_id == tenant_id,
            MoodleJob.state.in_(OPEN_STATES),
            MoodleJob.zoho_id.in_({job.zoho_id for job in jobs}),
            MoodleJob.id.not_in([job.id for job in jobs]),
        )
    ).all()
    return {(entity, zoho_id) for entity, zoho_id in rows}


def _supersede_dead(session: Session, tenant_id: int, done: Sequence[Job], now: datetime) -> None:
    """A record delivered now makes its earlier dead jobs history, not work."""
    if not done:
        return
    delivered = {(job.entity, job.zoho_id): job.id for job in done}
    dead = session.execute(
        select(MoodleJob.id, MoodleJob.entity, MoodleJob.zoho_id).where(
            MoodleJob.tenant_id == tenant_id,
            MoodleJob.state == "dead",
            MoodleJob.zoho_id.in_({job.zoho_id for job in done}),
        )
    ).all()
    earlier = [
        job_id
        for job_id, entity, zoho_id in dead
        if job_id < delivered.get((entity, zoho_id), job_id)
    ]
    if earlier:
        session.execute(
            update(MoodleJob)
            .where(MoodleJob.id.in_(earlier))
            .values(state="superseded", updated_at=now)
        )


def _write_links(
    session: Session, tenant_id: int, links: Sequence[LinkWrite], now: datetime
) -> None:
    if not links:
        return
    moved: dict[str, set[str]] = {}
    existing = {
        (row.entity, row.zoho_id): row
        for row in session.scalars(
            select(MoodleLink).where(
                MoodleLink.tenant_id == tenant_id,
                MoodleLink.zoho_id.in_({link.zoho_id for link in links}),
            )
        )
    }
    for link in links:
        row = existing.get((link.entity, link.zoho_id))
        if link.drop:
            if row is not None:
                session.delete(row)
                existing.pop((link.entity, link.zoho_id))
            continue
        if row is None:
            row = MoodleLink(tenant_id=tenant_id, entity=link.entity, zoho_id=link.zoho_id)
            session.add(row)
            existing[(link.entity, link.zoho_id)] = row
        if link.moodle_id is not None and row.moodle_id != link.moodle_id:
            moved.setdefault(link.entity, set()).add(link.zoho_id)
        row.moodle_id = link.moodle_id
        row.adopted = link.adopted
        row.state = link.state
        row.detail = link.detail
        row.delivered_fingerprint = link.fingerprint
        row.delivered_at = now
    session.flush()
    _requeue_dependents(session, tenant_id, moved, now)


DEPENDENTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "students": (("enrollments", "student_zoho_id", "userid"),),
    "classes": (("enrollments", "class_zoho_id", "courseid"),),
    "teachers": (("classes", "teacher_zoho_id", "teacher_userid"),),
}
"""Whose Moodle side names a record's Moodle id: (entity, lookup column, key in its link)."""


def _requeue_dependents(
    session: Session, tenant_id: int, moved: dict[str, set[str]], now: datetime
) -> None:
    """A record that got a new Moodle id (a user created again after an administrator deleted
    it in Moodle): records delivered against its old id are queued again. On a first delivery
    nothing was delivered against it yet, and this finds nothing."""
    for entity, zoho_ids in moved.items():
        linked = session.execute(
            select(MoodleLink.zoho_id, MoodleLink.moodle_id).where(
                MoodleLink.tenant_id == tenant_id,
                MoodleLink.entity == entity,
                MoodleLink.zoho_id.in_(zoho_ids),
            )
        ).all()
        new_ids = {row.zoho_id: row.moodle_id for row in linked}
        for dependent, column, key in DEPENDENTS.get(entity, ()):
            table = ENTITY_TABLES[dependent]
            rows = session.execute(
                select(table.c.zoho_id, table.c[column], MoodleLink.detail)
                .join(
                    MoodleLink,
                    (MoodleLink.tenant_id == table.c.tenant_id)
                    & (MoodleLink.entity == dependent)
                    & (MoodleLink.zoho_id == table.c.zoho_id),
                )
                .where(
                    table.c.tenant_id == tenant_id,
                    table.c[column].in_(zoho_ids),
                    table.c.deleted_at.is_(None),
                )
            ).all()
            stale = [
                zoho_id
                for zoho_id, target, detail in rows
                if (detail or {}).get(key) not in (None, new_ids.get(target))
            ]
            if stale:
                enqueue(session, tenant_id=tenant_id, entity=dependent, zoho_ids=stale, now=now)


def pause_of(db: Database, tenant_id: int) -> DeliveryPause | None:
    with db.sessions() as session:
        return session.get(DeliveryPause, tenant_id)


def pause(
    db: Database, *, tenant_id: int, errorcode: str, reason: str, probe_seconds: float
) -> None:
    now = utcnow()
    with db.sessions.begin() as session:
        row = session.get(DeliveryPause, tenant_id)
        if row is None:
            row = DeliveryPause(tenant_id=tenant_id, paused_at=now)
            session.add(row)
        row.errorcode = errorcode
        row.reason = reason
        row.probe_at = now + timedelta(seconds=probe_seconds)


def resume(db: Database, *, tenant_id: int) -> bool:
    with db.sessions.begin() as session:
        row = session.get(DeliveryPause, tenant_id)
        if row is None:
            return False
        session.delete(row)
        return True
