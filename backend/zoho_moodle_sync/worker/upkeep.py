"""Periodic upkeep, as jobs of the queue: releasing parked records whose dependencies a
concurrent transaction stored (per tenant, every PARKED_SWEEP_SECONDS), and retention (daily:
expired idempotency keys, and what is older than RETENTION_DAYS unless that is 0, are deleted).

A periodic job is one row that goes back to `pending`, due at its next run, each time it is done;
whichever worker claims it runs it, so it runs on one process at a time across hosts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, delete, or_, select, update
from sqlalchemy.orm import Session

from zoho_moodle_sync import tenants
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import OPEN_STATES, Job, JobKind, JobState, MoodleCall
from zoho_moodle_sync.db.models import InboundEvent, ParkedRecord, RecordOutcome, Tenant
from zoho_moodle_sync.db.security import IdempotentRequest
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.ingress import pipeline
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.jobs.lease import settle_surely
from zoho_moodle_sync.jobs.queue import Claimed, Verdict
from zoho_moodle_sync.settings import Settings

log = logging.getLogger(__name__)

RETENTION_INTERVAL = timedelta(days=1)
PRUNE_CHUNK = 5000
"""Rows deleted per transaction, so that pruning a large backlog never holds long locks."""
UPKEEP_KINDS = (JobKind.SWEEP_PARKED, JobKind.RETENTION)


def schedule(db: Database, settings: Settings, kinds: Collection[JobKind] = UPKEEP_KINDS) -> None:
    """Make sure every periodic job of `kinds` the settings ask for is queued (once; due now
    when new)."""
    now = utcnow()
    with db.sessions.begin() as session:
        if JobKind.SWEEP_PARKED in kinds and settings.parked_sweep_seconds > 0:
            for tenant in tenants.list_all(session):
                if tenant.disabled_at is None:
                    queue.ensure_scheduled(
                        session, kind=JobKind.SWEEP_PARKED, tenant_id=tenant.id, due_at=now
                    )
        if JobKind.RETENTION in kinds:
            queue.ensure_scheduled(session, kind=JobKind.RETENTION, tenant_id=None, due_at=now)


async def run_due(
    db: Database,
    settings: Settings,
    *,
    worker_id: str,
    kinds: Collection[JobKind] = UPKEEP_KINDS,
) -> int:
    """Claim and run the due upkeep jobs of `kinds`; how many were settled."""
    settled = 0
    for kind in (kind for kind in UPKEEP_KINDS if kind in kinds):
        jobs = await asyncio.to_thread(
            lambda kind=kind: queue.claim(  # type: ignore[misc]
                db,
                kind=kind,
                worker_id=worker_id,
                limit=100,
                lease_seconds=settings.worker_lease_seconds,
            )
        )
        if not jobs:
            continue
        verdicts = {job.id: await asyncio.to_thread(_run, db, settings, job) for job in jobs}
        await settle_surely(
            db, worker_id=worker_id, jobs=jobs, verdicts=verdicts, settings=settings
        )
        settled += len(jobs)
    return settled


def _run(db: Database, settings: Settings, job: Claimed) -> Verdict:
    try:
        if job.kind == JobKind.SWEEP_PARKED:
            return _sweep(db, settings, job)
        return _retention(db, settings)
    except Exception as error:  # a defect or the database going away: retried later
        log.exception("%s job %s failed", job.kind, job.id)
        return Verdict("retry", f"{type(error).__name__}: {error}", "internal")


def _sweep(db: Database, settings: Settings, job: Claimed) -> Verdict:
    with db.sessions() as session:
        tenant = session.get(Tenant, job.tenant_id) if job.tenant_id else None
        context = tenants.context_of(tenant) if tenant and tenant.disabled_at is None else None
    if context is not None:
        released = pipeline.sweep_parked(db, context)
        if released:
            log.info("tenant %s: parked-record sweep released %d", context.slug, len(released))
    if settings.parked_sweep_seconds <= 0 or context is None:
        return Verdict("done")
    return Verdict("again", delay=settings.parked_sweep_seconds)


def _retention(db: Database, settings: Settings) -> Verdict:
    counts = prune(db, retention_days=settings.retention_days)
    if any(counts.values()):
        log.info("retention: deleted %s", ", ".join(f"{n} {what}" for what, n in counts.items()))
    return Verdict("again", delay=RETENTION_INTERVAL.total_seconds())


def prune(db: Database, *, retention_days: float) -> dict[str, int]:
    """Delete expired idempotency keys, and what is older than `retention_days`: inbound events
    (bodies included), outcome history, the Moodle call log and finished jobs. Never a record's
    stored state, and never an event that a parked record or an unfinished job still needs."""
    now = utcnow()
    cutoff = now - timedelta(days=retention_days)
    counts = {
        "idempotency keys": _delete_all(
            db, select(IdempotentRequest.id).where(IdempotentRequest.expires_at <= now)
        )
    }
    if retention_days <= 0:
        return counts
    counts["finished jobs"] = _delete_all(
        db,
        select(Job.id).where(
            Job.state.in_((JobState.DONE, JobState.SUPERSEDED)), Job.finished_at < cutoff
        ),
    )
    counts["outcomes"] = _delete_all(db, select(RecordOutcome.id).where(RecordOutcome.at < cutoff))
    counts["moodle calls"] = _delete_all(db, select(MoodleCall.id).where(MoodleCall.at < cutoff))
    needed_by_parking = select(ParkedRecord.inbound_event_id).where(
        ParkedRecord.inbound_event_id.is_not(None)
    )
    needed_by_jobs = select(Job.event_id).where(
        Job.event_id.is_not(None),
        or_(Job.state.in_([*OPEN_STATES, JobState.RUNNING, JobState.DEAD])),
    )
    counts["inbound events"] = _delete_all(
        db,
        select(InboundEvent.id).where(
            InboundEvent.received_at < cutoff,
            InboundEvent.status != "accepted",
            InboundEvent.id.not_in(needed_by_parking),
            InboundEvent.id.not_in(needed_by_jobs),
        ),
        before=_forget_replays,
    )
    return counts


def _forget_replays(session: Session, ids: Sequence[Any]) -> None:
    """A kept replay no longer points at an original that is deleted."""
    session.execute(
        update(InboundEvent).where(InboundEvent.replay_of.in_(ids)).values(replay_of=None)
    )


def _delete_all(db: Database, ids: Select[Any], *, before: Any = None) -> int:
    """Delete the rows `ids` selects, a chunk per transaction; how many."""
    table = ids.selected_columns[0].table
    total = 0
    while True:
        with db.sessions.begin() as session:
            chunk = list(session.scalars(ids.limit(PRUNE_CHUNK)))
            if not chunk:
                return total
            if before is not None:
                before(session, chunk)
            session.execute(delete(table).where(table.c.id.in_(chunk)))
        total += len(chunk)
        if len(chunk) < PRUNE_CHUNK:
            return total
