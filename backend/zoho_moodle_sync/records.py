"""The read side: what the service knows about one record (stored state, parking, history)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.models import ENTITY_TABLES, ParkedRecord, RecordOutcome
from zoho_moodle_sync.entities import EntitySpec


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
        "parked": None
        if parked is None
        else {
            "reason": parked.reason,
            "message": parked.message,
            "waiting_for": parked.waiting_for,
            "parked_at": _iso(parked.parked_at),
            "updated_at": _iso(parked.updated_at),
            "event_id": parked.inbound_event_id,
        },
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
