"""FastAPI dependencies: settings, database, the caller's tenant (by its credential), and the
size-limited request body."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import credentials, tenants
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.errors import Forbidden, NotFound, Unauthenticated
from zoho_moodle_sync.ingress.events import STORED_BODY_LIMIT, InboundRequest
from zoho_moodle_sync.ingress.requests import TenantResolution
from zoho_moodle_sync.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
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


_REFUSED = "missing or invalid credential"


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


async def resolve_tenant(
    db: DatabaseDep,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
    x_webhook_token: Annotated[str | None, Header()] = None,
    x_tenant_id: Annotated[str | None, Header()] = None,
    token: Annotated[
        str | None, Query(description="The tenant's secret, for callers that cannot send headers")
    ] = None,
) -> TenantResolution:
    secret = presented_secret(authorization, x_webhook_token, token)

    def load() -> TenantResolution:
        if not secret:
            return TenantResolution(None, Unauthenticated(_REFUSED))
        with db.sessions() as session:
            if credentials.same_secret(secret, settings.admin_token):
                try:
                    tenant = tenants.require_active(session, x_tenant_id or settings.default_tenant)
                except NotFound as error:
                    return TenantResolution(None, error, admin=True)
                return TenantResolution(tenants.context_of(tenant), None, admin=True)
            found = credentials.tenant_for(session, secret, settings)
            if found is None:
                return TenantResolution(None, Unauthenticated(_REFUSED))
            if x_tenant_id is not None and x_tenant_id != found.slug:
                # Another tenant's data: refused without saying whether that tenant exists.
                return TenantResolution(None, Forbidden("not allowed"))
            return TenantResolution(tenants.context_of(found), None)

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
