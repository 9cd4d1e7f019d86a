"""FastAPI dependencies: settings, database, the caller's tenant (by its credential), and the
size-limited request body."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.errors import Forbidden
from zoho_moodle_sync.ingress import requests
from zoho_moodle_sync.ingress.events import STORED_BODY_LIMIT, InboundRequest
from zoho_moodle_sync.ingress.requests import Caller, TenantResolution
from zoho_moodle_sync.settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


SettingsDep = Annotated[Settings, Depends(get_settings)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Repeats with the same key get the first answer (same key, other body: 422; "
        "while the first is still running: 409). Without a key, a webhook body already seen from "
        "the tenant within the window counts as a repeat.",
    ),
]
DatabaseDep = Annotated[Database, Depends(get_database)]


def presented_secret(
    authorization: str | None, x_webhook_token: str | None, token: str | None
) -> str:
    """The secret from `Authorization: Bearer`, `X-Webhook-Token` or `?token=`, in that order
    (Zoho workflow webhooks can only send custom headers or parameters)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return (x_webhook_token or token or "").strip()


async def presented_caller(
    authorization: Annotated[str | None, Header()] = None,
    x_webhook_token: Annotated[str | None, Header()] = None,
    x_tenant_id: Annotated[str | None, Header()] = None,
    token: Annotated[
        str | None, Query(description="The tenant's secret, for callers that cannot send headers")
    ] = None,
) -> Caller:
    """Who the request says it is; the sync and webhook routes decide its tenant in their own
    transaction, the other routes through `resolve_tenant`."""
    return Caller(presented_secret(authorization, x_webhook_token, token), x_tenant_id)


CallerDep = Annotated[Caller, Depends(presented_caller)]


async def resolve_tenant(
    db: DatabaseDep, settings: SettingsDep, caller: CallerDep
) -> TenantResolution:
    def load() -> TenantResolution:
        with db.sessions() as session:
            return requests.resolve(session, settings, caller)

    return await run_in_threadpool(load)


async def require_admin(
    resolution: Annotated[TenantResolution, Depends(resolve_tenant)], settings: SettingsDep
) -> TenantResolution:
    """Admin routes: the admin token, or the default tenant's own secret while no admin token
    is configured (a single-school install)."""
    if resolution.admin:
        return resolution
    if resolution.error is not None:
        raise resolution.error
    assert resolution.tenant is not None
    if not settings.admin_token.get_secret_value() and (
        resolution.tenant.slug == settings.default_tenant
    ):
        return resolution
    raise Forbidden("not allowed")


TenantDep = Annotated[TenantResolution, Depends(resolve_tenant)]
AdminDep = Annotated[TenantResolution, Depends(require_admin)]


async def read_inbound(request: Request, settings: SettingsDep) -> InboundRequest:
    """The request as it arrived; a body over the limit is cut at `STORED_BODY_LIMIT` bytes and
    flagged, never read whole into memory."""
    limit = settings.max_body_bytes
    chunks: list[bytes] = []
    size = 0
    truncated = False
    async for chunk in request.stream():
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            truncated = True
            break
    body = b"".join(chunks)
    if truncated:
        body = body[:STORED_BODY_LIMIT]
    return InboundRequest(
        source="sync",
        method=request.method,
        route=request.url.path,
        content_type=request.headers.get("content-type"),
        query=dict(request.query_params),
        headers=dict(request.headers),
        body=body,
        body_truncated=truncated,
        body_size=size,
    )


InboundDep = Annotated[InboundRequest, Depends(read_inbound)]
