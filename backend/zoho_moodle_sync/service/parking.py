"""Parking: a record whose dependencies are not stored yet waits, with one row per missing
dependency, and is handed back to be run again once they are (or by the sweep, when a concurrent
transaction stored them)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.models import ENTITY_TABLES, ParkedRecord, ParkedWait
from zoho_moodle_sync.entities import ENTITIES, dependents_of
from zoho_moodle_sync.service.outcomes import RecordResult
from zoho_moodle_sync.service.sql import among_ids, chunks, dialect_of
from zoho_moodle_sync.stages import MappedRecord

_WAITS = cast(Table, ParkedWait.__table__)
_PARKED = cast(Table, ParkedRecord.__table__)
"""Read and written through their tables: no ORM object of them is loaded here, so the ORM's
statement handling and session bookkeeping would only cost time."""


@dataclass(frozen=True, slots=True)
class ReleasedRecord:
    entity: str
    zoho_id: str
    raw: dict[str, Any]
    freed_by: tuple[str, ...] = ()
    """The stored ids (of the entity `release_parked` was given) whose arrival released it."""


def release_parked(
    *, session: Session, tenant_id: int, entity: str, stored_ids: Sequence[str]
) -> list[ReleasedRecord]:
    """Parked records that waited for `stored_ids` of `entity` and now wait for nothing.

    They are removed from the parking; the caller runs them through the pipeline again (and a
    record still missing something is parked again there).
    """
    if not stored_ids or not dependents_of(entity):
        return []
    waiting: dict[int, list[str]] = {}
    statement = _release_statement(dialect_of(session))
    for chunk in chunks(stored_ids):
        rows = session.execute(
            statement, {"tenant_id": tenant_id, "entity": entity, "ids": list(chunk)}
        )
        for parked_id, zoho_id in rows:
            waiting.setdefault(parked_id, []).append(zoho_id)
    return _take_ready(session, waiting)


def sweep_parked(*, session: Session, tenant_id: int) -> list[ReleasedRecord]:
    """Release parked records whose dependencies were stored by a concurrent transaction."""
    waiting: dict[int, Sequence[str]] = {}
    for spec in ENTITIES:
        table = ENTITY_TABLES[spec.key]
        satisfied = and_(
            _WAITS.c.tenant_id == tenant_id,
            _WAITS.c.entity == spec.key,
            exists().where(
                table.c.tenant_id == _WAITS.c.tenant_id, table.c.zoho_id == _WAITS.c.zoho_id
            ),
        )
        found = list(session.scalars(select(_WAITS.c.parked_id).where(satisfied)))
        if found:
            waiting.update(dict.fromkeys(found, ()))
            session.execute(delete(_WAITS).where(satisfied))
    return _take_ready(session, waiting)


def _take_ready(session: Session, parked_ids: Mapping[int, Sequence[str]]) -> list[ReleasedRecord]:
    """The parked records of `parked_ids` that wait for nothing any more, taken off the
    parking; `parked_ids` maps each to the ids whose arrival freed it (if known)."""
    ready: list[ReleasedRecord] = []
    for chunk in chunks(sorted(parked_ids)):
        rows = session.execute(
            select(_PARKED.c.id, _PARKED.c.entity, _PARKED.c.zoho_id, _PARKED.c.raw)
            .where(_PARKED.c.id.in_(chunk))
            .where(~exists().where(_WAITS.c.parked_id == _PARKED.c.id))
        ).all()
        if rows:
            session.execute(delete(_PARKED).where(_PARKED.c.id.in_([r.id for r in rows])))
            ready += [
                ReleasedRecord(r.entity, r.zoho_id, r.raw, tuple(parked_ids[r.id])) for r in rows
            ]
    order = {spec.key: n for n, spec in enumerate(ENTITIES)}
    return sorted(ready, key=lambda r: order[r.entity])


def parked_versions(
    session: Session, tenant_id: int, entity: str, ids: Sequence[str]
) -> tuple[dict[str, datetime], dict[str, datetime | None]]:
    """When each already-parked record was first parked, and its Modified_Time."""
    since: dict[str, datetime] = {}
    times: dict[str, datetime | None] = {}
    query = _parked_versions_query(dialect_of(session))
    for chunk in chunks(ids):
        rows = session.execute(
            query, {"tenant_id": tenant_id, "entity": entity, "ids": list(chunk)}
        )
        for zoho_id, parked_at, modified in rows:
            since[zoho_id] = parked_at
            times[zoho_id] = modified
    return since, times


def unpark(session: Session, tenant_id: int, entity: str, ids: Sequence[str]) -> None:
    statement = _unpark_statement(dialect_of(session))
    for chunk in chunks(ids):
        session.execute(statement, {"tenant_id": tenant_id, "entity": entity, "ids": list(chunk)})


def _of_entity(table: Table, dialect: str) -> ColumnElement[bool]:
    """The rows of the tenant's `entity` whose Zoho id is among `ids` (all three parameters)."""
    return and_(
        table.c.tenant_id == bindparam("tenant_id"),
        table.c.entity == bindparam("entity"),
        among_ids(dialect, table.c.zoho_id),
    )


@functools.cache
def _release_statement(dialect: str) -> Any:
    condition = _of_entity(_WAITS, dialect)
    return delete(_WAITS).where(condition).returning(_WAITS.c.parked_id, _WAITS.c.zoho_id)


@functools.cache
def _parked_versions_query(dialect: str) -> Any:
    columns = (_PARKED.c.zoho_id, _PARKED.c.parked_at, _PARKED.c.zoho_modified_time)
    return select(*columns).where(_of_entity(_PARKED, dialect))


@functools.cache
def _unpark_statement(dialect: str) -> Any:
    return delete(_PARKED).where(_of_entity(_PARKED, dialect))


def park(
    session: Session,
    tenant_id: int,
    entity: str,
    parked: Iterable[tuple[MappedRecord, RecordResult]],
    parked_since: dict[str, datetime],
    now: datetime,
) -> None:
    """Park records (each under the event of its result), or replace their parked versions:
    one statement that a concurrent transaction parking the same record (the same batch sent
    twice at once) cannot break."""
    waits: dict[str, list[dict[str, str]]] = {}
    rows = []
    for item, result in parked:
        assert result.waiting_for is not None
        waits[item.zoho_id] = result.waiting_for
        rows.append(
            {
                "tenant_id": tenant_id,
                "entity": entity,
                "zoho_id": item.zoho_id,
                "zoho_modified_time": item.modified_time,
                "raw": dict(item.raw),
                "reason": result.reason,
                "message": result.message,
                "waiting_for": result.waiting_for,
                "inbound_event_id": result.event_id,
                "parked_at": parked_since.get(item.zoho_id, now),
                "updated_at": now,
            }
        )
    if not rows:
        return
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    table = ParkedRecord.__table__
    statement = dialect.insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", "entity", "zoho_id"],
        set_={
            name: statement.excluded[name]
            for name in (
                "zoho_modified_time",
                "raw",
                "reason",
                "message",
                "waiting_for",
                "inbound_event_id",
                "updated_at",
            )
        },
    ).returning(table.c.id, table.c.zoho_id)
    ids = {zoho_id: parked_id for parked_id, zoho_id in session.execute(statement, rows)}
    session.execute(delete(_WAITS).where(_WAITS.c.parked_id.in_(list(ids.values()))))
    wait_rows = [
        {
            "parked_id": ids[zoho_id],
            "tenant_id": tenant_id,
            "entity": w["entity"],
            "zoho_id": w["zoho_id"],
        }
        for zoho_id, missing in waits.items()
        for w in {(w["entity"], w["zoho_id"]): w for w in missing}.values()
    ]
    wait_statement = dialect.insert(ParkedWait.__table__).on_conflict_do_nothing()
    session.execute(wait_statement, wait_rows)
