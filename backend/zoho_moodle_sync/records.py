"""The read side: what the service knows about one record (stored state, parking, history),
and the records whose stored version carries warnings."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.models import ENTITY_TABLES, ParkedRecord, ParkedWait, RecordOutcome
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITIES, ENTITY_BY_KEY, EntitySpec
from zoho_moodle_sync.errors import NotFound, Unprocessable
from zoho_moodle_sync.jobs import operator
from zoho_moodle_sync.zoho.ids import is_zoho_id


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def describe(
    session: Session, *, tenant_id: int, entity: EntitySpec, zoho_id: str, history: int = 50
) -> dict[str, Any] | None:
    """None when the record never reached the service for this tenant."""
    table = ENTITY_TABLES[entity.key]
    row = session.execute(
        select(table).where(table.c.tenant_id == tenant_id, table.c.zoho_id == zoho_id)
    ).first()
    parked = session.scalar(
        select(ParkedRecord).where(
            ParkedRecord.tenant_id == tenant_id,
            ParkedRecord.entity == entity.key,
            ParkedRecord.zoho_id == zoho_id,
        )
    )
    outcomes = session.scalars(
        select(RecordOutcome)
        .where(
            RecordOutcome.tenant_id == tenant_id,
            RecordOutcome.entity == entity.key,
            RecordOutcome.zoho_id == zoho_id,
        )
        .order_by(RecordOutcome.id.desc())
        .limit(history)
    ).all()
    if row is None and parked is None and not outcomes:
        return None
    stored = None
    if row is not None:
        values = row._mapping
        stored = {
            "data": values["data"],
            "fingerprint": values["fingerprint"],
            "zoho_modified_time": _iso(values["zoho_modified_time"]),
            "created_at": _iso(values["created_at"]),
            "updated_at": _iso(values["updated_at"]),
            "deleted_at": _iso(values["deleted_at"]),
            "last_event_id": values["last_event_id"],
            "warnings": values["warnings"] or [],
        }
    return {
        "entity": entity.key,
        "zoho_id": zoho_id,
        "state": "stored" if row is not None else "parked" if parked is not None else "not_stored",
        "stored": stored,
        "parked": None if parked is None else _parking(session, parked),
        "history": [
            {
                "outcome": o.outcome,
                "at": _iso(o.at),
                "event_id": o.inbound_event_id,
                **(o.detail or {}),
            }
            for o in outcomes
        ],
    }


def _parking(session: Session, parked: ParkedRecord) -> dict[str, Any]:
    """Why a record is parked, as of now: dependencies that arrived since are left out."""
    still = {
        (entity, zoho_id)
        for entity, zoho_id in session.execute(
            select(ParkedWait.entity, ParkedWait.zoho_id).where(ParkedWait.parked_id == parked.id)
        )
    }
    waiting = [w for w in parked.waiting_for if (w["entity"], w["zoho_id"]) in still]
    if waiting and waiting != parked.waiting_for:
        label = ENTITY_BY_KEY[waiting[0]["entity"]].label
        reason = f"{label}_not_synced_yet"
        message = "Waiting for " + ", ".join(
            f"{ENTITY_BY_KEY[w['entity']].label} {w['zoho_id']} ({w['field']})" for w in waiting
        )
    else:
        reason, message = parked.reason, parked.message
    return {
        "reason": reason,
        "message": message,
        "waiting_for": waiting or parked.waiting_for,
        "parked_at": _iso(parked.parked_at),
        "updated_at": _iso(parked.updated_at),
        "event_id": parked.inbound_event_id,
    }


def with_warnings(
    session: Session, *, tenant_id: int | None, entities: Sequence[EntitySpec] = ENTITIES
) -> Iterator[tuple[int, EntitySpec, str, dict[str, Any], list[dict[str, str]]]]:
    """(tenant id, entity, Zoho id, data, warnings) of every live record whose stored version
    has warnings, entity by entity."""
    for spec in entities:
        table = ENTITY_TABLES[spec.key]
        query = select(table.c.tenant_id, table.c.zoho_id, table.c.data, table.c.warnings).where(
            table.c.warnings.is_not(None), table.c.deleted_at.is_(None)
        )
        if tenant_id is not None:
            query = query.where(table.c.tenant_id == tenant_id)
        for row_tenant, zoho_id, data, warnings in session.execute(query.order_by(table.c.id)):
            if warnings:
                yield row_tenant, spec, zoho_id, data, warnings


def warnings_list(
    session: Session, *, tenant_id: int, entity: EntitySpec | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """One row per warning: what to correct in Zoho, on which record, since when."""
    found: list[dict[str, Any]] = []
    entities = ENTITIES if entity is None else (entity,)
    for _, spec, zoho_id, data, warnings in with_warnings(
        session, tenant_id=tenant_id, entities=entities
    ):
        for warning in warnings:
            found.append(
                {
                    "entity": spec.key,
                    "zoho_id": zoho_id,
                    "name": spec.name_of(data),
                    "field": warning["field"],
                    "code": warning["code"],
                    "message": warning["message"],
                    "since": warning.get("since"),
                }
            )
            if len(found) >= limit:
                return found
    return found


def warning_summary(
    session: Session, *, tenant_id: int | None = None
) -> dict[tuple[int, str], dict[str, Any]]:
    """(tenant id, entity) → how many live records carry warnings, in all and by code."""
    summary: dict[tuple[int, str], dict[str, Any]] = {}
    for row_tenant, spec, _, _, warnings in with_warnings(session, tenant_id=tenant_id):
        entry = summary.setdefault((row_tenant, spec.key), {"records": 0, "codes": {}})
        entry["records"] += 1
        for code in {w["code"] for w in warnings}:
            entry["codes"][code] = entry["codes"].get(code, 0) + 1
    return summary


def record_view(
    db: Database, *, tenant_id: int, entity: str, zoho_id: str, history: int
) -> dict[str, Any]:
    """`GET /v1/records/...`: what is known of one record, with its Moodle side and jobs."""
    spec = ENTITY_BY_KEY.get(entity)
    if spec is None:
        raise NotFound(f"unknown entity {entity!r}; known: {', '.join(ENTITY_BY_KEY)}")
    if not is_zoho_id(zoho_id):
        raise NotFound(f"{zoho_id!r} is not a Zoho record id (digits)")
    with db.sessions() as session:
        view = describe(session, tenant_id=tenant_id, entity=spec, zoho_id=zoho_id, history=history)
        if view is None:
            raise NotFound(f"no {spec.label} {zoho_id} has reached this service")
        view["delivery"] = operator.delivery_of(
            session, tenant_id=tenant_id, entity=spec.key, zoho_id=zoho_id
        )
        return view


def warnings_view(
    db: Database, *, tenant_id: int, entity: str | None, limit: int
) -> dict[str, Any]:
    """`GET /v1/warnings`: the tenant's records stored with warnings."""
    spec = None
    if entity is not None:
        spec = ENTITY_BY_KEY.get(entity)
        if spec is None:
            raise Unprocessable(
                f"unknown entity {entity!r}; known: {', '.join(ENTITY_BY_KEY)}",
                details=[{"field": "entity", "message": "unknown"}],
            )
    with db.sessions() as session:
        return {"warnings": warnings_list(session, tenant_id=tenant_id, entity=spec, limit=limit)}
