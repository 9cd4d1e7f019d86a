"""The outbox: delivery jobs written in the same transaction as the record change they follow,
and the operator's view of them (list, retry, confirm held removals, status counts).

A job says "make Moodle reflect record X as stored now" (`sync`) or "apply the removal policy
to X" (`remove`). A record has at most one open job: a newer change updates it rather than
queueing a second one, and the worker always reads the record as it is when it delivers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.models import ENTITY_TABLES
from zoho_moodle_sync.db.outbox import (
    OPEN_CONDITION,
    OPEN_STATES,
    DeliveryPause,
    MoodleCall,
    MoodleJob,
    MoodleLink,
)
from zoho_moodle_sync.errors import Conflict, NotFound
from zoho_moodle_sync.projection import PROJECTED_ENTITIES
from zoho_moodle_sync.records import warning_summary

JOB_STATES = ("pending", "running", "waiting", "held", "done", "dead", "superseded")
RETRYABLE_STATES = ("dead", "held", "waiting")


def enqueue(
    session: Session,
    *,
    tenant_id: int,
    entity: str,
    zoho_ids: Iterable[str],
    action: str = "sync",
    now: datetime | None = None,
) -> int:
    """One open job per record: insert, or turn the record's open job into this one."""
    if entity not in PROJECTED_ENTITIES:
        return 0
    now = now or utcnow()
    rows = [
        {
            "tenant_id": tenant_id,
            "entity": entity,
            "zoho_id": zoho_id,
            "action": action,
            "state": "pending",
            "attempts": 0,
            "due_at": now,
            "confirmed": False,
            "created_at": now,
            "updated_at": now,
        }
        for zoho_id in dict.fromkeys(zoho_ids)
    ]
    if not rows:
        return 0
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    table = MoodleJob.__table__
    statement = dialect.insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", "entity", "zoho_id"],
        index_where=text(OPEN_CONDITION),
        set_={
            "action": statement.excluded.action,
            "state": "pending",
            "attempts": 0,
            "due_at": statement.excluded.due_at,
            "confirmed": False,
            "wait_reason": None,
            "updated_at": statement.excluded.updated_at,
        },
    )
    session.execute(statement, rows)
    return len(rows)


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
        enqueue(session, tenant_id=tenant_id, entity=entity, zoho_ids=zoho_ids[start : start + 500])
    return len(zoho_ids)


@dataclass(frozen=True)
class JobFilter:
    tenant_id: int | None = None
    state: str | None = None
    entity: str | None = None
    zoho_id: str | None = None

    def conditions(self) -> list[Any]:
        found: list[Any] = []
        if self.tenant_id is not None:
            found.append(MoodleJob.tenant_id == self.tenant_id)
        if self.state is not None:
            found.append(MoodleJob.state == self.state)
        if self.entity is not None:
            found.append(MoodleJob.entity == self.entity)
        if self.zoho_id is not None:
            found.append(MoodleJob.zoho_id == self.zoho_id)
        return found


def list_jobs(session: Session, where: JobFilter, *, limit: int = 100) -> list[MoodleJob]:
    query = select(MoodleJob).where(*where.conditions()).order_by(MoodleJob.id.desc())
    return list(session.scalars(query.limit(limit)))


def job_view(job: MoodleJob) -> dict[str, Any]:
    return {
        "id": job.id,
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


def retry_job(session: Session, *, tenant_id: int, job_id: int) -> MoodleJob:
    """Make a dead, held or waiting job due now, with a fresh count of attempts."""
    job = session.get(MoodleJob, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFound(f"no job {job_id}")
    if job.state not in RETRYABLE_STATES:
        raise Conflict(f"job {job_id} is {job.state}; only dead, held or waiting jobs are retried")
    if job.state == "dead" and _has_open_job(session, job):
        raise Conflict(f"record {job.entity} {job.zoho_id} already has a newer job queued")
    _requeue(job, confirmed=job.state == "held")
    return job


def retry_jobs(session: Session, where: JobFilter) -> int:
    """Retry every job the filter matches among dead, held and waiting ones."""
    state_filter = [where.state] if where.state else list(RETRYABLE_STATES)
    jobs = session.scalars(
        select(MoodleJob).where(
            *JobFilter(where.tenant_id, None, where.entity, where.zoho_id).conditions(),
            MoodleJob.state.in_([s for s in state_filter if s in RETRYABLE_STATES]),
        )
    ).all()
    count = 0
    for job in jobs:
        if job.state == "dead" and _has_open_job(session, job):
            job.state = "superseded"
            continue
        _requeue(job, confirmed=job.state == "held")
        session.flush()
        count += 1
    return count


def confirm_held(session: Session, *, tenant_id: int) -> int:
    """Let every removal the mass-change guard holds for a tenant go ahead."""
    result = session.execute(
        update(MoodleJob)
        .where(MoodleJob.tenant_id == tenant_id, MoodleJob.state == "held")
        .values(state="pending", confirmed=True, due_at=utcnow(), updated_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _has_open_job(session: Session, job: MoodleJob) -> bool:
    return (
        session.scalar(
            select(MoodleJob.id).where(
                MoodleJob.tenant_id == job.tenant_id,
                MoodleJob.entity == job.entity,
                MoodleJob.zoho_id == job.zoho_id,
                MoodleJob.state.in_(OPEN_STATES),
                MoodleJob.id != job.id,
            )
        )
        is not None
    )


def _requeue(job: MoodleJob, *, confirmed: bool) -> None:
    now = utcnow()
    job.state = "pending"
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
    jobs = list_jobs(session, JobFilter(tenant_id, None, entity, zoho_id), limit=5)
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
    """Per tenant and entity: jobs by state, queue depth, age of the oldest due job."""
    now = utcnow()
    scope = [MoodleJob.tenant_id == tenant_id] if tenant_id is not None else []
    counts = session.execute(
        select(MoodleJob.tenant_id, MoodleJob.entity, MoodleJob.state, func.count())
        .where(*scope)
        .group_by(MoodleJob.tenant_id, MoodleJob.entity, MoodleJob.state)
    ).all()
    oldest = session.execute(
        select(MoodleJob.tenant_id, MoodleJob.entity, func.min(MoodleJob.created_at))
        .where(*scope, MoodleJob.state.in_(("pending", "running", "waiting", "held")))
        .group_by(MoodleJob.tenant_id, MoodleJob.entity)
    ).all()
    pauses = {
        pause.tenant_id: pause
        for pause in session.scalars(
            select(DeliveryPause).where(
                *([DeliveryPause.tenant_id == tenant_id] if tenant_id is not None else [])
            )
        )
    }
    table: dict[tuple[int, str], dict[str, Any]] = {}
    for tenant, entity, state, count in counts:
        row = table.setdefault((tenant, entity), dict.fromkeys(JOB_STATES, 0))
        row[state] = count
    oldest_by = {(tenant, entity): created for tenant, entity, created in oldest}
    report = []
    for (tenant, entity), by_state in sorted(table.items()):
        created = oldest_by.get((tenant, entity))
        pause = pauses.get(tenant)
        report.append(
            {
                "tenant_id": tenant,
                "entity": entity,
                "jobs": by_state,
                "queue_depth": sum(by_state[s] for s in ("pending", "running", "waiting", "held")),
                "oldest_pending_seconds": round((now - created).total_seconds(), 1)
                if created
                else None,
                "dead": by_state["dead"],
                "paused": None if pause is None else f"{pause.errorcode}: {pause.reason}",
            }
        )
    return report


def due_condition(now: datetime) -> Any:
    """Jobs a worker may take now: due pending or waiting ones, and running ones whose worker
    let its lease run out (it crashed or was killed)."""
    return or_(
        and_(MoodleJob.state.in_(("pending", "waiting")), MoodleJob.due_at <= now),
        and_(MoodleJob.state == "running", MoodleJob.lease_until < now),
    )


LATENCY_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 21600, 86400)
"""Seconds from a change being stored to Moodle holding it."""


def prometheus_text(session: Session, slugs: dict[int, str]) -> str:
    """Jobs by state, Moodle calls and errors by function and errorcode, and the delivery
    latency of jobs finished in the last hour, in the Prometheus text format."""
    lines = [
        "# HELP zms_jobs Delivery jobs by tenant, entity and state.",
        "# TYPE zms_jobs gauge",
    ]
    counts = session.execute(
        select(MoodleJob.tenant_id, MoodleJob.entity, MoodleJob.state, func.count()).group_by(
            MoodleJob.tenant_id, MoodleJob.entity, MoodleJob.state
        )
    ).all()
    for tenant_id, entity, state, count in counts:
        labels = _labels(tenant=slugs.get(tenant_id, str(tenant_id)), entity=entity, state=state)
        lines.append(f"zms_jobs{{{labels}}} {count}")
    lines += [
        "# HELP zms_moodle_calls_total Moodle web-service calls by function and errorcode.",
        "# TYPE zms_moodle_calls_total counter",
    ]
    calls = session.execute(
        select(
            MoodleCall.tenant_id, MoodleCall.function, MoodleCall.errorcode, func.count()
        ).group_by(MoodleCall.tenant_id, MoodleCall.function, MoodleCall.errorcode)
    ).all()
    for tenant_id, function, errorcode, count in calls:
        labels = _labels(
            tenant=slugs.get(tenant_id, str(tenant_id)),
            function=function,
            errorcode=errorcode or "",
        )
        lines.append(f"zms_moodle_calls_total{{{labels}}} {count}")
    lines += [
        "# HELP zms_record_warnings Stored records carrying a warning, by code.",
        "# TYPE zms_record_warnings gauge",
    ]
    for (tenant_id, entity), summary in sorted(warning_summary(session).items()):
        tenant = slugs.get(tenant_id, str(tenant_id))
        for code, records in sorted(summary["codes"].items()):
            labels = _labels(tenant=tenant, entity=entity, code=code)
            lines.append(f"zms_record_warnings{{{labels}}} {records}")
    lines += [
        "# HELP zms_delivery_latency_seconds Stored change to Moodle, jobs done in the last hour.",
        "# TYPE zms_delivery_latency_seconds histogram",
    ]
    since = utcnow() - timedelta(hours=1)
    finished = session.execute(
        select(MoodleJob.created_at, MoodleJob.finished_at).where(
            MoodleJob.state == "done", MoodleJob.finished_at >= since
        )
    ).all()
    latencies = [(done - created).total_seconds() for created, done in finished if done]
    for bound in LATENCY_BUCKETS:
        below = sum(1 for value in latencies if value <= bound)
        lines.append(f'zms_delivery_latency_seconds_bucket{{le="{bound}"}} {below}')
    lines.append(f'zms_delivery_latency_seconds_bucket{{le="+Inf"}} {len(latencies)}')
    lines.append(f"zms_delivery_latency_seconds_sum {sum(latencies):.3f}")
    lines.append(f"zms_delivery_latency_seconds_count {len(latencies)}")
    return "\n".join(lines) + "\n"


def _labels(**values: str) -> str:
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return ",".join(f'{name}="{escape(value)}"' for name, value in values.items())
