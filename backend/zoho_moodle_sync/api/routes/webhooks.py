"""Zoho's callers: workflow-rule webhooks and Notifications API callbacks. The raw request is
stored, checked and answered 202 within milliseconds; the records are completed after the answer
(fetched from Zoho when the webhook only names them)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import credentials, idempotency, ingress, tenants
from zoho_moodle_sync.api.deps import (
    DatabaseDep,
    InboundDep,
    SettingsDep,
    TenantDep,
    TenantResolution,
)
from zoho_moodle_sync.api.responses import error_body, json_response
from zoho_moodle_sync.db.models import Tenant
from zoho_moodle_sync.errors import (
    BodyTooLarge,
    Conflict,
    Forbidden,
    RequestRejected,
    Unauthenticated,
    Unprocessable,
)
from zoho_moodle_sync.ingress import InboundRequest
from zoho_moodle_sync.tenants import TenantContext
from zoho_moodle_sync.webhooks import (
    WebhookEvent,
    parse_notification,
    read_body,
    read_workflow,
    without_token,
)

router = APIRouter(prefix="/v1/webhooks/zoho", tags=["webhooks"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Repeats with the same key get the first answer; without it, a body already "
        "seen from this tenant within the window counts as a repeat",
    ),
]


@router.post(
    "/notifications",
    status_code=202,
    summary="Zoho Notifications API callback (`{module, ids, operation, channel_id, token}`)",
)
async def notification(
    request: Request,
    inbound: InboundDep,
    resolution: TenantDep,
    db: DatabaseDep,
    settings: SettingsDep,
    background: BackgroundTasks,
) -> Response:
    body = inbound.body
    # The channel token is a credential: it is checked, never stored.
    inbound = dataclasses.replace(inbound, source="webhook", body=without_token(body))
    event_id = await run_in_threadpool(
        ingress.store_inbound, db, inbound, tenant_id=None, entity=None
    )
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
        tenant = await run_in_threadpool(
            _channel_tenant, db, settings, parsed, resolution, request.headers.get("x-tenant-id")
        )
    except RequestRejected as error:
        await run_in_threadpool(ingress.mark_rejected, db, event_id, error)
        error.event_id = event_id
        raise
    return await _accept(request, db, settings, background, tenant, parsed, event_id, inbound, None)


@router.post("", status_code=202, summary="Zoho workflow-rule webhook (module in the body)")
@router.post("/{module}", status_code=202, summary="Zoho workflow-rule webhook for a module")
async def workflow(
    request: Request,
    inbound: InboundDep,
    resolution: TenantDep,
    db: DatabaseDep,
    settings: SettingsDep,
    background: BackgroundTasks,
    idempotency_key: IdempotencyKey = None,
    module: str | None = None,
) -> Response:
    """Accepts JSON or form bodies: `{"module": "BTEC_Students", "zoho_id": "..."}`, merge
    fields (`{"zoho_id": ..., "First_Name": ...}`), or `{"data": [records]}`. Answers 202 with the
    event id; literal `${...}` placeholders are a 422."""
    inbound = dataclasses.replace(inbound, source="webhook")
    tenant = resolution.tenant
    event_id = await run_in_threadpool(
        ingress.store_inbound, db, inbound, tenant_id=tenant.id if tenant else None, entity=None
    )
    try:
        if resolution.error is not None:
            raise resolution.error
        if inbound.body_truncated:
            raise BodyTooLarge(f"Body is over the limit of {settings.max_body_bytes} bytes")
        assert tenant is not None
        query = dict(request.query_params)
        query.pop("token", None)
        parsed = read_workflow(inbound.body, inbound.content_type, module=module, query=query)
    except RequestRejected as error:
        await run_in_threadpool(ingress.mark_rejected, db, event_id, error)
        error.event_id = event_id
        if tenant is None or resolution.error is not None:
            raise
        return await _remember_refusal(db, settings, tenant, inbound, idempotency_key, error)
    return await _accept(
        request, db, settings, background, tenant, parsed, event_id, inbound, idempotency_key
    )


async def _accept(
    request: Request,
    db: Any,
    settings: Any,
    background: BackgroundTasks,
    tenant: TenantContext,
    parsed: WebhookEvent,
    event_id: int,
    inbound: InboundRequest,
    idempotency_key: str | None,
) -> Response:
    spec = tenant.mapping.entity_for_module(parsed.module)
    if spec is None:
        error = Unprocessable(
            f"module {parsed.module!r} is not one this tenant syncs",
            details=[{"field": "module", "message": "unknown"}],
        )
        await run_in_threadpool(ingress.mark_rejected, db, event_id, error)
        error.event_id = event_id
        raise error
    key, fingerprint = _repeat_key(inbound, idempotency_key)
    ttl = settings.idempotency_ttl_seconds if idempotency_key else settings.webhook_repeat_seconds
    try:
        begun = await run_in_threadpool(
            lambda: idempotency.begin(
                db, tenant_id=tenant.id, key=key, fingerprint=fingerprint, ttl_seconds=ttl
            )
        )
    except Conflict as error:
        if idempotency_key is None:
            # The same body arriving twice at once (Zoho retrying): one is processed.
            await run_in_threadpool(ingress.mark_duplicate, db, event_id)
            return json_response({"event_id": event_id, "status": "duplicate"}, 202)
        await run_in_threadpool(ingress.mark_rejected, db, event_id, error)
        error.event_id = event_id
        raise
    except RequestRejected as error:
        await run_in_threadpool(ingress.mark_rejected, db, event_id, error)
        error.event_id = event_id
        raise
    if isinstance(begun, idempotency.Remembered):
        await run_in_threadpool(ingress.mark_duplicate, db, event_id)
        return Response(
            begun.body,
            status_code=begun.status_code,
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    answer = {
        "event_id": event_id,
        "status": "accepted",
        "entity": spec.key,
        "module": parsed.module,
        "operation": parsed.operation,
        "ids": parsed.ids,
    }
    response = json_response(answer, 202)
    await run_in_threadpool(
        lambda: ingress.accept_webhook(db, event_id=event_id, tenant_id=tenant.id, entity=spec.key)
    )
    await run_in_threadpool(
        lambda: idempotency.finish(db, begun, status_code=202, body=bytes(response.body))
    )
    return response


async def _remember_refusal(
    db: Any,
    settings: Any,
    tenant: TenantContext,
    inbound: InboundRequest,
    idempotency_key: str | None,
    error: RequestRejected,
) -> Response:
    """A refused body is refused the same way when it comes again, without new work."""
    body, status = error_body(error), error.status_code
    key, fingerprint = _repeat_key(inbound, idempotency_key)
    try:
        begun = await run_in_threadpool(
            lambda: idempotency.begin(
                db,
                tenant_id=tenant.id,
                key=key,
                fingerprint=fingerprint,
                ttl_seconds=settings.idempotency_ttl_seconds,
            )
        )
    except RequestRejected:
        raise error from None
    if isinstance(begun, int):
        await run_in_threadpool(
            lambda: idempotency.finish(db, begun, status_code=status, body=body)
        )
    raise error


def _repeat_key(inbound: InboundRequest, idempotency_key: str | None) -> tuple[str, str]:
    return ingress.repeat_key(
        inbound.method, inbound.route, inbound.query, inbound.body, idempotency_key
    )


def _channel_tenant(
    db: Any,
    settings: Any,
    parsed: WebhookEvent,
    resolution: TenantResolution,
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
    if resolution.tenant is not None:
        return resolution.tenant
    raise _refusal(resolution)


def _refusal(resolution: TenantResolution) -> RequestRejected:
    return resolution.error or Unauthenticated("missing or invalid credential")
