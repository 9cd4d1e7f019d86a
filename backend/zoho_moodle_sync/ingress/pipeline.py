"""The pipeline of a batch of records: parser → mapper → service in the caller's transaction,
the delivery jobs of what changed, and the parked records the batch released run through the
same pipeline; plus the `/v1/sync` requests (run and replay) and deletions around it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from zoho_moodle_sync import memory, parser, service, tenants
from zoho_moodle_sync.db.models import Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITY_BY_KEY, EntitySpec
from zoho_moodle_sync.errors import NotFound, RequestRejected
from zoho_moodle_sync.ingress.events import (
    copy_event,
    mark_failed,
    mark_processed,
    mark_rejected,
    replayable,
)
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.mapper import map_record
from zoho_moodle_sync.service import Outcome, RecordResult
from zoho_moodle_sync.stages import ZohoRecord
from zoho_moodle_sync.tenants import TenantContext

_DELIVERED = (Outcome.NEW, Outcome.UPDATED)
"""Outcomes that change what Moodle should hold."""
_STORED = (Outcome.NEW, Outcome.UPDATED, Outcome.UNCHANGED)
"""Outcomes after which the record is stored, and what waited for it may go on."""


@dataclass
class SyncReport:
    event_id: int
    entity: str
    results: list[RecordResult]
    released: list[RecordResult] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        counts = {outcome.value: 0 for outcome in Outcome}
        for result in self.results:
            counts[result.outcome.value] += 1
        return {"total": len(self.results), **counts}

    def event_summary(self) -> dict[str, int]:
        """What the inbound event keeps of it: the counts, and how many records it released."""
        return {**self.summary(), "released": len(self.released)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "entity": self.entity,
            "summary": self.summary(),
            "results": [r.as_dict() for r in self.results],
            "released": [r.as_dict() for r in self.released],
        }


def run_sync(
    db: Database,
    *,
    tenant: TenantContext,
    entity: EntitySpec,
    event_id: int,
    body: bytes,
    content_type: str | None,
    max_records: int,
) -> SyncReport:
    """Process a stored `POST /v1/sync/{entity}` body; marks the event processed or rejected."""
    with db.batch_turn():
        try:
            raw_records = parser.parse_sync_body(body, content_type, max_records=max_records)
        except RequestRejected as error:
            mark_rejected(db, event_id, error)
            raise
        try:
            with db.sessions.begin() as session:
                results, released = process_records(
                    session,
                    tenant=tenant,
                    entity=entity,
                    raw_records=raw_records,
                    event_id=event_id,
                    nul_free=not parser.may_hold_nul(body),
                )
                report = SyncReport(event_id, entity.key, results, released)
                finish(session, [report])
                return report
        except Exception as error:
            mark_failed(db, event_id, error)
            raise
        finally:
            del raw_records
            memory.release_after(len(body))


def run_delete(
    db: Database,
    *,
    tenant: TenantContext,
    entity: EntitySpec,
    event_id: int,
    zoho_ids: Sequence[str],
) -> SyncReport:
    """Records deleted in Zoho: marked deleted, and their Moodle side follows the removal
    policy through the outbox."""
    try:
        with db.sessions.begin() as session:
            results = delete_records(
                session, tenant=tenant, entity=entity, zoho_ids=zoho_ids, event_id=event_id
            )
            report = SyncReport(event_id, entity.key, results)
            finish(session, [report])
            return report
    except Exception as error:
        mark_failed(db, event_id, error)
        raise


def delete_records(
    session: Session,
    *,
    tenant: TenantContext,
    entity: EntitySpec,
    zoho_ids: Sequence[str],
    event_id: int | None,
) -> list[RecordResult]:
    """Mark records deleted and queue their removal in Moodle, in the caller's transaction."""
    results = service.delete_records(
        session=session,
        tenant_id=tenant.id,
        entity=entity.key,
        zoho_ids=zoho_ids,
        event_id=event_id,
    )
    _enqueue_delivery(
        session,
        tenant=tenant,
        entity=entity,
        zoho_ids=[r.zoho_id for r in results if r.zoho_id and r.outcome is Outcome.DELETED],
        action="remove",
    )
    return results


def process_records(
    session: Session,
    *,
    tenant: TenantContext,
    entity: EntitySpec,
    raw_records: Sequence[Any],
    event_id: int | None,
    from_request: bool = True,
    nul_free: bool = False,
    event_ids: Sequence[int | None] | None = None,
) -> tuple[list[RecordResult], list[RecordResult]]:
    """Parse, map and apply records of one entity, then run the parked records their arrival
    released; returns the records' results and the released records' results. `nul_free`: the
    records are known to hold no NUL character (see `parser.parse_record`). `event_ids`: the
    inbound event of each record, when they came in several events (in the order they
    arrived); a released record then belongs to the event whose record released it."""
    mapping = tenant.mapping.for_entity(entity)
    items: list[tuple[int | None, service.BatchItem]] = []
    for index, raw in enumerate(raw_records):
        record = parser.parse_record(raw, nul_free=nul_free)
        item = map_record(mapping, record) if isinstance(record, ZohoRecord) else record
        items.append((index if from_request else None, item))
    batch = service.apply_batch(
        session=session,
        tenant_id=tenant.id,
        mapping=mapping,
        items=items,
        event_id=event_id,
        event_ids=event_ids,
    )
    _enqueue_delivery(
        session,
        tenant=tenant,
        entity=entity,
        zoho_ids=[r.zoho_id for r in batch.results if r.zoho_id and r.outcome in _DELIVERED],
    )
    freed = service.release_parked(
        session=session, tenant_id=tenant.id, entity=entity.key, stored_ids=batch.stored_ids
    )
    releasers = _releasers(batch.results, event_ids) if event_ids is not None else None
    return batch.results, _run_released(session, tenant, freed, event_id, releasers)


def _releasers(
    results: Sequence[RecordResult], event_ids: Sequence[int | None]
) -> dict[str, tuple[int, int | None]]:
    """For each stored id, the first of the batch's events that stored it (its position in
    the batch, and the event): a parked record waiting for it was released by that event."""
    first: dict[str, tuple[int, int | None]] = {}
    for position, (result, event) in enumerate(zip(results, event_ids, strict=True)):
        if result.zoho_id is not None and result.outcome in _STORED:
            first.setdefault(result.zoho_id, (position, event))
    return first


def _enqueue_delivery(
    session: Session,
    *,
    tenant: TenantContext,
    entity: EntitySpec,
    zoho_ids: list[str],
    action: str = "sync",
) -> None:
    """Queue the Moodle side of changed records, for entities that have one."""
    if zoho_ids:
        queue.enqueue_delivery(
            session, tenant_id=tenant.id, entity=entity.key, zoho_ids=zoho_ids, action=action
        )


def _run_released(
    session: Session,
    tenant: TenantContext,
    freed: Sequence[service.ReleasedRecord],
    event_id: int | None,
    releasers: dict[str, tuple[int, int | None]] | None = None,
) -> list[RecordResult]:
    """Run released records through the pipeline, entity by entity; with `releasers`, each
    under the event whose record released it (the last of those it waited for to arrive)."""
    by_entity: dict[str, list[dict[str, Any]]] = {}
    events: dict[str, list[int | None]] = {}
    for record in freed:
        by_entity.setdefault(record.entity, []).append(record.raw)
        if releasers is not None:
            known = [releasers[i] for i in record.freed_by if i in releasers]
            events.setdefault(record.entity, []).append(max(known)[1] if known else event_id)
    released: list[RecordResult] = []
    for key, raws in by_entity.items():
        results, cascade = process_records(
            session,
            tenant=tenant,
            entity=ENTITY_BY_KEY[key],
            raw_records=raws,
            event_id=event_id,
            from_request=False,
            event_ids=events.get(key),
        )
        released += results + cascade
    return released


def finish(session: Session, reports: Sequence[SyncReport], *, http_status: int = 200) -> None:
    """Record that events were processed, each with its summary, in one statement."""
    mark_processed(
        session, [(r.event_id, r.event_summary()) for r in reports], http_status=http_status
    )


def sweep_parked(db: Database, tenant: TenantContext) -> list[RecordResult]:
    """Release parked records whose dependencies arrived in a concurrent transaction."""
    with db.sessions.begin() as session:
        freed = service.sweep_parked(session=session, tenant_id=tenant.id)
        return _run_released(session, tenant, freed, None)


def sweep_all_tenants(db: Database) -> int:
    """Sweep every active tenant; returns how many parked records were released."""
    with db.sessions() as session:
        contexts = [tenants.context_of(t) for t in tenants.list_all(session) if not t.disabled_at]
    return sum(len(sweep_parked(db, context)) for context in contexts)


def replay(db: Database, event_id: int, *, max_records: int) -> SyncReport:
    """Run a stored `/v1/sync` event through the pipeline again, as a new event."""
    with db.sessions.begin() as session:
        original = replayable(session, event_id)
        if original.source == "webhook":
            raise NotFound(f"inbound event {event_id} is a webhook: replay it as one")
        tenant = tenants.context_of(session.get_one(Tenant, original.tenant_id))
        copy = copy_event(session, original, source="replay", status="received")
        new_id, entity, body, content_type = (
            copy.id,
            ENTITY_BY_KEY[str(original.entity)],
            original.body,
            original.content_type,
        )
    return run_sync(
        db,
        tenant=tenant,
        entity=entity,
        event_id=new_id,
        body=body,
        content_type=content_type,
        max_records=max_records,
    )
