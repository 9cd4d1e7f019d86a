"""What the database knows of one record, read in one go for an explanation: its stored or
parked version, its outcome history and the events that brought it, what it waits for, its
delivery jobs and its Moodle link. Reads only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.jobs import Job, JobKind, JobState, MoodleLink
from zoho_moodle_sync.db.models import (
    ENTITY_TABLES,
    InboundEvent,
    ParkedRecord,
    ParkedWait,
    RecordOutcome,
)
from zoho_moodle_sync.entities import ENTITY_BY_KEY, EntitySpec
from zoho_moodle_sync.field_mapping import FieldMapping

HISTORY = 20
"""Outcomes kept in an explanation, newest first."""


@dataclass(frozen=True)
class EventFacts:
    id: int
    received_at: datetime
    source: str
    method: str
    route: str


@dataclass(frozen=True)
class Wait:
    """A dependency a parked record still waits for, and what became of it."""

    entity: str
    zoho_id: str
    via: str
    """The lookup field of the waiting record that names it."""
    state: str
    """never_arrived, invalid (only ever arrived invalid), parked (waits itself), stored."""
    errors: list[dict[str, str]] = field(default_factory=list)


@dataclass
class RecordFacts:
    spec: EntitySpec
    zoho_id: str
    row: dict[str, Any] | None
    parked: ParkedRecord | None
    waits: list[Wait]
    outcomes: list[RecordOutcome]
    events: dict[int, EventFacts]
    jobs: list[Job]
    link: MoodleLink | None
    lookup_names: dict[str, str] = field(default_factory=dict)
    """Lookup field → the name Zoho sent beside the id (`{"name": ..., "id": ...}`), so that a
    record that never arrived can still be named."""

    @property
    def known(self) -> bool:
        return self.row is not None or self.parked is not None or bool(self.outcomes)

    @property
    def data(self) -> dict[str, Any]:
        if self.row is not None:
            return dict(self.row["data"])
        return {}

    @property
    def deleted_at(self) -> datetime | None:
        return self.row["deleted_at"] if self.row is not None else None

    @property
    def current_job(self) -> Job | None:
        """The newest delivery job that was not replaced by a newer one."""
        return next((job for job in self.jobs if job.state != JobState.SUPERSEDED), None)

    @property
    def name(self) -> str:
        """What a person recognises, from the stored or parked version."""
        data = self.data
        if not data and self.parked is not None:
            raw = dict(self.parked.raw)
            for spec_field in self.spec.fields:
                if spec_field.name in self.spec.name_fields and raw.get(spec_field.zoho):
                    data[spec_field.name] = raw[spec_field.zoho]
        return self.spec.name_of(data) or self.zoho_id


def gather(
    session: Session, *, tenant_id: int, mapping: FieldMapping, spec: EntitySpec, zoho_id: str
) -> RecordFacts:
    """Everything the database holds about one record of the tenant."""
    table = ENTITY_TABLES[spec.key]
    found = session.execute(
        select(
            table.c.data,
            table.c.raw,
            table.c.deleted_at,
            table.c.last_event_id,
            table.c.zoho_modified_time,
            table.c.warnings,
        ).where(table.c.tenant_id == tenant_id, table.c.zoho_id == zoho_id)
    ).first()
    row = dict(found._mapping) if found is not None else None
    parked = session.scalar(
        select(ParkedRecord).where(
            ParkedRecord.tenant_id == tenant_id,
            ParkedRecord.entity == spec.key,
            ParkedRecord.zoho_id == zoho_id,
        )
    )
    outcomes = list(
        session.scalars(
            select(RecordOutcome)
            .where(
                RecordOutcome.tenant_id == tenant_id,
                RecordOutcome.entity == spec.key,
                RecordOutcome.zoho_id == zoho_id,
            )
            .order_by(RecordOutcome.id.desc())
            .limit(HISTORY)
        )
    )
    jobs = list(
        session.scalars(
            select(Job)
            .where(
                Job.tenant_id == tenant_id,
                Job.kind == JobKind.DELIVER,
                Job.entity == spec.key,
                Job.zoho_id == zoho_id,
            )
            .order_by(Job.id.desc())
            .limit(10)
        )
    )
    link = session.scalar(
        select(MoodleLink).where(
            MoodleLink.tenant_id == tenant_id,
            MoodleLink.entity == spec.key,
            MoodleLink.zoho_id == zoho_id,
        )
    )
    event_ids = {o.inbound_event_id for o in outcomes if o.inbound_event_id is not None}
    if row is not None and row["last_event_id"] is not None:
        event_ids.add(row["last_event_id"])
    if parked is not None and parked.inbound_event_id is not None:
        event_ids.add(parked.inbound_event_id)
    return RecordFacts(
        spec=spec,
        zoho_id=zoho_id,
        row=row,
        parked=parked,
        waits=waits_of(session, tenant_id, parked) if parked is not None else [],
        outcomes=outcomes,
        events=_events(session, event_ids),
        jobs=jobs,
        link=link,
        lookup_names=_lookup_names(
            spec, mapping, row["raw"] if row else parked.raw if parked else {}
        ),
    )


def _raw(row: dict[str, Any] | None, parked: ParkedRecord | None) -> dict[str, Any]:
    if row is not None:
        return dict(row["raw"])
    return dict(parked.raw) if parked is not None else {}


def _lookup_names(spec: EntitySpec, mapping: FieldMapping, raw: dict[str, Any]) -> dict[str, str]:
    names = {}
    fields = mapping.for_entity(spec)
    for spec_field in spec.fields:
        if spec_field.lookup is None:
            continue
        value = raw.get(fields.zoho_name(spec_field.name))
        if isinstance(value, dict) and isinstance(value.get("name"), str) and value["name"]:
            names[spec_field.name] = value["name"]
    return names


def _events(session: Session, ids: set[int]) -> dict[int, EventFacts]:
    if not ids:
        return {}
    rows = session.execute(
        select(
            InboundEvent.id,
            InboundEvent.received_at,
            InboundEvent.source,
            InboundEvent.method,
            InboundEvent.route,
        ).where(InboundEvent.id.in_(sorted(ids)))
    )
    return {row.id: EventFacts(*row) for row in rows}


def waits_of(session: Session, tenant_id: int, parked: ParkedRecord) -> list[Wait]:
    """What the parked record still waits for (dependencies stored since are left out), and
    whether each ever arrived."""
    still = {
        (entity, zoho_id)
        for entity, zoho_id in session.execute(
            select(ParkedWait.entity, ParkedWait.zoho_id).where(ParkedWait.parked_id == parked.id)
        )
    }
    waits = []
    for wanted in parked.waiting_for:
        entity, zoho_id = wanted["entity"], wanted["zoho_id"]
        if still and (entity, zoho_id) not in still:
            continue
        waits.append(_dependency(session, tenant_id, entity, zoho_id, wanted.get("field", "")))
    return waits


def _dependency(session: Session, tenant_id: int, entity: str, zoho_id: str, name: str) -> Wait:
    table = ENTITY_TABLES[entity]
    if session.scalar(
        select(table.c.id).where(table.c.tenant_id == tenant_id, table.c.zoho_id == zoho_id)
    ):
        return Wait(entity, zoho_id, name, "stored")
    if session.scalar(
        select(ParkedRecord.id).where(
            ParkedRecord.tenant_id == tenant_id,
            ParkedRecord.entity == entity,
            ParkedRecord.zoho_id == zoho_id,
        )
    ):
        return Wait(entity, zoho_id, name, "parked")
    last = session.scalar(
        select(RecordOutcome)
        .where(
            RecordOutcome.tenant_id == tenant_id,
            RecordOutcome.entity == entity,
            RecordOutcome.zoho_id == zoho_id,
        )
        .order_by(RecordOutcome.id.desc())
        .limit(1)
    )
    if last is not None and last.outcome == "INVALID":
        return Wait(entity, zoho_id, name, "invalid", list((last.detail or {}).get("errors", [])))
    return Wait(entity, zoho_id, name, "never_arrived")


def lookups_of(facts: RecordFacts) -> list[tuple[str, EntitySpec, str]]:
    """(lookup field, target entity, Zoho id) of every lookup the stored version sets."""
    found = []
    for spec_field in facts.spec.fields:
        target = spec_field.lookup
        value = facts.data.get(spec_field.name)
        if target is not None and value:
            found.append((spec_field.name, ENTITY_BY_KEY[target], str(value)))
    return found
