"""Each record's outcome (NEW, UPDATED, UNCHANGED, INVALID, SKIPPED, STALE, DELETED) with
its details, and the history of outcomes kept per record."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Table
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.bulk import append
from zoho_moodle_sync.db.models import RecordOutcome
from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.stages import InvalidRecord, MappedRecord, UnreadableRecord


class Outcome(StrEnum):
    NEW = "NEW"
    UPDATED = "UPDATED"
    UNCHANGED = "UNCHANGED"
    INVALID = "INVALID"
    SKIPPED = "SKIPPED"
    STALE = "STALE"
    DELETED = "DELETED"


@dataclass(slots=True)
class RecordResult:
    entity: str
    outcome: Outcome
    zoho_id: str | None
    index: int | None = None
    """Position in the request body; None for a parked record released by this request."""
    changes: dict[str, list[Any]] | None = None
    errors: list[dict[str, str]] | None = None
    reason: str | None = None
    message: str | None = None
    waiting_for: list[dict[str, str]] | None = None
    warnings: list[dict[str, str]] | None = None
    event_id: int | None = None
    """The inbound event that brought this version, when the batch held several events' records
    (not part of the answer)."""

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if self.index is not None:
            result["index"] = self.index
        else:
            result["entity"] = self.entity
        result["zoho_id"] = self.zoho_id
        result["outcome"] = self.outcome.value
        for name in ("changes", "errors", "reason", "message", "waiting_for", "warnings"):
            value = getattr(self, name)
            if value is not None:
                result[name] = value
        return result

    def history_detail(self) -> dict[str, Any] | None:
        detail = {
            k: v
            for k, v in (
                ("changes", self.changes),
                ("errors", self.errors),
                ("reason", self.reason),
                ("message", self.message),
                ("waiting_for", self.waiting_for),
                ("warnings", self.warnings),
            )
            if v is not None
        }
        return detail or None


BatchItem = MappedRecord | InvalidRecord | UnreadableRecord


@dataclass(slots=True)
class BatchResult:
    results: list[RecordResult] = field(default_factory=list)
    stored_ids: list[str] = field(default_factory=list)
    """Ids stored by this batch (new, updated or unchanged): what parked records may wait for."""


def record_history(
    *, session: Session, tenant_id: int, results: Iterable[RecordResult], event_id: int | None
) -> None:
    """One history row per outcome worth remembering (all but UNCHANGED), under the result's
    own event when it has one, else `event_id`."""
    now = utcnow()
    rows = [
        {
            "tenant_id": tenant_id,
            "entity": r.entity,
            "zoho_id": r.zoho_id,
            "inbound_event_id": event_id if r.event_id is None else r.event_id,
            "outcome": r.outcome.value,
            "detail": r.history_detail(),
            "at": now,
        }
        for r in results
        if r.outcome is not Outcome.UNCHANGED and r.zoho_id is not None
    ]
    history = RecordOutcome.__table__
    assert isinstance(history, Table)
    append(session, history, rows)


def invalid(entity: str, index: int | None, item: InvalidRecord | UnreadableRecord) -> RecordResult:
    return RecordResult(
        entity,
        Outcome.INVALID,
        item.zoho_id,
        index,
        errors=[e.as_dict() for e in item.errors],
        message="; ".join(f"{e.field}: {e.message}" for e in item.errors),
    )


def stale(entity: str, index: int | None, item: MappedRecord, newest: datetime) -> RecordResult:
    assert item.modified_time is not None
    return RecordResult(
        entity,
        Outcome.STALE,
        item.zoho_id,
        index,
        reason="older_than_stored",
        message=(
            f"Modified_Time {item.modified_time.isoformat()} is older than the version already "
            f"received ({newest.isoformat()}); ignored"
        ),
    )


def skipped(
    entity: str, index: int | None, item: MappedRecord, missing: list[dict[str, str]]
) -> RecordResult:
    first = missing[0]
    label = ENTITY_BY_KEY[first["entity"]].label
    waits = ", ".join(
        f"{ENTITY_BY_KEY[m['entity']].label} {m['zoho_id']} ({m['field']})" for m in missing
    )
    return RecordResult(
        entity,
        Outcome.SKIPPED,
        item.zoho_id,
        index,
        reason=f"{label}_not_synced_yet",
        message=f"Waiting for {waits}; it is processed automatically when that arrives",
        waiting_for=missing,
    )
