"""Decides each record's outcome against what is stored, and stores it: set-based, per batch.

For a batch of one entity: one read of the stored fingerprints, one read per dependency, one
upsert, one insert of outcome history. Records whose dependencies are missing are parked and
handed back by `release_parked` once those dependencies are stored. Flushes, never commits.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Select,
    Table,
    bindparam,
    case,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.bulk import insert_new
from zoho_moodle_sync.db.models import ENTITY_TABLES, ParkedRecord
from zoho_moodle_sync.entities import FieldSpec
from zoho_moodle_sync.field_mapping import EntityMapping
from zoho_moodle_sync.fingerprint import fingerprint
from zoho_moodle_sync.service.outcomes import (
    BatchItem,
    BatchResult,
    Outcome,
    RecordResult,
    invalid,
    record_history,
    skipped,
    stale,
)
from zoho_moodle_sync.service.parking import park, parked_versions, unpark
from zoho_moodle_sync.service.sql import among_ids, chunks, dialect_of
from zoho_moodle_sync.stages import MappedRecord


@dataclass(slots=True)
class _Stored:
    fingerprint: str
    modified_time: datetime | None
    data: dict[str, Any] | None = None
    deleted: bool = False
    warnings: list[dict[str, str]] | None = None


def apply_batch(
    *,
    session: Session,
    tenant_id: int,
    mapping: EntityMapping,
    items: Sequence[tuple[int | None, BatchItem]],
    event_id: int | None,
    event_ids: Sequence[int | None] | None = None,
) -> BatchResult:
    """Decide and store the outcome of every record of one entity, in request order.
    `event_ids`: the inbound event of each item, when they came in several (webhooks completed
    together); else every item is `event_id`'s."""
    spec = mapping.spec
    table = ENTITY_TABLES[spec.key]
    now = utcnow()
    batch = BatchResult()
    valid = [(index, item) for index, item in items if isinstance(item, MappedRecord)]
    ids = list(dict.fromkeys(item.zoho_id for _, item in valid))

    stored = _stored_versions(session, table, tenant_id, ids)
    existing = set(stored)
    parked_since, parked_times = parked_versions(session, tenant_id, spec.key, ids)
    present = _present_dependencies(session, tenant_id, spec.dependencies, valid)

    events = list(event_ids) if event_ids is not None else [event_id] * len(items)
    to_store: dict[str, tuple[MappedRecord, str, list[dict[str, str]] | None]] = {}
    stored_by: dict[str, int | None] = {}
    """The event of the version of each record that is written."""
    to_touch: dict[str, datetime] = {}
    to_park: dict[str, tuple[MappedRecord, RecordResult]] = {}
    pending_changes: list[tuple[RecordResult, MappedRecord, dict[str, Any] | None]] = []
    settled: set[str] = set()
    first_arrivals: dict[str, tuple[RecordResult, MappedRecord]] = {}

    for (index, item), item_event in zip(items, events, strict=True):
        if not isinstance(item, MappedRecord):
            batch.results.append(invalid(spec.key, index, item))
            continue
        zoho_id = item.zoho_id
        current = stored.get(zoho_id)
        newest_known = _latest(
            current.modified_time if current else None, parked_times.get(zoho_id)
        )
        if item.modified_time and newest_known and item.modified_time < newest_known:
            batch.results.append(stale(spec.key, index, item, newest_known))
            continue
        missing = _missing_dependencies(mapping, spec.dependencies, item, present)
        if missing:
            result = skipped(spec.key, index, item, missing)
            result.warnings = _warnings_since(item, None, now)
            batch.results.append(result)
            to_park[zoho_id] = (item, result)
            settled.discard(zoho_id)
            if item.modified_time:
                parked_times[zoho_id] = item.modified_time
            continue
        to_park.pop(zoho_id, None)
        settled.add(zoho_id)
        digest = fingerprint(item.data)
        if current is None or current.deleted:
            # A record deleted in Zoho and then restored there is new again.
            result = RecordResult(spec.key, Outcome.NEW, zoho_id, index)
            if current is None:
                first_arrivals.setdefault(zoho_id, (result, item))
        elif current.fingerprint == digest:
            result = RecordResult(spec.key, Outcome.UNCHANGED, zoho_id, index)
            if item.modified_time and (
                current.modified_time is None or item.modified_time > current.modified_time
            ):
                # No content change, but remember the newer time so an older event is STALE.
                to_touch[zoho_id] = item.modified_time
        else:
            result = RecordResult(spec.key, Outcome.UPDATED, zoho_id, index)
            pending_changes.append((result, item, current.data))
        warnings = _warnings_since(item, current.warnings if current else None, now)
        result.warnings = warnings
        if result.outcome is not Outcome.UNCHANGED:
            to_store[zoho_id] = (item, digest, warnings)
            stored_by[zoho_id] = item_event
            to_touch.pop(zoho_id, None)
        batch.results.append(result)
        stored[zoho_id] = _Stored(
            digest, item.modified_time or newest_known, item.data, warnings=warnings
        )

    for result, item_event in zip(batch.results, events, strict=True):
        result.event_id = item_event
    _fill_changes(session, table, tenant_id, mapping, pending_changes)
    new = {zoho_id: row for zoho_id, row in to_store.items() if zoho_id not in existing}
    raced = _insert(session, table, tenant_id, new, stored_by, now)
    if raced:
        # A concurrent transaction stored these first (after we read): judged against that.
        to_touch |= _arrived_second(session, table, tenant_id, mapping, raced, first_arrivals)
    updates = {
        zoho_id: row
        for zoho_id, row in to_store.items()
        if zoho_id not in new
        or (zoho_id in raced and first_arrivals[zoho_id][0].outcome is Outcome.UPDATED)
    }
    _upsert(session, table, tenant_id, updates, stored_by, now)
    _touch(session, table, tenant_id, to_touch)
    # Only what was parked when read: one parked by a concurrent transaction since then stays
    # parked, and is run again (and found unchanged or stale) when released or swept.
    unpark(session, tenant_id, spec.key, [i for i in ids if i in settled and i in parked_since])
    park(session, tenant_id, spec.key, to_park.values(), parked_since, now)
    record_history(session=session, tenant_id=tenant_id, results=batch.results, event_id=event_id)
    batch.stored_ids = [i for i in ids if i in settled]
    return batch


def _warnings_since(
    item: MappedRecord, before: list[dict[str, str]] | None, now: datetime
) -> list[dict[str, str]] | None:
    """The record's warnings, each with the time it was first seen: a warning the previous
    version had too keeps its `since`, so "since" says how long it has been left uncorrected."""
    if not item.warnings:
        return None
    seen = {(w["field"], w["code"]): w["since"] for w in before or () if "since" in w}
    return [
        {**w.as_dict(), "since": seen.get((w.field, w.code), now.isoformat())}
        for w in item.warnings
    ]


def _latest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


@functools.cache
def _among_stored(table: Table, dialect: str, columns: tuple[str, ...]) -> Select[Any]:
    """`columns` of the tenant's stored rows whose Zoho id is among `ids` (the parameters
    `tenant_id` and `ids`); built once per table, database and columns."""
    return select(*(table.c[name] for name in columns)).where(
        table.c.tenant_id == bindparam("tenant_id"), among_ids(dialect, table.c.zoho_id)
    )


def _stored_versions(
    session: Session, table: Table, tenant_id: int, ids: Sequence[str]
) -> dict[str, _Stored]:
    found: dict[str, _Stored] = {}
    columns = ("zoho_id", "fingerprint", "zoho_modified_time", "deleted_at", "warnings")
    query = _among_stored(table, dialect_of(session), columns)
    for chunk in chunks(ids):
        rows = session.execute(query, {"tenant_id": tenant_id, "ids": list(chunk)})
        for zoho_id, digest, modified, deleted_at, warnings in rows:
            found[zoho_id] = _Stored(
                digest, modified, deleted=deleted_at is not None, warnings=warnings
            )
    return found


def _present_dependencies(
    session: Session,
    tenant_id: int,
    dependencies: Sequence[FieldSpec],
    valid: Sequence[tuple[int | None, MappedRecord]],
) -> dict[str, set[str]]:
    wanted: dict[str, set[str]] = {}
    for dep in dependencies:
        assert dep.lookup is not None
        ids = wanted.setdefault(dep.lookup, set())
        ids.update(v for _, item in valid if (v := item.data.get(dep.name)))
    present: dict[str, set[str]] = {}
    for entity, ids in wanted.items():
        query = _among_stored(ENTITY_TABLES[entity], dialect_of(session), ("zoho_id",))
        found = present.setdefault(entity, set())
        for chunk in chunks(sorted(ids)):
            found.update(session.scalars(query, {"tenant_id": tenant_id, "ids": list(chunk)}))
    return present


def _missing_dependencies(
    mapping: EntityMapping,
    dependencies: Sequence[FieldSpec],
    item: MappedRecord,
    present: dict[str, set[str]],
) -> list[dict[str, str]]:
    missing = []
    for dep in dependencies:
        assert dep.lookup is not None
        value = item.data.get(dep.name)
        if value and value not in present[dep.lookup]:
            missing.append(
                {"entity": dep.lookup, "zoho_id": value, "field": mapping.zoho_name(dep.name)}
            )
    return missing


def _fill_changes(
    session: Session,
    table: Table,
    tenant_id: int,
    mapping: EntityMapping,
    pending: list[tuple[RecordResult, MappedRecord, dict[str, Any] | None]],
) -> None:
    """`changes` for UPDATED records, against the version before; stored data is read only for
    records that changed, and a record changed twice in one batch is compared with its first change.
    """
    unread = list(dict.fromkeys(item.zoho_id for _, item, before in pending if before is None))
    stored: dict[str, dict[str, Any]] = {}
    query = _among_stored(table, dialect_of(session), ("zoho_id", "data"))
    for chunk in chunks(unread):
        rows = session.execute(query, {"tenant_id": tenant_id, "ids": list(chunk)})
        stored.update((zoho_id, data) for zoho_id, data in rows)
    for result, item, before in pending:
        old = before if before is not None else stored.get(item.zoho_id, {})
        result.changes = {
            mapping.zoho_name(name): [old.get(name), value]
            for name, value in item.data.items()
            if old.get(name) != value
        }


def _upsert(
    session: Session,
    table: Table,
    tenant_id: int,
    to_store: dict[str, tuple[MappedRecord, str, list[dict[str, str]] | None]],
    events: dict[str, int | None],
    now: datetime,
) -> None:
    if not to_store:
        return
    rows = _rows(tenant_id, to_store, events, now)
    dialect = session.get_bind().dialect.name
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    keep = {"id", "tenant_id", "zoho_id", "created_at"}
    # A concurrent request may have stored a newer version since we read: never go back in time.
    not_older = (
        (stmt.excluded.zoho_modified_time.is_(None))
        | (table.c.zoho_modified_time.is_(None))
        | (stmt.excluded.zoho_modified_time >= table.c.zoho_modified_time)
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["tenant_id", "zoho_id"],
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keep},
        where=not_older,
    )
    for start in range(0, len(rows), 500):
        session.execute(stmt, rows[start : start + 500])


def _rows(
    tenant_id: int,
    records: dict[str, tuple[MappedRecord, str, list[dict[str, str]] | None]],
    events: dict[str, int | None],
    now: datetime,
) -> list[dict[str, Any]]:
    return [
        {
            **item.record.model_dump(),
            "tenant_id": tenant_id,
            "zoho_id": zoho_id,
            "fingerprint": digest,
            "zoho_modified_time": item.modified_time,
            "data": item.data,
            "raw": item.raw,
            "warnings": warnings,
            "last_event_id": events[zoho_id],
            "created_at": now,
            "updated_at": now,
            "deleted_at": None,
        }
        for zoho_id, (item, digest, warnings) in records.items()
    ]


def _insert(
    session: Session,
    table: Table,
    tenant_id: int,
    to_insert: dict[str, tuple[MappedRecord, str, list[dict[str, str]] | None]],
    events: dict[str, int | None],
    now: datetime,
) -> set[str]:
    """Insert first arrivals; the ids a concurrent transaction inserted meanwhile (and was
    waited for) are returned, not inserted."""
    if not to_insert:
        return set()
    rows = _rows(tenant_id, to_insert, events, now)
    inserted: set[str] = set()
    key = ("tenant_id", "zoho_id")
    for start in range(0, len(rows), 500):
        inserted.update(insert_new(session, table, rows[start : start + 500], key=key))
    return set(to_insert) - inserted


def _arrived_second(
    session: Session,
    table: Table,
    tenant_id: int,
    mapping: EntityMapping,
    raced: set[str],
    first_arrivals: dict[str, tuple[RecordResult, MappedRecord]],
) -> dict[str, datetime]:
    """Re-decide records another transaction stored first: the same content is UNCHANGED (its
    newer Modified_Time, if any, remembered), another is UPDATED against it."""
    now_stored = _stored_versions(session, table, tenant_id, sorted(raced))
    touch: dict[str, datetime] = {}
    changed: list[tuple[RecordResult, MappedRecord, dict[str, Any] | None]] = []
    for zoho_id in raced:
        (result, item), theirs = first_arrivals[zoho_id], now_stored[zoho_id]
        if theirs.fingerprint == fingerprint(item.data):
            result.outcome = Outcome.UNCHANGED
            if item.modified_time and (
                theirs.modified_time is None or item.modified_time > theirs.modified_time
            ):
                touch[zoho_id] = item.modified_time
        else:
            result.outcome = Outcome.UPDATED
            changed.append((result, item, None))
    _fill_changes(session, table, tenant_id, mapping, changed)
    return touch


def _touch(session: Session, table: Table, tenant_id: int, to_touch: dict[str, datetime]) -> None:
    if not to_touch:
        return
    stmt = (
        update(table)
        .where(table.c.tenant_id == tenant_id, table.c.zoho_id == bindparam("b_zoho_id"))
        .values(zoho_modified_time=bindparam("b_modified"))
    )
    session.connection().execute(
        stmt, [{"b_zoho_id": k, "b_modified": v} for k, v in to_touch.items()]
    )


def delete_records(
    *,
    session: Session,
    tenant_id: int,
    entity: str,
    zoho_ids: Sequence[str],
    event_id: int | None,
) -> list[RecordResult]:
    """Records deleted in Zoho: stored ones are marked deleted (kept, for history and for the
    Moodle removal policy), parked ones leave the parking; unknown ones change nothing."""
    table = ENTITY_TABLES[entity]
    now = utcnow()
    ids = list(dict.fromkeys(zoho_ids))
    live: set[str] = set()
    gone: set[str] = set()
    for chunk in chunks(ids):
        rows = session.execute(
            select(table.c.zoho_id, table.c.deleted_at).where(
                table.c.tenant_id == tenant_id, table.c.zoho_id.in_(chunk)
            )
        ).all()
        live.update(zoho_id for zoho_id, deleted in rows if deleted is None)
        gone.update(zoho_id for zoho_id, deleted in rows if deleted is not None)
        session.execute(
            update(table)
            .where(
                table.c.tenant_id == tenant_id,
                table.c.zoho_id.in_(chunk),
                table.c.deleted_at.is_(None),
            )
            .values(
                deleted_at=now,
                last_event_id=event_id,
                # Events from before the deletion are stale from now on; a record restored in
                # Zoho comes back with a newer Modified_Time.
                zoho_modified_time=case(
                    (table.c.zoho_modified_time > now, table.c.zoho_modified_time), else_=now
                ),
            )
        )
    parked = set(
        session.scalars(
            select(ParkedRecord.zoho_id).where(
                ParkedRecord.tenant_id == tenant_id,
                ParkedRecord.entity == entity,
                ParkedRecord.zoho_id.in_(ids),
            )
        )
    )
    unpark(session, tenant_id, entity, list(parked))
    results = []
    for index, zoho_id in enumerate(ids):
        if zoho_id in live:
            outcome, message = Outcome.DELETED, "deleted in Zoho"
        elif zoho_id in parked:
            outcome = Outcome.DELETED
            message = "deleted in Zoho while waiting for its dependencies; no longer waiting"
        elif zoho_id in gone:
            outcome, message = Outcome.UNCHANGED, "already deleted"
        else:
            outcome, message = Outcome.UNCHANGED, "never stored here; nothing to delete"
        results.append(RecordResult(entity, outcome, zoho_id, index, message=message))
    record_history(session=session, tenant_id=tenant_id, results=results, event_id=event_id)
    return results
