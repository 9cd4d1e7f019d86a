"""Decides each record's outcome against what is stored, and stores it: set-based, per batch.

For a batch of one entity: one read of the stored fingerprints, one read per dependency, one
upsert, one insert of outcome history. Records whose dependencies are missing are parked and
handed back by `release_parked` once those dependencies are stored. Flushes, never commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.models import ENTITY_TABLES, ParkedRecord, ParkedWait, RecordOutcome
from zoho_moodle_sync.entities import ENTITIES, ENTITY_BY_KEY, FieldSpec, dependents_of
from zoho_moodle_sync.fingerprint import fingerprint
from zoho_moodle_sync.mapper import InvalidRecord, MappedRecord
from zoho_moodle_sync.mapping import EntityMapping
from zoho_moodle_sync.parser import UnreadableRecord

_CHUNK = 900
"""Ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits."""

T = TypeVar("T")


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
) -> BatchResult:
    """Decide and store the outcome of every record of one entity, in request order."""
    spec = mapping.spec
    table = ENTITY_TABLES[spec.key]
    now = utcnow()
    batch = BatchResult()
    valid = [(index, item) for index, item in items if isinstance(item, MappedRecord)]
    ids = list(dict.fromkeys(item.zoho_id for _, item in valid))

    stored = _stored_versions(session, table, tenant_id, ids)
    parked_since, parked_times = _parked_versions(session, tenant_id, spec.key, ids)
    present = _present_dependencies(session, tenant_id, spec.dependencies, valid)

    to_store: dict[str, tuple[MappedRecord, str, list[dict[str, str]] | None]] = {}
    to_touch: dict[str, datetime] = {}
    to_park: dict[str, tuple[MappedRecord, RecordResult]] = {}
    pending_changes: list[tuple[RecordResult, MappedRecord, dict[str, Any] | None]] = []
    settled: set[str] = set()

    for index, item in items:
        if not isinstance(item, MappedRecord):
            batch.results.append(_invalid(spec.key, index, item))
            continue
        zoho_id = item.zoho_id
        current = stored.get(zoho_id)
        newest_known = _latest(
            current.modified_time if current else None, parked_times.get(zoho_id)
        )
        if item.modified_time and newest_known and item.modified_time < newest_known:
            batch.results.append(_stale(spec.key, index, item, newest_known))
            continue
        missing = _missing_dependencies(mapping, spec.dependencies, item, present)
        if missing:
            result = _skipped(spec.key, index, item, missing)
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
            to_touch.pop(zoho_id, None)
        batch.results.append(result)
        stored[zoho_id] = _Stored(
            digest, item.modified_time or newest_known, item.data, warnings=warnings
        )

    _fill_changes(session, table, tenant_id, mapping, pending_changes)
    _upsert(session, table, tenant_id, to_store, event_id, now)
    _touch(session, table, tenant_id, to_touch)
    _unpark(session, tenant_id, spec.key, [i for i in ids if i in settled or i in to_park])
    _park(session, tenant_id, spec.key, to_park.values(), parked_since, event_id, now)
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


def record_history(
    *, session: Session, tenant_id: int, results: Iterable[RecordResult], event_id: int | None
) -> None:
    """One history row per outcome worth remembering (all but UNCHANGED)."""
    now = utcnow()
    rows = [
        {
            "tenant_id": tenant_id,
            "entity": r.entity,
            "zoho_id": r.zoho_id,
            "inbound_event_id": event_id,
            "outcome": r.outcome.value,
            "detail": r.history_detail(),
            "at": now,
        }
        for r in results
        if r.outcome is not Outcome.UNCHANGED and r.zoho_id is not None
    ]
    if rows:
        # A Core insert: the ORM's bulk insert costs more per row and adds nothing here.
        history = RecordOutcome.__table__
        assert isinstance(history, Table)
        session.execute(insert(history), rows)


@dataclass(frozen=True, slots=True)
class ReleasedRecord:
    entity: str
    zoho_id: str
    raw: dict[str, Any]


def release_parked(
    *, session: Session, tenant_id: int, entity: str, stored_ids: Sequence[str]
) -> list[ReleasedRecord]:
    """Parked records that waited for `stored_ids` of `entity` and now wait for nothing.

    They are removed from the parking; the caller runs them through the pipeline again (and a
    record still missing something is parked again there).
    """
    if not stored_ids or not dependents_of(entity):
        return []
    waiting: set[int] = set()
    for chunk in _chunks(stored_ids):
        condition = and_(
            ParkedWait.tenant_id == tenant_id,
            ParkedWait.entity == entity,
            _among(session, ParkedWait.zoho_id, chunk),
        )
        waiting.update(session.scalars(select(ParkedWait.parked_id).where(condition)))
        session.execute(delete(ParkedWait).where(condition))
    return _take_ready(session, waiting)


def sweep_parked(*, session: Session, tenant_id: int) -> list[ReleasedRecord]:
    """Release parked records whose dependencies were stored by a concurrent transaction."""
    waiting: set[int] = set()
    for spec in ENTITIES:
        table = ENTITY_TABLES[spec.key]
        satisfied = and_(
            ParkedWait.tenant_id == tenant_id,
            ParkedWait.entity == spec.key,
            exists().where(
                table.c.tenant_id == ParkedWait.tenant_id, table.c.zoho_id == ParkedWait.zoho_id
            ),
        )
        found = list(session.scalars(select(ParkedWait.parked_id).where(satisfied)))
        if found:
            waiting.update(found)
            session.execute(delete(ParkedWait).where(satisfied))
    return _take_ready(session, waiting)


def _take_ready(session: Session, parked_ids: set[int]) -> list[ReleasedRecord]:
    ready: list[ReleasedRecord] = []
    for chunk in _chunks(sorted(parked_ids)):
        rows = session.execute(
            select(ParkedRecord.id, ParkedRecord.entity, ParkedRecord.zoho_id, ParkedRecord.raw)
            .where(ParkedRecord.id.in_(chunk))
            .where(~exists().where(ParkedWait.parked_id == ParkedRecord.id))
        ).all()
        if rows:
            session.execute(delete(ParkedRecord).where(ParkedRecord.id.in_([r.id for r in rows])))
            ready += [ReleasedRecord(r.entity, r.zoho_id, r.raw) for r in rows]
    order = {spec.key: n for n, spec in enumerate(ENTITIES)}
    return sorted(ready, key=lambda r: order[r.entity])


def _chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _among(
    session: Session, column: ColumnElement[str] | InstrumentedAttribute[str], ids: Sequence[str]
) -> ColumnElement[bool]:
    """`column IN ids`. On PostgreSQL the ids go as one array parameter, unnested: a list of
    hundreds of parameters makes a statement that costs more to build and parse than to run,
    and `= ANY(array)` gets a plan that compares every row with every id once the statement is
    prepared while the table's statistics are not yet current (a first import)."""
    if session.get_bind().dialect.name == "postgresql":
        ids_array = bindparam(None, list(ids), type_=postgresql.ARRAY(String))
        return column.in_(select(func.unnest(ids_array)))
    return column.in_(ids)


def _latest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _stored_versions(
    session: Session, table: Table, tenant_id: int, ids: Sequence[str]
) -> dict[str, _Stored]:
    found: dict[str, _Stored] = {}
    for chunk in _chunks(ids):
        rows = session.execute(
            select(
                table.c.zoho_id,
                table.c.fingerprint,
                table.c.zoho_modified_time,
                table.c.deleted_at.is_not(None),
                table.c.warnings,
            ).where(table.c.tenant_id == tenant_id, _among(session, table.c.zoho_id, chunk))
        )
        for zoho_id, digest, modified, deleted, warnings in rows:
            found[zoho_id] = _Stored(digest, modified, deleted=bool(deleted), warnings=warnings)
    return found


def _parked_versions(
    session: Session, tenant_id: int, entity: str, ids: Sequence[str]
) -> tuple[dict[str, datetime], dict[str, datetime | None]]:
    """When each already-parked record was first parked, and its Modified_Time."""
    since: dict[str, datetime] = {}
    times: dict[str, datetime | None] = {}
    for chunk in _chunks(ids):
        rows = session.execute(
            select(
                ParkedRecord.zoho_id, ParkedRecord.parked_at, ParkedRecord.zoho_modified_time
            ).where(
                ParkedRecord.tenant_id == tenant_id,
                ParkedRecord.entity == entity,
                _among(session, ParkedRecord.zoho_id, chunk),
            )
        )
        for zoho_id, parked_at, modified in rows:
            since[zoho_id] = parked_at
            times[zoho_id] = modified
    return since, times


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
        table = ENTITY_TABLES[entity]
        found = present.setdefault(entity, set())
        for chunk in _chunks(sorted(ids)):
            found.update(
                session.scalars(
                    select(table.c.zoho_id).where(
                        table.c.tenant_id == tenant_id, _among(session, table.c.zoho_id, chunk)
                    )
                )
            )
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


def _invalid(
    entity: str, index: int | None, item: InvalidRecord | UnreadableRecord
) -> RecordResult:
    return RecordResult(
        entity,
        Outcome.INVALID,
        item.zoho_id,
        index,
        errors=[e.as_dict() for e in item.errors],
        message="; ".join(f"{e.field}: {e.message}" for e in item.errors),
    )


def _stale(entity: str, index: int | None, item: MappedRecord, newest: datetime) -> RecordResult:
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


def _skipped(
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
    for chunk in _chunks(unread):
        rows = session.execute(
            select(table.c.zoho_id, table.c.data).where(
                table.c.tenant_id == tenant_id, _among(session, table.c.zoho_id, chunk)
            )
        )
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
    event_id: int | None,
    now: datetime,
) -> None:
    if not to_store:
        return
    rows = [
        {
            **item.record.model_dump(),
            "tenant_id": tenant_id,
            "zoho_id": zoho_id,
            "fingerprint": digest,
            "zoho_modified_time": item.modified_time,
            "data": item.data,
            "raw": item.raw,
            "warnings": warnings,
            "last_event_id": event_id,
            "created_at": now,
            "updated_at": now,
            "deleted_at": None,
        }
        for zoho_id, (item, digest, warnings) in to_store.items()
    ]
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


def _unpark(session: Session, tenant_id: int, entity: str, ids: Sequence[str]) -> None:
    for chunk in _chunks(ids):
        session.execute(
            delete(ParkedRecord).where(
                ParkedRecord.tenant_id == tenant_id,
                ParkedRecord.entity == entity,
                _among(session, ParkedRecord.zoho_id, chunk),
            )
        )


def _park(
    session: Session,
    tenant_id: int,
    entity: str,
    parked: Iterable[tuple[MappedRecord, RecordResult]],
    parked_since: dict[str, datetime],
    event_id: int | None,
    now: datetime,
) -> None:
    rows = []
    for item, result in parked:
        assert result.waiting_for is not None
        row = ParkedRecord(
            tenant_id=tenant_id,
            entity=entity,
            zoho_id=item.zoho_id,
            zoho_modified_time=item.modified_time,
            raw=dict(item.raw),
            reason=result.reason,
            message=result.message,
            waiting_for=result.waiting_for,
            inbound_event_id=event_id,
            parked_at=parked_since.get(item.zoho_id, now),
            updated_at=now,
        )
        rows.append((row, result.waiting_for))
    if not rows:
        return
    session.add_all([row for row, _ in rows])
    session.flush()
    session.execute(
        insert(ParkedWait),
        [
            {
                "parked_id": row.id,
                "tenant_id": tenant_id,
                "entity": w["entity"],
                "zoho_id": w["zoho_id"],
            }
            for row, waits in rows
            for w in {(w["entity"], w["zoho_id"]): w for w in waits}.values()
        ],
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
    for chunk in _chunks(ids):
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
    _unpark(session, tenant_id, entity, list(parked))
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
