"""The queue as an operator sees it: jobs listed, retried one by one or in bulk, removals held by
the mass-change guard confirmed, and the per-tenant status. Flushes, never commits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import OPEN_STATES, DeliveryPause, Job, JobKind, JobState, MoodleLink
from zoho_moodle_sync.db.models import ENTITY_TABLES, Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.errors import ConfigurationError, Conflict, NotFound, Unprocessable
from zoho_moodle_sync.jobs.queue import enqueue_delivery

JOB_STATES = tuple(state.value for state in JobState)
RETRYABLE_STATES = (JobState.DEAD.value, JobState.HELD.value, JobState.WAITING.value)


def requeue_delivered(session: Session, *, tenant_id: int, entity: str) -> int:
    """Queue again every record of `entity` whose Moodle side the service holds active, so it
    is delivered anew (after a policy change that alters what it becomes in Moodle)."""
    table = ENTITY_TABLES[entity]
    zoho_ids = list(
        session.scalars(
            select(MoodleLink.zoho_id)
            .join(
                table,
                and_(
                    table.c.tenant_id == MoodleLink.tenant_id, table.c.zoho_id == MoodleLink.zoho_id
                ),
            )
            .where(
                MoodleLink.tenant_id == tenant_id,
                MoodleLink.entity == entity,
                MoodleLink.state == "active",
                table.c.deleted_at.is_(None),
            )
        )
    )
    for start in range(0, len(zoho_ids), 500):
        enqueue_delivery(
            session, tenant_id=tenant_id, entity=entity, zoho_ids=zoho_ids[start : start + 500]
        )
    return len(zoho_ids)


@dataclass(frozen=True)
class JobFilter:
    """Which jobs: of a tenant, in a state, of an entity or record, of a kind."""

    tenant_id: int | None = None
    state: str | None = None
    entity: str | None = None
    zoho_id: str | None = None
    kind: str | None = None

    @classmethod
    def checked(
        cls, tenant_id: int, state: str | None, entity: str | None, zoho_id: str | None
    ) -> JobFilter:
        """A filter from what a caller asked, refusing an unknown state or entity."""
        if state is not None and state not in JOB_STATES:
            raise Unprocessable(
                f"unknown job state {state!r}; known: {', '.join(JOB_STATES)}",
                details=[{"field": "state", "message": "unknown"}],
            )
        if entity is not None and entity not in ENTITY_BY_KEY:
            raise Unprocessable(
                f"unknown entity {entity!r}", details=[{"field": "entity", "message": "unknown"}]
            )
        return cls(tenant_id, state, entity, zoho_id)

    def conditions(self) -> list[Any]:
        found: list[Any] = []
        if self.kind is not None:
            found.append(Job.kind == self.kind)
        if self.tenant_id is not None:
            found.append(Job.tenant_id == self.tenant_id)
        if self.state is not None:
            found.append(Job.state == self.state)
        if self.entity is not None:
            found.append(Job.entity == self.entity)
        if self.zoho_id is not None:
            found.append(Job.zoho_id == self.zoho_id)
        return found


def list_jobs(session: Session, where: JobFilter, *, limit: int = 100) -> list[Job]:
    query = select(Job).where(*where.conditions()).order_by(Job.id.desc())
    return list(session.scalars(query.limit(limit)))


def job_view(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "event_id": job.event_id,
        "entity": job.entity,
        "zoho_id": job.zoho_id,
        "action": job.action,
        "state": job.state,
        "attempts": job.attempts,
        "due_at": job.due_at.isoformat(),
        "wait_reason": job.wait_reason,
        "last_errorcode": job.last_errorcode,
        "last_error": job.last_error,
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def retry_job(session: Session, *, tenant_id: int, job_id: int) -> Job:
    """Make a dead, held or waiting job due now, with a fresh count of attempts."""
    job = session.get(Job, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFound(f"no job {job_id}")
    if job.state not in RETRYABLE_STATES:
        raise Conflict(f"job {job_id} is {job.state}; only dead, held or waiting jobs are retried")
    if job.state == JobState.DEAD and _has_open_job(session, job):
        raise Conflict(f"record {job.entity} {job.zoho_id} already has a newer job queued")
    _requeue(job, confirmed=job.state == JobState.HELD)
    return job


def retry_jobs(session: Session, where: JobFilter) -> int:
    """Retry every job the filter matches among dead, held and waiting ones."""
    state_filter = [where.state] if where.state else list(RETRYABLE_STATES)
    jobs = session.scalars(
        select(Job).where(
            *JobFilter(where.tenant_id, None, where.entity, where.zoho_id, where.kind).conditions(),
            Job.state.in_([s for s in state_filter if s in RETRYABLE_STATES]),
        )
    ).all()
    count = 0
    for job in jobs:
        if job.state == JobState.DEAD and _has_open_job(session, job):
            job.state = JobState.SUPERSEDED.value
            continue
        _requeue(job, confirmed=job.state == JobState.HELD)
        session.flush()
        count += 1
    return count


def confirm_held(session: Session, *, tenant_id: int) -> int:
    """Let every removal the mass-change guard holds for a tenant go ahead."""
    result = session.execute(
        update(Job)
        .where(Job.tenant_id == tenant_id, Job.state == JobState.HELD)
        .values(state=JobState.PENDING.value, confirmed=True, due_at=utcnow(), updated_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _has_open_job(session: Session, job: Job) -> bool:
    if job.key is None:
        return False
    return (
        session.scalar(
            select(Job.id).where(Job.key == job.key, Job.state.in_(OPEN_STATES), Job.id != job.id)
        )
        is not None
    )


def _requeue(job: Job, *, confirmed: bool) -> None:
    now = utcnow()
    job.state = JobState.PENDING.value
    job.attempts = 0
    job.due_at = now
    job.updated_at = now
    job.wait_reason = None
    job.confirmed = job.confirmed or confirmed


def delivery_of(session: Session, *, tenant_id: int, entity: str, zoho_id: str) -> dict[str, Any]:
    """The Moodle side of one record: its link and its latest jobs."""
    link = session.scalar(
        select(MoodleLink).where(
            MoodleLink.tenant_id == tenant_id,
            MoodleLink.entity == entity,
            MoodleLink.zoho_id == zoho_id,
        )
    )
    where = JobFilter(tenant_id, None, entity, zoho_id, JobKind.DELIVER.value)
    jobs = list_jobs(session, where, limit=5)
    return {
        "moodle": None
        if link is None
        else {
            "id": link.moodle_id,
            "state": link.state,
            "adopted": link.adopted,
            "detail": link.detail,
            "delivered_at": link.delivered_at.isoformat(),
        },
        "jobs": [job_view(job) for job in jobs],
    }


def status(session: Session, *, tenant_id: int | None = None) -> list[dict[str, Any]]:
    """Per tenant, kind and entity: jobs by state, queue depth, age of the oldest open job."""
    now = utcnow()
    scope = [Job.tenant_id == tenant_id] if tenant_id is not None else []
    counts = session.execute(
        select(Job.tenant_id, Job.kind, Job.entity, Job.state, func.count())
        .where(*scope)
        .group_by(Job.tenant_id, Job.kind, Job.entity, Job.state)
    ).all()
    oldest = session.execute(
        select(Job.tenant_id, Job.kind, Job.entity, func.min(Job.created_at))
        .where(*scope, Job.state.in_([*OPEN_STATES, JobState.RUNNING]))
        .group_by(Job.tenant_id, Job.kind, Job.entity)
    ).all()
    pauses = {
        pause.tenant_id: pause
        for pause in session.scalars(
            select(DeliveryPause).where(
                *([DeliveryPause.tenant_id == tenant_id] if tenant_id is not None else [])
            )
        )
    }
    table: dict[tuple[int | None, str, str | None], dict[str, Any]] = {}
    for tenant, kind, entity, state, count in counts:
        row = table.setdefault((tenant, kind, entity), dict.fromkeys(JOB_STATES, 0))
        row[state] = count
    oldest_by = {(tenant, kind, entity): created for tenant, kind, entity, created in oldest}
    report = []
    for (tenant, kind, entity), by_state in sorted(
        table.items(), key=lambda item: (item[0][0] or 0, item[0][1], item[0][2] or "")
    ):
        created = oldest_by.get((tenant, kind, entity))
        pause = pauses.get(tenant) if tenant is not None else None
        report.append(
            {
                "tenant_id": tenant,
                "kind": kind,
                "entity": entity,
                "jobs": by_state,
                "queue_depth": sum(by_state[s] for s in (*OPEN_STATES, JobState.RUNNING)),
                "oldest_pending_seconds": round((now - created).total_seconds(), 1)
                if created
                else None,
                "dead": by_state[JobState.DEAD],
                "paused": None if pause is None else pause_view(pause)["reason"],
            }
        )
    return report


def jobs_view(db: Database, where: JobFilter, *, limit: int) -> dict[str, Any]:
    with db.sessions() as session:
        return {"jobs": [job_view(job) for job in list_jobs(session, where, limit=limit)]}


def retry_one(db: Database, *, tenant_id: int, job_id: int) -> dict[str, Any]:
    if not 0 < job_id < 2**63:  # no job has such an id (the column is a 64-bit integer)
        raise NotFound(f"no job {job_id}")
    with db.sessions.begin() as session:
        return job_view(retry_job(session, tenant_id=tenant_id, job_id=job_id))


def retry_all(db: Database, where: JobFilter) -> dict[str, Any]:
    with db.sessions.begin() as session:
        return {"retried": retry_jobs(session, where)}


def pause_view(pause: DeliveryPause) -> dict[str, Any]:
    """A tenant's delivery pause in words: Moodle refused access, or cannot be reached (the
    circuit breaker is open)."""
    why = "Moodle refused access" if pause.kind == "access" else "Moodle cannot be reached"
    return {
        "kind": pause.kind,
        "reason": f"{why}: {pause.errorcode}: {pause.reason}",
        "since": pause.paused_at.isoformat(),
        "next_probe": pause.probe_at.isoformat(),
        "failed_probes": pause.failures,
    }


def status_report(db: Database, *, moodle_of: Any, warnings_of: Any) -> dict[str, Any]:
    """`/v1/status`: per tenant, kind and entity the queue; whether each tenant's Moodle is
    configured (`moodle_of(tenant)`: its connection or None, or a ConfigurationError); and the
    records with warnings (`warnings_of(session)`)."""
    with db.sessions() as session:
        everyone = list(session.scalars(select(Tenant).order_by(Tenant.slug)))
        rows = status(session)
        moodle = {}
        for tenant in everyone:
            try:
                configured = moodle_of(tenant) is not None
                moodle[tenant.slug] = "configured" if configured else "not configured"
            except ConfigurationError as error:
                moodle[tenant.slug] = f"misconfigured: {error}"
        warnings = warnings_of(session)
        pauses = {
            pause.tenant_id: pause_view(pause) for pause in session.scalars(select(DeliveryPause))
        }
    slugs = {tenant.id: tenant.slug for tenant in everyone}
    for row in rows:
        tenant_id = row.pop("tenant_id")
        row["tenant"] = slugs.get(tenant_id) if tenant_id is not None else None
    return {
        "moodle": moodle,
        "paused": {slugs[tenant_id]: view for tenant_id, view in pauses.items()},
        "delivery": [row for row in rows if row["kind"] == JobKind.DELIVER],
        "queue": [row for row in rows if row["kind"] != JobKind.DELIVER],
        "warnings": [
            {"tenant": slugs.get(tenant_id), "entity": entity, **counts}
            for (tenant_id, entity), counts in sorted(warnings.items())
        ],
    }
