"""The integration tests' harness: requests through ingress as the API makes them, records of
every entity from the factories, and reads of the stored state straight from the tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import RowMapping, func, select

from tests.factories import (
    ClassRecordFactory,
    EnrollmentRecordFactory,
    GradeRecordFactory,
    PaymentRecordFactory,
    ProgramRecordFactory,
    Record,
    RegistrationRecordFactory,
    StudentRecordFactory,
    TeacherRecordFactory,
    UnitRecordFactory,
    zoho_datetime,
)
from zoho_moodle_sync import records
from zoho_moodle_sync.db.jobs import Job
from zoho_moodle_sync.db.models import (
    ENTITY_TABLES,
    InboundEvent,
    ParkedRecord,
    ParkedWait,
    RecordOutcome,
)
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITIES, ENTITY_BY_KEY
from zoho_moodle_sync.ingress import events, pipeline
from zoho_moodle_sync.ingress.events import InboundRequest
from zoho_moodle_sync.ingress.pipeline import SyncReport
from zoho_moodle_sync.service import RecordResult
from zoho_moodle_sync.tenants import TenantContext, context_of, create

MAX_RECORDS = 1000
ENTITY_KEYS = [spec.key for spec in ENTITIES]


# --- requests ---------------------------------------------------------------------------------


def inbound(entity: str, batch: Sequence[Any], **changes: Any) -> InboundRequest:
    """A `POST /v1/sync/{entity}` request as the API layer hands it to ingress."""
    body = orjson.dumps({"data": list(batch)})
    values: dict[str, Any] = {
        "source": "sync",
        "method": "POST",
        "route": f"/v1/sync/{entity}",
        "content_type": "application/json",
        "query": {},
        "headers": {"content-type": "application/json", "user-agent": "curl/8.5.0"},
        "body": body,
    }
    values.update(changes)
    return InboundRequest(**values)


def send(db: Database, tenant: TenantContext, entity: str, batch: Sequence[Any]) -> SyncReport:
    """One request: the body is stored and committed, then processed in its own transaction."""
    request = inbound(entity, batch)
    event_id = events.store_inbound(db, request, tenant_id=tenant.id, entity=entity)
    return pipeline.run_sync(
        db,
        tenant=tenant,
        entity=ENTITY_BY_KEY[entity],
        event_id=event_id,
        body=request.body,
        content_type=request.content_type,
        max_records=MAX_RECORDS,
    )


def outcomes(results: Sequence[RecordResult]) -> list[str]:
    return [r.outcome.value for r in results]


def released(report: SyncReport) -> list[tuple[str, str | None, str]]:
    """(entity, zoho_id, outcome) of the parked records the request released, in order."""
    return [(r.entity, r.zoho_id, r.outcome.value) for r in report.released]


# --- records ----------------------------------------------------------------------------------


def one_of_each() -> dict[str, Record]:
    """A record of every entity, keyed by entity, each lookup pointing at another of them."""
    program = ProgramRecordFactory(major="IT")
    teacher = TeacherRecordFactory(locale="en_GB")
    student = StudentRecordFactory(program=program, locale="en_GB")
    unit = UnitRecordFactory(program=program, number=1)
    class_ = ClassRecordFactory(unit=unit, teacher=teacher, term="T1")
    registration = RegistrationRecordFactory(student=student)
    return {
        "programs": program,
        "teachers": teacher,
        "students": student,
        "units": unit,
        "classes": class_,
        "enrollments": EnrollmentRecordFactory(student=student, class_=class_),
        "registrations": registration,
        "payments": PaymentRecordFactory(registration=registration, Installment_No=1),
        "grades": GradeRecordFactory(student=student, class_=class_, Grade="M"),
    }


def send_before(
    db: Database, tenant: TenantContext, college: dict[str, Record], entity: str
) -> None:
    """Store every record of `college` whose entity comes before `entity` (its dependencies),
    in one transaction."""
    with db.sessions.begin() as session:
        for key in ENTITY_KEYS[: ENTITY_KEYS.index(entity)]:
            results, freed = pipeline.process_records(
                session,
                tenant=tenant,
                entity=ENTITY_BY_KEY[key],
                raw_records=[college[key]],
                event_id=None,
            )
            assert (outcomes(results), freed) == (["NEW"], []), [r.as_dict() for r in results]


def later(record: Record, *, minutes: int = 5, **changes: Any) -> Record:
    """The record as Zoho returns it after an edit `minutes` later: `changes` applied."""
    modified = dt.datetime.fromisoformat(record["Modified_Time"]) + dt.timedelta(minutes=minutes)
    edited = {**record, **changes}
    edited["Modified_Time"] = zoho_datetime(modified)
    edited["Last_Activity_Time"] = edited["Modified_Time"]
    return edited


def utc(zoho_time: str) -> dt.datetime:
    return dt.datetime.fromisoformat(zoho_time).astimezone(dt.UTC)


# --- stored state -----------------------------------------------------------------------------


def stored(db: Database, tenant: TenantContext, entity: str, zoho_id: str) -> RowMapping | None:
    """The entity table's row for the record, every column."""
    table = ENTITY_TABLES[entity]
    with db.sessions() as session:
        row = session.execute(
            select(table).where(table.c.tenant_id == tenant.id, table.c.zoho_id == zoho_id)
        ).first()
    return None if row is None else row._mapping


def stored_ids(db: Database, tenant: TenantContext, entity: str) -> set[str]:
    table = ENTITY_TABLES[entity]
    with db.sessions() as session:
        return set(session.scalars(select(table.c.zoho_id).where(table.c.tenant_id == tenant.id)))


def describe(
    db: Database, tenant: TenantContext, entity: str, zoho_id: str
) -> dict[str, Any] | None:
    with db.sessions() as session:
        return records.describe(
            session, tenant_id=tenant.id, entity=ENTITY_BY_KEY[entity], zoho_id=zoho_id
        )


def history(db: Database, tenant: TenantContext, entity: str, zoho_id: str) -> list[str]:
    """The record's outcome history rows, oldest first."""
    with db.sessions() as session:
        return list(
            session.scalars(
                select(RecordOutcome.outcome)
                .where(
                    RecordOutcome.tenant_id == tenant.id,
                    RecordOutcome.entity == entity,
                    RecordOutcome.zoho_id == zoho_id,
                )
                .order_by(RecordOutcome.id)
            )
        )


def parked(db: Database, tenant: TenantContext) -> dict[tuple[str, str], ParkedRecord]:
    """The tenant's parked records by (entity, zoho_id)."""
    with db.sessions() as session:
        rows = session.scalars(select(ParkedRecord).where(ParkedRecord.tenant_id == tenant.id))
        return {(r.entity, r.zoho_id): r for r in rows}


def waits(db: Database, tenant: TenantContext) -> set[tuple[str, str, str]]:
    """(parked record's zoho_id, awaited entity, awaited zoho_id) of every live wait."""
    with db.sessions() as session:
        rows = session.execute(
            select(ParkedRecord.zoho_id, ParkedWait.entity, ParkedWait.zoho_id)
            .join(ParkedRecord, ParkedRecord.id == ParkedWait.parked_id)
            .where(ParkedWait.tenant_id == tenant.id)
        )
        return {(a, b, c) for a, b, c in rows}


def jobs(db: Database, tenant: TenantContext) -> list[tuple[Any, ...]]:
    """The tenant's Moodle delivery jobs: (entity, zoho_id, action, state, updated_at)."""
    with db.sessions() as session:
        rows = session.execute(
            select(
                Job.entity,
                Job.zoho_id,
                Job.action,
                Job.state,
                Job.updated_at,
            )
            .where(Job.tenant_id == tenant.id)
            .order_by(Job.id)
        )
        return [tuple(row) for row in rows]


def count(db: Database, model: Any) -> int:
    with db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def event(db: Database, event_id: int) -> InboundEvent:
    with db.sessions() as session:
        return session.get_one(InboundEvent, event_id)


def new_tenant(db: Database, slug: str) -> TenantContext:
    with db.sessions.begin() as session:
        return context_of(create(session, slug=slug, name=slug.title()))
