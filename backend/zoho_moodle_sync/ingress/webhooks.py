"""Zoho's callers: a workflow-rule webhook or a Notifications API callback is stored, checked
(credential, body, module, repeats) and accepted (202) together with the job that completes it,
or refused; and, for that job, the accepted event read back and completed."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import update
from sqlalchemy.orm import Session

from zoho_moodle_sync import credentials, tenants
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.models import InboundEvent, Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import EntitySpec
from zoho_moodle_sync.errors import (
    BodyTooLarge,
    Conflict,
    Forbidden,
    NotFound,
    RequestRejected,
    Unauthenticated,
    Unprocessable,
)
from zoho_moodle_sync.ingress.events import (
    Answer,
    InboundRequest,
    clean,
    copy_event,
    mark_duplicate,
    redact_query,
    refuse,
    replayable,
    store_inbound,
)
from zoho_moodle_sync.ingress.idempotency import (
    Remembered,
    begin,
    finish,
    release,
    replayed,
    request_digest,
)
from zoho_moodle_sync.ingress.pipeline import SyncReport, delete_records, process_records
from zoho_moodle_sync.ingress.pipeline import finish as finish_event
from zoho_moodle_sync.ingress.requests import TenantResolution
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.parser import (
    WebhookEvent,
    parse_notification,
    read_body,
    read_workflow,
    without_token,
)
from zoho_moodle_sync.service import RecordResult
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import TenantContext

_UNKNOWN_CALLER = "missing or invalid credential"


def workflow(
    db: Database,
    settings: Settings,
    inbound: InboundRequest,
    caller: TenantResolution,
    *,
    module: str | None,
    idempotency_key: str | None,
) -> Answer:
    """A workflow-rule webhook: JSON or form, an id only, merge fields or `{"data": [...]}`."""
    inbound = dataclasses.replace(inbound, source="webhook")
    tenant = caller.tenant
    event_id = store_inbound(db, inbound, tenant_id=tenant.id if tenant else None, entity=None)
    try:
        if caller.error is not None:
            raise caller.error
        if inbound.body_truncated:
            raise BodyTooLarge(f"Body is over the limit of {settings.max_body_bytes} bytes")
        assert tenant is not None
        query = {k: v for k, v in inbound.query.items() if k != "token"}
        parsed = read_workflow(inbound.body, inbound.content_type, module=module, query=query)
    except RequestRejected as error:
        refused = refuse(db, event_id, error)
        if tenant is not None and caller.error is None:
            _remember_refusal(db, settings, tenant, inbound, idempotency_key, refused)
        raise refused from None
    return _accept(db, settings, tenant, parsed, event_id, inbound, idempotency_key)


def notification(
    db: Database,
    settings: Settings,
    inbound: InboundRequest,
    caller: TenantResolution,
    *,
    x_tenant_id: str | None,
) -> Answer:
    """A Notifications API callback: its channel token (checked, never stored) names the
    tenant, else the credential in its URL does."""
    body = inbound.body
    inbound = dataclasses.replace(inbound, source="webhook", body=without_token(body))
    event_id = store_inbound(db, inbound, tenant_id=None, entity=None)
    try:
        try:
            if inbound.body_truncated:
                raise BodyTooLarge(f"Body is over the limit of {settings.max_body_bytes} bytes")
            parsed = parse_notification(read_body(body, inbound.content_type))
        except RequestRejected:
            if caller.tenant is None:
                # Nobody known is calling: the answer says nothing about the body.
                raise _refusal(caller) from None
            raise
        tenant = _channel_tenant(db, settings, parsed, caller, x_tenant_id)
    except RequestRejected as error:
        raise refuse(db, event_id, error) from None
    return _accept(db, settings, tenant, parsed, event_id, inbound, None)


def _accept(
    db: Database,
    settings: Settings,
    tenant: TenantContext,
    parsed: WebhookEvent,
    event_id: int,
    inbound: InboundRequest,
    idempotency_key: str | None,
) -> Answer:
    spec = tenant.mapping.entity_for_module(parsed.module)
    if spec is None:
        raise refuse(
            db,
            event_id,
            Unprocessable(
                f"module {parsed.module!r} is not one this tenant syncs",
                details=[{"field": "module", "message": "unknown"}],
            ),
        )
    if parsed.operation != "delete" and not parsed.records and not _can_fetch(db, settings, tenant):
        raise refuse(db, event_id, _cannot_fetch(event_id), tenant_id=tenant.id, entity=spec.key)
    key, fingerprint = repeat_key(
        inbound.method, inbound.route, inbound.query, inbound.body, idempotency_key
    )
    ttl = settings.idempotency_ttl_seconds if idempotency_key else settings.webhook_repeat_seconds
    try:
        begun = begin(db, tenant_id=tenant.id, key=key, fingerprint=fingerprint, ttl_seconds=ttl)
    except Conflict as error:
        if idempotency_key is None:
            # The same body arriving twice at once (Zoho retrying): one is processed.
            mark_duplicate(db, event_id)
            return Answer.json({"event_id": event_id, "status": "duplicate"}, 202)
        raise refuse(db, event_id, error) from None
    except RequestRejected as error:
        raise refuse(db, event_id, error) from None
    if isinstance(begun, Remembered):
        mark_duplicate(db, event_id)
        return replayed(begun)
    answer = Answer.json(
        {
            "event_id": event_id,
            "status": "accepted",
            "entity": spec.key,
            "module": parsed.module,
            "operation": parsed.operation,
            "ids": parsed.ids,
        },
        202,
    )
    # Id-only events wait a moment, so that those arriving close together share one fetch.
    fetches = parsed.operation != "delete" and not parsed.records
    delay = settings.webhook_fetch_window_seconds if fetches else 0.0
    accept(db, event_id=event_id, tenant_id=tenant.id, entity=spec, delay=delay)
    finish(db, begun, status_code=202, body=answer.body)
    return answer


def accept(
    db: Database, *, event_id: int, tenant_id: int, entity: EntitySpec, delay: float = 0.0
) -> None:
    """A webhook event checked and answered 202: marked accepted, and the job that completes it
    queued (due in `delay` seconds), in one transaction."""
    with db.sessions.begin() as session:
        session.execute(
            update(InboundEvent)
            .where(InboundEvent.id == event_id)
            .values(status="accepted", http_status=202, tenant_id=tenant_id, entity=entity.key)
        )
        due_at = utcnow() + timedelta(seconds=delay) if delay else None
        queue.enqueue_webhook(session, tenant_id=tenant_id, event_id=event_id, due_at=due_at)


def _can_fetch(db: Database, settings: Settings, tenant: TenantContext) -> bool:
    with db.sessions() as session:
        row = session.get_one(Tenant, tenant.id)
        return tenants.zoho_credentials(row, settings) is not None


def _cannot_fetch(event_id: int) -> Unprocessable:
    return Unprocessable(
        "this webhook names records by id only, and the service has no Zoho API credentials "
        "for this tenant to fetch them: set them (`zoho-moodle-sync tenant set-zoho`, or "
        "ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET and ZOHO_REFRESH_TOKEN for the default tenant), "
        f"then send it again or replay event {event_id}; or send the record's fields in the "
        "webhook body",
        details=[{"field": "zoho_id", "message": "id only, and no Zoho API credentials"}],
    )


def _remember_refusal(
    db: Database,
    settings: Settings,
    tenant: TenantContext,
    inbound: InboundRequest,
    idempotency_key: str | None,
    error: RequestRejected,
) -> None:
    """A refused body is refused the same way when it comes again, without new work."""
    key, fingerprint = repeat_key(
        inbound.method, inbound.route, inbound.query, inbound.body, idempotency_key
    )
    try:
        begun = begin(
            db,
            tenant_id=tenant.id,
            key=key,
            fingerprint=fingerprint,
            ttl_seconds=settings.idempotency_ttl_seconds,
        )
    except RequestRejected:
        return
    if isinstance(begun, int):
        body = Answer.json(error.document(), error.status_code).body
        finish(db, begun, status_code=error.status_code, body=body)


def _channel_tenant(
    db: Database,
    settings: Settings,
    parsed: WebhookEvent,
    caller: TenantResolution,
    x_tenant_id: str | None,
) -> TenantContext:
    """The tenant of a notification: by the channel token in its body, else by the credential
    in its URL. Refused the same way whatever was wrong."""
    with db.sessions() as session:
        tenant: Tenant | None = None
        if parsed.token:
            tenant = credentials.tenant_for(session, parsed.token, settings, kind="channel")
            if tenant is not None and not credentials.owns_channel(
                session, tenant, parsed.token, parsed.channel_id
            ):
                tenant = None
        if tenant is not None:
            if x_tenant_id is not None and x_tenant_id != tenant.slug:
                raise Forbidden("not allowed")
            return tenants.context_of(tenant)
    if caller.tenant is not None:
        return caller.tenant
    raise _refusal(caller)


def _refusal(caller: TenantResolution) -> RequestRejected:
    return caller.error or Unauthenticated(_UNKNOWN_CALLER)


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
    fingerprint = request_digest(
        method, f"{clean(route, 300)}?{urlencode(sorted(stored_query.items()))}", body
    )
    return idempotency_key or f"webhook-body:{fingerprint}", fingerprint


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
        finish_event(session, event_id, report, http_status=202)
    if accepted.repeat_key is not None:
        release(db, tenant_id=tenant.id, key=accepted.repeat_key)
    return report


def replay_webhook(db: Database, event_id: int) -> int:
    """A stored webhook event copied as a new accepted event, with the job that completes it
    (fetching its records from Zoho again)."""
    with db.sessions.begin() as session:
        original = replayable(session, event_id)
        if original.source != "webhook":
            raise NotFound(f"inbound event {event_id} is not a webhook")
        copy = copy_event(session, original, source="webhook", status="accepted")
        assert copy.tenant_id is not None
        queue.enqueue_webhook(session, tenant_id=copy.tenant_id, event_id=copy.id)
        return copy.id
