"""Orchestration and the transaction boundary of every inbound request.

The raw request is stored and committed first, so nothing that reached us is lost; then its
records run through parser → mapper → service in one transaction, and parked records released by
what was stored run through the same pipeline in that transaction too.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from zoho_moodle_sync import idempotency, parser, service, tenants
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.models import InboundEvent, Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITY_BY_KEY, EntitySpec
from zoho_moodle_sync.errors import NotFound, RequestRejected
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.mapper import map_record
from zoho_moodle_sync.service import Outcome, RecordResult
from zoho_moodle_sync.tenants import TenantContext
from zoho_moodle_sync.webhooks import WebhookEvent, parse_notification, read_body, read_workflow

log = logging.getLogger(__name__)

STORED_BODY_LIMIT = 64 * 1024
"""How much of a body over the size limit is kept, so the refusal can still be inspected."""

_KEPT_HEADERS = {
    "content-type",
    "content-length",
    "user-agent",
    "x-request-id",
    "x-tenant-id",
    "idempotency-key",
    "x-forwarded-for",
}
_DELIVERED = (Outcome.NEW, Outcome.UPDATED)
"""Outcomes that change what Moodle should hold."""
_SECRET_WORDS = ("token", "secret", "key", "password", "auth", "signature")


@dataclass(frozen=True)
class InboundRequest:
    """What arrived, as the API layer saw it."""

    source: str
    method: str
    route: str
    content_type: str | None
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    body_truncated: bool = False
    body_size: int | None = None


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "entity": self.entity,
            "summary": self.summary(),
            "results": [r.as_dict() for r in self.results],
            "released": [r.as_dict() for r in self.released],
        }


def redact_query(query: Mapping[str, str]) -> dict[str, str]:
    return {_clean(k): "***" if _looks_secret(k) else _clean(v) for k, v in query.items()}


def _clean(text: str, limit: int = 1000) -> str:
    """Text a JSON column can hold: no NUL, bounded."""
    return text.replace("\x00", "\ufffd")[:limit]


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Only headers worth keeping for diagnosis; never a credential."""
    return {
        k.lower(): v
        for k, v in headers.items()
        if k.lower() in _KEPT_HEADERS and not _looks_secret(k)
    }


def _looks_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered != "idempotency-key" and any(word in lowered for word in _SECRET_WORDS)


def store_inbound(
    db: Database, request: InboundRequest, *, tenant_id: int | None, entity: str | None
) -> int:
    """Persist the raw request and commit, before anything else is done with it."""
    with db.sessions.begin() as session:
        event = InboundEvent(
            tenant_id=tenant_id,
            source=request.source,
            method=request.method,
            route=_clean(request.route, 300),
            entity=entity,
            content_type=_clean(request.content_type, 200) if request.content_type else None,
            query=redact_query(request.query),
            headers=kept_headers(request.headers),
            body=request.body,
            body_size=request.body_size if request.body_size is not None else len(request.body),
            body_sha256=hashlib.sha256(request.body).hexdigest(),
            body_truncated=request.body_truncated,
            status="received",
        )
        session.add(event)
        session.flush()
        return event.id


def _set_status(session: Session, event_id: int, **values: Any) -> None:
    """Record how an event's processing ended; an UPDATE, so its body is never read back."""
    session.execute(
        update(InboundEvent)
        .where(InboundEvent.id == event_id)
        .values(**values, processed_at=utcnow())
    )


def mark_rejected(db: Database, event_id: int, error: RequestRejected) -> None:
    with db.sessions.begin() as session:
        _set_status(
            session,
            event_id,
            status="rejected",
            http_status=error.status_code,
            error=error.message,
        )


def mark_failed(db: Database, event_id: int, error: BaseException) -> None:
    try:
        with db.sessions.begin() as session:
            _set_status(
                session,
                event_id,
                status="failed",
                http_status=500,
                error=f"{type(error).__name__}: {error}"[:4000],
            )
    except SQLAlchemyError:
        log.exception("could not record the failure of inbound event %s", event_id)


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
            finish(session, event_id, report)
            return report
    except Exception as error:
        mark_failed(db, event_id, error)
        raise


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
            finish(session, event_id, report)
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
) -> tuple[list[RecordResult], list[RecordResult]]:
    """Parse, map and apply records of one entity, then run the parked records their arrival
    released; returns the records' results and the released records' results. `nul_free`: the
    records are known to hold no NUL character (see `parser.parse_record`)."""
    mapping = tenant.mapping.for_entity(entity)
    items: list[tuple[int | None, service.BatchItem]] = []
    for index, raw in enumerate(raw_records):
        record = parser.parse_record(raw, nul_free=nul_free)
        item = map_record(mapping, record) if isinstance(record, parser.ZohoRecord) else record
        items.append((index if from_request else None, item))
    batch = service.apply_batch(
        session=session, tenant_id=tenant.id, mapping=mapping, items=items, event_id=event_id
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
    return batch.results, _run_released(session, tenant, freed, event_id)


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
) -> list[RecordResult]:
    by_entity: dict[str, list[dict[str, Any]]] = {}
    for record in freed:
        by_entity.setdefault(record.entity, []).append(record.raw)
    released: list[RecordResult] = []
    for key, raws in by_entity.items():
        results, cascade = process_records(
            session,
            tenant=tenant,
            entity=ENTITY_BY_KEY[key],
            raw_records=raws,
            event_id=event_id,
            from_request=False,
        )
        released += results + cascade
    return released


def finish(session: Session, event_id: int, report: SyncReport, *, http_status: int = 200) -> None:
    """Record that an event was processed, with its summary."""
    _set_status(
        session,
        event_id,
        status="processed",
        http_status=http_status,
        summary={**report.summary(), "released": len(report.released)},
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
        original = _replayable(session, event_id)
        if original.source == "webhook":
            raise NotFound(f"inbound event {event_id} is a webhook: replay it as one")
        tenant = tenants.context_of(session.get_one(Tenant, original.tenant_id))
        copy = _copy(session, original, source="replay", status="received")
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


def replay_webhook(db: Database, event_id: int) -> int:
    """A stored webhook event copied as a new accepted event, with the job that completes it
    (fetching its records from Zoho again)."""
    with db.sessions.begin() as session:
        original = _replayable(session, event_id)
        if original.source != "webhook":
            raise NotFound(f"inbound event {event_id} is not a webhook")
        copy = _copy(session, original, source="webhook", status="accepted")
        assert copy.tenant_id is not None
        queue.enqueue_webhook(session, tenant_id=copy.tenant_id, event_id=copy.id)
        return copy.id


def is_webhook(db: Database, event_id: int) -> bool:
    with db.sessions() as session:
        return session.scalar(select(InboundEvent.source).where(InboundEvent.id == event_id)) == (
            "webhook"
        )


def _replayable(session: Session, event_id: int) -> InboundEvent:
    original = session.get(InboundEvent, event_id)
    if original is None:
        raise NotFound(f"no inbound event {event_id}")
    if original.entity is None or original.entity not in ENTITY_BY_KEY:
        raise NotFound(f"inbound event {event_id} names no entity to replay")
    if original.tenant_id is None:
        raise NotFound(f"inbound event {event_id} belongs to no tenant")
    if original.body_truncated:
        raise NotFound(f"inbound event {event_id} was over the size limit; its body is cut")
    return original


def _copy(session: Session, original: InboundEvent, *, source: str, status: str) -> InboundEvent:
    copy = InboundEvent(
        tenant_id=original.tenant_id,
        source=source,
        method=original.method,
        route=original.route,
        entity=original.entity,
        content_type=original.content_type,
        query=original.query,
        headers=original.headers,
        body=original.body,
        body_size=original.body_size,
        body_sha256=original.body_sha256,
        body_truncated=False,
        status=status,
        replay_of=original.id,
    )
    session.add(copy)
    session.flush()
    return copy


def list_events(
    session: Session, *, tenant_id: int | None = None, status: str | None = None, limit: int = 50
) -> list[InboundEvent]:
    query = select(InboundEvent).order_by(InboundEvent.id.desc()).limit(limit)
    if tenant_id is not None:
        query = query.where(InboundEvent.tenant_id == tenant_id)
    if status is not None:
        query = query.where(InboundEvent.status == status)
    return list(session.scalars(query))


@dataclass(frozen=True)
class AcceptedEvent:
    """A webhook event answered 202, as its completion job reads it back."""

    event_id: int
    tenant: TenantContext
    entity: EntitySpec
    event: WebhookEvent
    repeat_key: str | None
    """The body-derived key that made identical webhooks arriving meanwhile duplicates, when it
    is to be released once the event is completed: the same id-only body later (every edit of a
    record sends the same body) is a new change that must be fetched."""


def repeat_key(
    method: str, route: str, query: Mapping[str, str], body: bytes, idempotency_key: str | None
) -> tuple[str, str]:
    """The key repeats of a request share (the caller's Idempotency-Key, else one derived from
    the request as it is stored), and the request's fingerprint: its query counts
    (`?operation=delete` makes another request of the same body), its credentials do not."""
    stored_query = {k: v for k, v in redact_query(query).items() if k != "token"}
    fingerprint = idempotency.request_digest(
        method, f"{_clean(route, 300)}?{urlencode(sorted(stored_query.items()))}", body
    )
    return idempotency_key or f"webhook-body:{fingerprint}", fingerprint


def accept_webhook(db: Database, *, event_id: int, tenant_id: int, entity: str) -> None:
    """A webhook event checked and answered 202: marked accepted, and the job that completes it
    queued, in one transaction."""
    with db.sessions.begin() as session:
        session.execute(
            update(InboundEvent)
            .where(InboundEvent.id == event_id)
            .values(status="accepted", http_status=202, tenant_id=tenant_id, entity=entity)
        )
        queue.enqueue_webhook(session, tenant_id=tenant_id, event_id=event_id)


def accepted_webhook(session: Session, event_id: int) -> AcceptedEvent | None:
    """Rebuild an accepted webhook event from what was stored of it; None when it names no
    entity of its tenant (or is gone)."""
    row = session.get(InboundEvent, event_id)
    if row is None or row.tenant_id is None or row.entity is None:
        return None
    tenant = tenants.context_of(session.get_one(Tenant, row.tenant_id))
    if row.route.endswith("/notifications"):
        event = parse_notification(read_body(row.body, row.content_type))
    else:
        module = row.route.rstrip("/").split("/v1/webhooks/zoho", 1)[1].strip("/") or None
        query = {k: v for k, v in row.query.items() if k != "token"}
        event = read_workflow(row.body, row.content_type, module=module, query=query)
    entity = tenant.mapping.entity_for_module(event.module)
    if entity is None:
        return None
    key = None
    if not event.records and "idempotency-key" not in row.headers:
        key, _ = repeat_key(row.method, row.route, row.query, row.body, None)
    return AcceptedEvent(event_id, tenant, entity, event, key)


def complete_webhook(
    db: Database, accepted: AcceptedEvent, records: list[dict[str, Any]], gone: list[str]
) -> SyncReport:
    """Store an accepted event's records and mark the gone ones deleted, in one transaction,
    and release its repeat key."""
    tenant, entity, event_id = accepted.tenant, accepted.entity, accepted.event_id
    with db.sessions.begin() as session:
        results: list[RecordResult] = []
        released: list[RecordResult] = []
        if records:
            results, released = process_records(
                session, tenant=tenant, entity=entity, raw_records=records, event_id=event_id
            )
        if gone:
            results += delete_records(
                session, tenant=tenant, entity=entity, zoho_ids=gone, event_id=event_id
            )
        report = SyncReport(event_id, entity.key, results, released)
        finish(session, event_id, report, http_status=202)
    if accepted.repeat_key is not None:
        idempotency.release(db, tenant_id=tenant.id, key=accepted.repeat_key)
    return report


def mark_duplicate(db: Database, event_id: int) -> None:
    """A repeat of a request already answered: stored, answered as the first, not processed."""
    with db.sessions.begin() as session:
        _set_status(session, event_id, status="duplicate", http_status=None)
