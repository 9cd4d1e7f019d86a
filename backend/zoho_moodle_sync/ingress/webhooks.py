"""Zoho's callers: a workflow-rule webhook or a Notifications API callback is checked
(credential, body, module, repeats) and stored in one transaction, committed before the answer:
accepted (202) with the job that completes it, answered as a repeat, or refused; and a stored
webhook event replayed. On PostgreSQL an accepted webhook whose key is free is one statement,
committed on its own (`acceptance`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from zoho_moodle_sync import credentials, tenants
from zoho_moodle_sync.credentials import CallingTenant
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.errors import (
    BodyTooLarge,
    Conflict,
    Forbidden,
    NotFound,
    RequestRejected,
    Unauthenticated,
    Unprocessable,
)
from zoho_moodle_sync.ingress.acceptance import AcceptedAnswer, Repeat, Stored, store_accepted
from zoho_moodle_sync.ingress.events import (
    Answer,
    InboundRequest,
    clean,
    copy_event,
    insert_event,
    mark_accepted,
    mark_failed,
    mark_refused,
    redact_query,
    replayable,
    set_status,
    store_refused,
)
from zoho_moodle_sync.ingress.idempotency import (
    Remembered,
    claim,
    replayed,
    request_digest,
)
from zoho_moodle_sync.ingress.requests import (
    REFUSED_CREDENTIAL,
    Caller,
    TenantResolution,
    resolve,
)
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.parser import (
    WebhookEvent,
    parse_notification,
    read_body,
    read_workflow,
    without_token,
)
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import StoredTenant, TenantContext

log = logging.getLogger(__name__)

Decide = Callable[[Session], Answer | RequestRejected]
"""Checks a request and stores it with its outcome, in the given transaction: the answer, or
the refusal to raise once the transaction is committed."""


def workflow(
    db: Database,
    settings: Settings,
    inbound: InboundRequest,
    caller: Caller,
    *,
    module: str | None,
    idempotency_key: str | None,
) -> Answer:
    """A workflow-rule webhook: JSON or form, an id only, merge fields or `{"data": [...]}`."""
    inbound = dataclasses.replace(inbound, source="webhook")

    def decide(session: Session) -> Answer | RequestRejected:
        resolution = resolve(session, settings, caller)
        tenant = resolution.tenant
        tenant_id = tenant.id if tenant else None
        try:
            if resolution.error is not None:
                raise resolution.error
            if inbound.body_truncated:
                raise BodyTooLarge(f"Body is over the limit of {settings.max_body_bytes} bytes")
            assert tenant is not None
            query = {k: v for k, v in inbound.query.items() if k != "token"}
            parsed = read_workflow(inbound.body, inbound.content_type, module=module, query=query)
        except RequestRejected as error:
            refused = store_refused(session, inbound, error, tenant_id=tenant_id)
            if tenant is not None and resolution.error is None:
                _remember_refusal(session, settings, tenant, inbound, idempotency_key, refused)
            return refused
        assert resolution.stored is not None
        return _accept(
            session,
            settings,
            (tenant, resolution.stored),
            parsed,
            inbound,
            idempotency_key,
            tenant_id,
        )

    return _receive(db, inbound, decide)


def notification(
    db: Database, settings: Settings, inbound: InboundRequest, caller: Caller
) -> Answer:
    """A Notifications API callback: its channel token (checked, never stored) names the
    tenant, else the credential in its URL does."""
    body = inbound.body
    inbound = dataclasses.replace(inbound, source="webhook", body=without_token(body))

    def decide(session: Session) -> Answer | RequestRejected:
        resolution = resolve(session, settings, caller)
        try:
            try:
                if inbound.body_truncated:
                    raise BodyTooLarge(f"Body is over the limit of {settings.max_body_bytes} bytes")
                parsed = parse_notification(read_body(body, inbound.content_type))
            except RequestRejected:
                if resolution.tenant is None:
                    # Nobody known is calling: the answer says nothing about the body.
                    raise _refusal(resolution) from None
                raise
            tenant = _channel_tenant(session, settings, parsed, resolution, caller.x_tenant_id)
        except RequestRejected as error:
            return store_refused(session, inbound, error, tenant_id=None)
        return _accept(session, settings, tenant, parsed, inbound, None, None)

    return _receive(db, inbound, decide)


def _receive(db: Database, inbound: InboundRequest, decide: Decide) -> Answer:
    """Run `decide` in one transaction and commit it before answering. A defect is answered
    500, with the request kept (as `failed`) in a transaction of its own."""
    try:
        with db.sessions.begin() as session:
            outcome = decide(session)
    except SQLAlchemyError:
        raise  # the database is unavailable: nothing is stored, the caller tries again
    except _StoredThenFailed as failed:
        mark_failed(db, failed.event_id, failed.error)
        raise failed.error from None
    except Exception as error:
        with db.sessions.begin() as session:
            event_id = insert_event(session, inbound, tenant_id=None, entity=None)
        mark_failed(db, event_id, error)
        raise
    if isinstance(outcome, RequestRejected):
        raise outcome
    return outcome


def _accept(
    session: Session,
    settings: Settings,
    calling: tuple[TenantContext, StoredTenant],
    parsed: WebhookEvent,
    inbound: InboundRequest,
    idempotency_key: str | None,
    caller_tenant_id: int | None,
) -> Answer | RequestRejected:
    """Store the event accepted with the job that completes it (due at once, or after the
    fetch window for an id-only event), unless it names no entity of the tenant, cannot be
    fetched, or repeats an earlier request. `caller_tenant_id`: the tenant a refusal is stored
    under (the credential's; a notification's is decided by its body, so None)."""
    tenant, stored = calling
    spec = tenant.mapping.entity_for_module(parsed.module)
    if spec is None:
        unknown = Unprocessable(
            f"module {parsed.module!r} is not one this tenant syncs",
            details=[{"field": "module", "message": "unknown"}],
        )
        return store_refused(session, inbound, unknown, tenant_id=caller_tenant_id)
    fetches = parsed.operation != "delete" and not parsed.records
    if fetches and tenants.zoho_credentials(stored, settings) is None:
        # The refusal names the event to replay once credentials are set: stored, then told.
        event_id = insert_event(session, inbound, tenant_id=tenant.id, entity=spec.key)
        cannot = _cannot_fetch(event_id)
        return mark_refused(session, event_id, cannot, tenant_id=tenant.id, entity=spec.key)
    key, fingerprint = repeat_key(
        inbound.method, inbound.route, inbound.query, inbound.body, idempotency_key
    )
    ttl = settings.idempotency_ttl_seconds if idempotency_key else settings.webhook_repeat_seconds
    accepted = AcceptedAnswer(
        {
            "status": "accepted",
            "entity": spec.key,
            "module": parsed.module,
            "operation": parsed.operation,
            "ids": parsed.ids,
        }
    )
    # Id-only events wait a moment, so that those arriving close together share one fetch.
    delay = settings.webhook_fetch_window_seconds if fetches else 0.0
    due_at = utcnow() + timedelta(seconds=delay) if delay else None
    repeat = Repeat(key, fingerprint, ttl)
    arrived = store_accepted(
        session,
        inbound,
        tenant_id=tenant.id,
        entity=spec.key,
        repeat=repeat,
        answer=accepted,
        due_at=due_at,
    )
    answer = accepted.answer(arrived.event_id)
    if arrived.claimed:
        return answer
    try:
        return _decide_repeat(
            session, arrived, repeat, answer, idempotency_key, due_at, caller_tenant_id, tenant.id
        )
    except (RequestRejected, SQLAlchemyError):
        raise
    except Exception as error:
        if not arrived.committed:
            raise  # the event goes with the transaction: stored anew as failed
        raise _StoredThenFailed(arrived.event_id, error) from error


class _StoredThenFailed(Exception):
    """A defect after the event was committed on its own: that event is marked failed."""

    def __init__(self, event_id: int, error: Exception) -> None:
        super().__init__(event_id)
        self.event_id = event_id
        self.error = error


def _decide_repeat(
    session: Session,
    arrived: Stored,
    repeat: Repeat,
    answer: Answer,
    idempotency_key: str | None,
    due_at: datetime | None,
    caller_tenant_id: int | None,
    tenant_id: int,
) -> Answer | RequestRejected:
    """An event whose key was not stored with it: the key claimed now (and the event accepted
    with its job), or the first answer replayed, or the repeat refused."""
    event_id = arrived.event_id
    try:
        claimed = claim(
            session,
            tenant_id=tenant_id,
            key=repeat.key,
            fingerprint=repeat.fingerprint,
            ttl_seconds=repeat.ttl_seconds,
            answer=answer,
        )
    except Conflict as error:
        if idempotency_key is None:
            # The same body while the first is still being answered: one is processed.
            _not_accepted(session, event_id, caller_tenant_id, status="duplicate", http_status=None)
            return Answer.json({"event_id": event_id, "status": "duplicate"}, 202)
        return mark_refused(session, event_id, error, tenant_id=caller_tenant_id, entity=None)
    except RequestRejected as error:
        return mark_refused(session, event_id, error, tenant_id=caller_tenant_id, entity=None)
    if isinstance(claimed, Remembered):
        _not_accepted(session, event_id, caller_tenant_id, status="duplicate", http_status=None)
        return replayed(claimed)
    if not arrived.accepted:
        mark_accepted(session, event_id)
    queue.enqueue_webhook(session, tenant_id=tenant_id, event_id=event_id, due_at=due_at)
    return answer


def _not_accepted(session: Session, event_id: int, tenant_id: int | None, **values: Any) -> None:
    """An event stored to be accepted turned out to be a repeat: as it would have been stored
    had that been known first (no entity, and the caller's tenant). A refusal found this late
    is stored the same way, by `mark_refused`."""
    set_status(session, event_id, tenant_id=tenant_id, entity=None, **values)


def _cannot_fetch(event_id: int | None) -> Unprocessable:
    return Unprocessable(
        "this webhook names records by id only, and the service has no Zoho API credentials "
        "for this tenant to fetch them: set them (`zoho-moodle-sync tenant set-zoho`, or "
        "ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET and ZOHO_REFRESH_TOKEN for the default tenant), "
        f"then send it again or replay event {event_id}; or send the record's fields in the "
        "webhook body",
        details=[{"field": "zoho_id", "message": "id only, and no Zoho API credentials"}],
    )


def _remember_refusal(
    session: Session,
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
        claim(
            session,
            tenant_id=tenant.id,
            key=key,
            fingerprint=fingerprint,
            ttl_seconds=settings.idempotency_ttl_seconds,
            answer=Answer.json(error.document(), error.status_code),
        )
    except RequestRejected:
        return


def _channel_tenant(
    session: Session,
    settings: Settings,
    parsed: WebhookEvent,
    caller: TenantResolution,
    x_tenant_id: str | None,
) -> tuple[TenantContext, StoredTenant]:
    """The tenant of a notification: by the channel token in its body, else by the credential
    in its URL. Refused the same way whatever was wrong."""
    tenant: CallingTenant | None = None
    if parsed.token:
        tenant = credentials.tenant_for(session, parsed.token, settings, kind="channel")
        if tenant is not None and not credentials.owns_channel(
            session, tenant, parsed.token, parsed.channel_id
        ):
            tenant = None
    if tenant is not None:
        if x_tenant_id is not None and x_tenant_id != tenant.slug:
            raise Forbidden("not allowed")
        return tenants.context_of(tenant), tenant
    if caller.tenant is not None and caller.stored is not None:
        return caller.tenant, caller.stored
    raise _refusal(caller)


def _refusal(caller: TenantResolution) -> RequestRejected:
    return caller.error or Unauthenticated(REFUSED_CREDENTIAL)


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
