"""What each console page shows, read from the database for one tenant: the overview, jobs
that need a person, parked records and inbound events. The actions (retry, confirm, replay)
are the same functions the API and the CLI call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zoho_moodle_sync import records, tenants
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import DeliveryPause, JobKind, JobState
from zoho_moodle_sync.db.models import InboundEvent, ParkedRecord, Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.errors import ConfigurationError, NotFound
from zoho_moodle_sync.explain.facts import waits_of
from zoho_moodle_sync.explain.verdict import error_words, wait_words
from zoho_moodle_sync.ingress import events, pipeline, webhooks
from zoho_moodle_sync.jobs import operator
from zoho_moodle_sync.reconcile import status as reconcile_status
from zoho_moodle_sync.settings import Settings

NEEDS_A_PERSON = ("dead", "held", "waiting", "pending")
"""The job states the jobs page offers, the first two by default."""


@dataclass(frozen=True)
class TenantChoice:
    id: int
    slug: str
    name: str


def tenant_choices(db: Database) -> list[TenantChoice]:
    with db.sessions() as session:
        return [TenantChoice(t.id, t.slug, t.name) for t in tenants.list_all(session)]


def chosen(db: Database, slug: str | None, settings: Settings) -> TenantChoice:
    """The tenant a page is about: the one named, else the default tenant."""
    wanted = slug or settings.default_tenant
    for choice in tenant_choices(db):
        if choice.slug == wanted:
            return choice
    raise NotFound(f"no tenant {wanted!r}")


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def overview(db: Database, tenant: TenantChoice, settings: Settings) -> dict[str, Any]:
    with db.sessions() as session:
        rows = operator.status(session, tenant_id=tenant.id)
        pause = session.get(DeliveryPause, tenant.id)
        row = session.get_one(Tenant, tenant.id)
        try:
            moodle = (
                "configured"
                if tenants.moodle_connection(row, settings) is not None
                else "not configured"
            )
        except ConfigurationError as error:
            moodle = f"misconfigured: {error}"
        reconcile = reconcile_status.status_view(session)
        warnings = records.warning_summary(session, tenant_id=tenant.id)
        parked = session.scalar(
            select(func.count())
            .select_from(ParkedRecord)
            .where(ParkedRecord.tenant_id == tenant.id)
        )
    for line in rows:
        line["oldest"] = age(line["oldest_pending_seconds"])
    delivery = [line for line in rows if line["kind"] == JobKind.DELIVER]
    return {
        "delivery": delivery,
        "queue": [line for line in rows if line["kind"] != JobKind.DELIVER],
        "dead": sum(line["jobs"][JobState.DEAD] for line in delivery),
        "held": sum(line["jobs"][JobState.HELD] for line in delivery),
        "pause": operator.pause_view(pause) if pause is not None else None,
        "moodle": moodle,
        "parked": parked or 0,
        "last_pulls": [p for p in reconcile["last_pulls"] if p["tenant"] == tenant.slug],
        "unfinished_pulls": [
            p for p in reconcile["unfinished_pulls"] if p["tenant"] == tenant.slug
        ],
        "drift": reconcile["drift"].get(tenant.slug),
        "warnings": [
            {"entity": entity, **counts}
            for (tenant_id, entity), counts in sorted(warnings.items())
            if tenant_id == tenant.id
        ],
    }


def jobs(db: Database, tenant: TenantChoice, state: str) -> list[dict[str, Any]]:
    where = operator.JobFilter.checked(tenant.id, state, None, None)
    where = operator.JobFilter(where.tenant_id, where.state, None, None, JobKind.DELIVER)
    with db.sessions() as session:
        found = operator.list_jobs(session, where, limit=200)
        return [
            {
                **operator.job_view(job),
                "error": error_words(job.last_error, job.last_errorcode)
                if job.last_error
                else None,
                "name": _name_of(session, tenant.id, job.entity, job.zoho_id),
            }
            for job in found
        ]


def _name_of(session: Session, tenant_id: int, entity: str | None, zoho_id: str | None) -> str:
    spec = ENTITY_BY_KEY.get(entity or "")
    if spec is None or zoho_id is None:
        return ""
    described = records.describe(
        session, tenant_id=tenant_id, entity=spec, zoho_id=zoho_id, history=0
    )
    stored = (described or {}).get("stored") or {}
    return spec.name_of(stored.get("data") or {})


def retry(db: Database, tenant: TenantChoice, job_id: int) -> str:
    view = operator.retry_one(db, tenant_id=tenant.id, job_id=job_id)
    return f"job {view['id']} is {view['state']} again"


def retry_dead(db: Database, tenant: TenantChoice) -> str:
    where = operator.JobFilter(tenant.id, JobState.DEAD.value, None, None, JobKind.DELIVER)
    return f"{operator.retry_all(db, where)['retried']} dead job(s) pending again"


def confirm_held(db: Database, tenant: TenantChoice) -> str:
    with db.sessions.begin() as session:
        count = operator.confirm_held(session, tenant_id=tenant.id)
    return f"{count} held job(s) confirmed"


def parked(db: Database, tenant: TenantChoice) -> list[dict[str, Any]]:
    now = utcnow()
    with db.sessions() as session:
        rows = session.scalars(
            select(ParkedRecord)
            .where(ParkedRecord.tenant_id == tenant.id)
            .order_by(ParkedRecord.parked_at)
            .limit(500)
        ).all()
        return [
            {
                "entity": row.entity,
                "zoho_id": row.zoho_id,
                "waits": [wait_words(w) for w in waits_of(session, tenant.id, row)],
                "since": row.parked_at,
                "age": age((now - row.parked_at).total_seconds()),
                "event_id": row.inbound_event_id,
            }
            for row in rows
        ]


def inbound(
    db: Database,
    tenant: TenantChoice,
    *,
    zoho_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[InboundEvent]:
    with db.sessions() as session:
        return events.search_events(
            session, tenant_id=tenant.id, zoho_id=zoho_id, since=since, until=until, limit=200
        )


def replay(db: Database, tenant: TenantChoice, event_id: int, settings: Settings) -> str:
    """Replay a stored event of this tenant, as `events replay` does: a /v1/sync body runs at
    once; a webhook is queued for a worker to fetch its records from Zoho again."""
    with db.sessions() as session:
        owner = session.scalar(select(InboundEvent.tenant_id).where(InboundEvent.id == event_id))
    if owner != tenant.id:
        raise NotFound(f"no inbound event {event_id}")
    if events.is_webhook(db, event_id):
        new_id = webhooks.replay_webhook(db, event_id)
        return f"event {event_id} replayed as event {new_id}; a worker fetches its records"
    report = pipeline.replay(db, event_id, max_records=settings.max_batch_records)
    counts = ", ".join(f"{k} {v}" for k, v in report.summary().items() if v and k != "total")
    return f"event {event_id} replayed as event {report.event_id}: {counts or 'nothing'}"
