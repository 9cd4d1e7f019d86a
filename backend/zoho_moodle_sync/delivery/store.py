"""Delivery's database side: read what claimed delivery jobs need (records, links, owners, the
guard's counts), and what a delivered batch writes beside its verdicts (links, calls, wake-ups),
in the queue's settling transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from zoho_moodle_sync import metrics
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import DeliveryPause, JobKind, JobState, MoodleCall, MoodleLink
from zoho_moodle_sync.db.jobs import Job as JobRow
from zoho_moodle_sync.db.models import ENTITY_TABLES
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import moodle_dependents, moodle_prerequisites
from zoho_moodle_sync.jobs.queue import RELEASE, Claimed, SettleHook, Verdict, enqueue_delivery
from zoho_moodle_sync.settings import Settings

PREREQUISITE_ENTITIES = moodle_prerequisites()
"""Entities whose delivery can let a waiting job go on."""


@dataclass(frozen=True)
class Job:
    """A claimed delivery job: make Moodle reflect one record, or remove it there."""

    id: int
    entity: str
    zoho_id: str
    action: str
    attempts: int
    confirmed: bool

    @classmethod
    def of(cls, claimed: Claimed) -> Job:
        entity, zoho_id = claimed.record
        return cls(
            claimed.id,
            entity,
            zoho_id,
            claimed.action or "sync",
            claimed.attempts,
            claimed.confirmed,
        )


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

    def verdict(self, job: Job | Claimed) -> Verdict:
        """A job the batch reached no verdict on goes back to the queue unchanged."""
        return self.verdicts.get(job.id, RELEASE)


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


def population(session: Session, *, tenant_id: int, entity: str, since: datetime) -> int:
    """The records of `entity` Zoho holds for the tenant: those stored and not deleted, and
    those deleted since `since` (a wave of deletions is judged against the population it
    came from, not the one it leaves)."""
    table = ENTITY_TABLES[entity]
    return int(
        session.scalar(
            select(func.count())
            .select_from(table)
            .where(
                table.c.tenant_id == tenant_id,
                (table.c.deleted_at.is_(None)) | (table.c.deleted_at >= since),
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


def settlement_hook(tenant_id: int, settlement: Settlement) -> SettleHook:
    """What a delivered batch writes beside its jobs' verdicts: the Moodle links of the records
    still held, the calls it made, and a wake-up for jobs waiting on a prerequisite it
    delivered."""

    def write(session: Session, held: list[Claimed]) -> None:
        now = utcnow()
        records = {job.record for job in held}
        links = [link for link in settlement.links if (link.entity, link.zoho_id) in records]
        _write_links(session, tenant_id, links, now)
        done = [job for job in held if settlement.verdict(job).kind == "done"]
        # A prerequisite that got its Moodle id, however (created, found, adopted), lets the
        # jobs waiting on it go on at once.
        if any(
            link.moodle_id is not None and link.entity in PREREQUISITE_ENTITIES for link in links
        ):
            session.execute(
                update(JobRow)
                .where(
                    JobRow.tenant_id == tenant_id,
                    JobRow.kind == JobKind.DELIVER,
                    JobRow.state == JobState.WAITING,
                )
                .values(due_at=now)
            )
        latency = session.execute(
            select(JobRow.created_at).where(JobRow.id.in_([job.id for job in done]))
        ).scalars()
        metrics.add(
            session,
            [
                *metrics.moodle_calls(
                    tenant_id, ((c.function, c.errorcode) for c in settlement.calls)
                ),
                *metrics.latencies(
                    tenant_id, ((now - created).total_seconds() for created in latency)
                ),
            ],
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

    return write


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
        for dependent_of in moodle_dependents(entity):
            dependent, column, key = dependent_of.entity, dependent_of.lookup, dependent_of.link_key
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
                enqueue_delivery(
                    session, tenant_id=tenant_id, entity=dependent, zoho_ids=stale, now=now
                )


def pause_of(db: Database, tenant_id: int) -> DeliveryPause | None:
    with db.sessions() as session:
        return session.get(DeliveryPause, tenant_id)


def pause(
    db: Database, *, tenant_id: int, errorcode: str, reason: str, probe_seconds: float
) -> None:
    """Moodle refused access: stop the tenant's delivery; probe again in `probe_seconds`."""
    now = utcnow()
    with db.sessions.begin() as session:
        row = session.get(DeliveryPause, tenant_id)
        if row is None:
            row = DeliveryPause(tenant_id=tenant_id, paused_at=now, failures=0)
            session.add(row)
        row.kind = "access"
        row.errorcode = errorcode
        row.reason = reason
        row.probe_at = now + timedelta(seconds=probe_seconds)


def trip(db: Database, *, tenant_id: int, reason: str, settings: Settings) -> DeliveryPause:
    """Moodle could not be reached: open (or keep open) the tenant's breaker, and put its next
    probe off a little longer each time (1 s, 2 s, 4 s ... up to MOODLE_PROBE_MAX_SECONDS)."""
    now = utcnow()
    with db.sessions.begin() as session:
        row = session.get(DeliveryPause, tenant_id)
        if row is None:
            row = DeliveryPause(
                tenant_id=tenant_id, kind="outage", errorcode="unavailable", paused_at=now
            )
            row.failures = 0
            session.add(row)
        elif row.kind != "outage":
            return row  # a refusal of access is the more serious pause; it stays
        row.failures += 1
        row.reason = reason
        wait = min(settings.moodle_probe_max_seconds, 2.0 ** (row.failures - 1))
        row.probe_at = now + timedelta(seconds=wait)
        session.flush()
        session.expunge(row)
        return row


def outage_is_old(row: DeliveryPause, settings: Settings) -> bool:
    """Past the grace (MOODLE_OUTAGE_GRACE_HOURS), an outage no longer spares the jobs' attempts."""
    age = utcnow() - row.paused_at
    return row.kind == "outage" and age >= timedelta(hours=settings.moodle_outage_grace_hours)


def resume(db: Database, *, tenant_id: int) -> bool:
    """Moodle answers again: end the pause, and make every delivery job of the tenant that is
    waiting out a backoff due now."""
    now = utcnow()
    with db.sessions.begin() as session:
        row = session.get(DeliveryPause, tenant_id)
        if row is None:
            return False
        session.delete(row)
        session.execute(
            update(JobRow)
            .where(
                JobRow.tenant_id == tenant_id,
                JobRow.kind == JobKind.DELIVER,
                JobRow.state.in_((JobState.PENDING, JobState.WAITING)),
                JobRow.due_at > now,
            )
            .values(due_at=now)
        )
        return True
