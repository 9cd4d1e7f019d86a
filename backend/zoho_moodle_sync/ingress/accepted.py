"""Accepted webhook events, read back from what was stored of them and completed: their records
run through the pipeline (or their ids marked deleted), the event marked processed and the key
that made identical webhooks duplicates meanwhile released."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from zoho_moodle_sync import tenants
from zoho_moodle_sync.db.models import InboundEvent, Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import EntitySpec
from zoho_moodle_sync.ingress.idempotency import release_keys
from zoho_moodle_sync.ingress.pipeline import (
    SyncReport,
    delete_records,
    finish,
    process_records,
)
from zoho_moodle_sync.ingress.webhooks import repeat_key
from zoho_moodle_sync.parser import (
    WebhookEvent,
    may_hold_nul,
    parse_notification,
    read_body,
    read_workflow,
)
from zoho_moodle_sync.service import RecordResult
from zoho_moodle_sync.service.sql import chunks
from zoho_moodle_sync.tenants import TenantContext


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
    nul_free: bool = False
    """The records that came with it hold no NUL character (its body has no `\\u0000`)."""


@dataclass(frozen=True)
class Completion:
    """What an accepted event stores: its records, and the ids it marks deleted."""

    accepted: AcceptedEvent
    records: list[dict[str, Any]]
    gone: list[str]


_STORED_EVENT = (
    InboundEvent.id,
    InboundEvent.tenant_id,
    InboundEvent.entity,
    InboundEvent.method,
    InboundEvent.route,
    InboundEvent.content_type,
    InboundEvent.query,
    InboundEvent.headers,
    InboundEvent.body,
)


def accepted_webhook(session: Session, event_id: int) -> AcceptedEvent | None:
    """Rebuild an accepted webhook event from what was stored of it; None when it names no
    entity of its tenant (or is gone)."""
    return accepted_webhooks(session, [event_id])[event_id]


def accepted_webhooks(
    session: Session, event_ids: Sequence[int]
) -> dict[int, AcceptedEvent | None]:
    """`accepted_webhook` for many events: their rows read together, each tenant once. An
    event that cannot be read back raises, as `accepted_webhook` does."""
    rows: dict[int, Row[Any]] = {}
    for chunk in chunks(list(dict.fromkeys(event_ids))):
        rows.update(
            (row.id, row)
            for row in session.execute(select(*_STORED_EVENT).where(InboundEvent.id.in_(chunk)))
        )
    contexts: dict[int, TenantContext] = {}
    accepted: dict[int, AcceptedEvent | None] = {}
    for event_id in event_ids:
        row = rows.get(event_id)
        if row is None or row.tenant_id is None or row.entity is None:
            accepted[event_id] = None
            continue
        if row.tenant_id not in contexts:
            contexts[row.tenant_id] = tenants.context_of(session.get_one(Tenant, row.tenant_id))
        accepted[event_id] = _read_back(row, contexts[row.tenant_id])
    return accepted


def _read_back(row: Row[Any], tenant: TenantContext) -> AcceptedEvent | None:
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
    return AcceptedEvent(row.id, tenant, entity, event, key, nul_free=not may_hold_nul(row.body))


def complete_webhooks(db: Database, completions: Sequence[Completion]) -> list[SyncReport]:
    """Complete events of one tenant in one transaction, in the order given. Consecutive
    events that store records of one entity (a burst of webhooks) go through the pipeline as
    one batch, each record under its own event: every record gets the outcome it would have
    got event by event (a later record sees the earlier ones; a parked record is released by
    the event whose record it waited for), for a few statements instead of a few per event."""
    with db.sessions.begin() as session:
        reports: list[SyncReport] = []
        for run in _runs(completions):
            if len(run) == 1:
                reports.append(_complete(session, run[0]))
            else:
                reports += _complete_together(session, run)
        finish(session, reports, http_status=202)
        _release(session, [c.accepted for c in completions])
    return reports


def _runs(completions: Sequence[Completion]) -> list[list[Completion]]:
    """Consecutive completions that only store records of the same entity, together; every
    other one (ids to delete) alone."""
    runs: list[list[Completion]] = []
    for completion in completions:
        together = bool(completion.records) and not completion.gone
        last = runs[-1] if runs else None
        if (
            together
            and last is not None
            and last[-1].records
            and not last[-1].gone
            and last[-1].accepted.entity is completion.accepted.entity
        ):
            last.append(completion)
        else:
            runs.append([completion])
    return runs


def _complete(session: Session, completion: Completion) -> SyncReport:
    accepted = completion.accepted
    tenant, entity, event_id = accepted.tenant, accepted.entity, accepted.event_id
    results: list[RecordResult] = []
    released: list[RecordResult] = []
    if completion.records:
        results, released = process_records(
            session,
            tenant=tenant,
            entity=entity,
            raw_records=completion.records,
            event_id=event_id,
            nul_free=accepted.nul_free,
        )
    if completion.gone:
        results += delete_records(
            session, tenant=tenant, entity=entity, zoho_ids=completion.gone, event_id=event_id
        )
    return SyncReport(event_id, entity.key, results, released)


def _complete_together(session: Session, run: Sequence[Completion]) -> list[SyncReport]:
    first = run[0].accepted
    records = [record for c in run for record in c.records]
    events = [c.accepted.event_id for c in run for _ in c.records]
    results, released = process_records(
        session,
        tenant=first.tenant,
        entity=first.entity,
        raw_records=records,
        event_id=None,
        nul_free=all(c.accepted.nul_free for c in run),
        event_ids=events,
    )
    reports = []
    start = 0
    for completion in run:
        end = start + len(completion.records)
        event_id = completion.accepted.event_id
        own = results[start:end]
        for index, result in enumerate(own):
            result.index = index  # its place in its own event's records
        freed = [r for r in released if r.event_id == event_id]
        reports.append(SyncReport(event_id, first.entity.key, own, freed))
        start = end
    return reports


def _release(session: Session, events: Sequence[AcceptedEvent]) -> None:
    by_tenant: dict[int, list[str]] = {}
    for accepted in events:
        if accepted.repeat_key is not None:
            by_tenant.setdefault(accepted.tenant.id, []).append(accepted.repeat_key)
    for tenant_id, keys in by_tenant.items():
        release_keys(session, tenant_id=tenant_id, keys=keys)
