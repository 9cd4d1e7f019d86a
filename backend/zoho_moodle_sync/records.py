"""The read side: what the service knows about one record (stored state, parking, history)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.models import ENTITY_TABLES, ParkedRecord, ParkedWait, RecordOutcome
from zoho_moodle_sync.entities import ENTITY_BY_KEY, EntitySpec


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
