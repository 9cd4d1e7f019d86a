"""An explanation of one record (`GET /v1/explain/{entity}/{zoho_id}`, `zoho-moodle-sync
explain`): the verdict, then the chain of facts behind it, read in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from sqlalchemy.orm import Session

from zoho_moodle_sync import tenants
from zoho_moodle_sync.db.jobs import DeliveryPause, Job
from zoho_moodle_sync.db.models import Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITY_BY_KEY, EntitySpec, MoodleKind
from zoho_moodle_sync.errors import ConfigurationError, NotFound, Unprocessable
from zoho_moodle_sync.explain.facts import EventFacts, RecordFacts, gather, lookups_of
from zoho_moodle_sync.explain.models import (
    Delivery,
    Dependency,
    Explanation,
    JobLine,
    MoodleSide,
    OutcomeLine,
    Received,
    RecordState,
    Related,
)
from zoho_moodle_sync.explain.verdict import Context, error_words, judge, wait_words
from zoho_moodle_sync.jobs.operator import pause_view
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.zoho.ids import is_zoho_id

_HOW = {
    "sync": "a re-sync sent to the service",
    "webhook": "a Zoho webhook",
    "pull": "an import from the Zoho API (pull)",
    "catch_up": "the periodic catch-up from the Zoho API (no webhook brought it)",
    "replay": "a replay of a stored request",
}


def entity_spec(entity: str) -> EntitySpec:
    spec = ENTITY_BY_KEY.get(entity)
    if spec is None:
        raise Unprocessable(
            f"unknown entity {entity!r}; known: {', '.join(ENTITY_BY_KEY)}",
            details=[{"field": "entity", "message": "unknown"}],
        )
    return spec


def explain(
    db: Database, *, tenant_id: int, entity: str, zoho_id: str, settings: Settings
) -> Explanation:
    """Why the tenant's record is, or is not, in Moodle; NotFound when it never reached the
    service."""
    spec = entity_spec(entity)
    if not is_zoho_id(zoho_id):
        raise NotFound(f"{zoho_id!r} is not a Zoho record id (digits)")
    with db.sessions() as session:
        return explain_in(
            session, tenant_id=tenant_id, spec=spec, zoho_id=zoho_id, settings=settings
        )


def explain_in(
    session: Session, *, tenant_id: int, spec: EntitySpec, zoho_id: str, settings: Settings
) -> Explanation:
    tenant = session.get_one(Tenant, tenant_id)
    mapping = tenants.mapping_of(tenant.config)

    @cache
    def facts_of(target: EntitySpec, target_id: str) -> RecordFacts:
        return gather(session, tenant_id=tenant_id, mapping=mapping, spec=target, zoho_id=target_id)

    facts = facts_of(spec, zoho_id)
    if not facts.known:
        raise NotFound(f"no {spec.label} {zoho_id} has reached this service for this tenant")
    pause = session.get(DeliveryPause, tenant_id)
    context = Context(
        paused=pause_view(pause)["reason"] if pause is not None else None,
        moodle_configured=_moodle_configured(tenant, settings),
        facts_of=facts_of,
    )
    judged = judge(facts, context)
    answer = Explanation(
        entity=spec.key,
        zoho_id=zoho_id,
        name=facts.name,
        verdict=judged.verdict,
        status=judged.status,
        record=_record_state(facts),
        waiting_for=[
            Dependency(
                entity=wait.entity,
                zoho_id=wait.zoho_id,
                field=wait.via,
                state=wait.state,
                words=wait_words(wait),
                errors=wait.errors,
            )
            for wait in facts.waits
        ],
        delivery=None
        if spec.moodle is None
        else Delivery(
            moodle=_moodle_side(facts),
            jobs=[_job_line(job) for job in facts.jobs],
            paused=context.paused,
            moodle_configured=context.moodle_configured,
        ),
        related=[
            _related(name, facts_of(target, target_id), context)
            for name, target, target_id in lookups_of(facts)
        ],
    )
    answer._moodle_ids = _moodle_ids(facts, facts_of)
    return answer


def _moodle_ids(
    facts: RecordFacts, facts_of: Callable[[EntitySpec, str], RecordFacts]
) -> dict[str, int | None]:
    side = facts.spec.moodle
    if side is None:
        return {}
    link = facts.link
    if side.kind != MoodleKind.ENROLMENT:
        return {side.kind.value: link.moodle_id if link is not None else None}
    ids: dict[str, int | None] = {"enrolment": None, "user": None, "course": None}
    if link is not None and link.detail:
        ids.update(user=link.detail.get("userid"), course=link.detail.get("courseid"))
        return ids
    for field_name, key in (("student_zoho_id", "user"), ("class_zoho_id", "course")):
        zoho_id = facts.data.get(field_name)
        target = ENTITY_BY_KEY[facts.spec.field_by_name[field_name].lookup or ""]
        other = facts_of(target, str(zoho_id)).link if zoho_id else None
        ids[key] = other.moodle_id if other is not None else None
    return ids


def _moodle_configured(tenant: Tenant, settings: Settings) -> bool:
    try:
        return tenants.moodle_connection(tenant, settings) is not None
    except ConfigurationError:
        return False


def _related(name: str, facts: RecordFacts, context: Context) -> Related:
    if not facts.known:
        return Related(
            role=name,
            entity=facts.spec.key,
            zoho_id=facts.zoho_id,
            name=facts.zoho_id,
            status="unknown",
            verdict=f"{facts.spec.label} {facts.zoho_id} has never reached this service",
        )
    judged = judge(facts, context)
    return Related(
        role=name,
        entity=facts.spec.key,
        zoho_id=facts.zoho_id,
        name=facts.name,
        status=judged.status,
        verdict=judged.verdict,
    )


def _received(event: EventFacts | None, modified: Any) -> Received | None:
    if event is None:
        return None
    how = _HOW.get(event.source, event.source)
    if event.route.endswith("/notifications"):
        how = "a Zoho Notifications API callback"
    return Received(
        event_id=event.id,
        at=event.received_at,
        source=event.source,
        route=f"{event.method} {event.route}",
        how=how,
        zoho_modified_time=modified,
    )


def _record_state(facts: RecordFacts) -> RecordState:
    history = [
        OutcomeLine(
            outcome=o.outcome,
            at=o.at,
            event_id=o.inbound_event_id,
            source=facts.events[o.inbound_event_id].source
            if o.inbound_event_id in facts.events
            else None,
            message=(o.detail or {}).get("message"),
            errors=(o.detail or {}).get("errors") or [],
            warnings=(o.detail or {}).get("warnings") or [],
        )
        for o in facts.outcomes
    ]
    if facts.row is not None:
        row = facts.row
        event = facts.events.get(row["last_event_id"]) if row["last_event_id"] else None
        return RecordState(
            state="deleted" if row["deleted_at"] else "stored",
            received=_received(event, row["zoho_modified_time"]),
            last_outcome=history[0] if history else None,
            warnings=row["warnings"] or [],
            deleted_at=row["deleted_at"],
            history=history,
        )
    parked = facts.parked
    event = None
    if parked is not None and parked.inbound_event_id is not None:
        event = facts.events.get(parked.inbound_event_id)
    elif history and history[0].event_id is not None:
        event = facts.events.get(history[0].event_id)
    return RecordState(
        state="parked" if parked is not None else "not_stored",
        received=_received(event, parked.zoho_modified_time if parked else None),
        last_outcome=history[0] if history else None,
        history=history,
    )


def _moodle_side(facts: RecordFacts) -> MoodleSide | None:
    link, side = facts.link, facts.spec.moodle
    if link is None or side is None:
        return None
    return MoodleSide(
        kind=side.kind.value,
        id=link.moodle_id,
        state=link.state,
        adopted=link.adopted,
        detail=link.detail or {},
        delivered_at=link.delivered_at,
    )


def _job_line(job: Job) -> JobLine:
    return JobLine(
        id=job.id,
        action=job.action,
        state=job.state,
        attempts=job.attempts,
        errorcode=job.last_errorcode,
        error=error_words(job.last_error, job.last_errorcode) if job.last_error else None,
        wait_reason=job.wait_reason,
        due_at=job.due_at,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )
