"""FastAPI dependencies: settings, database, tenant, and the size-limited request body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import tenants
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.errors import NotFound
from zoho_moodle_sync.ingress import STORED_BODY_LIMIT, InboundRequest
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import TenantContext


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]


@dataclass(frozen=True)
class TenantResolution:
    """The tenant a request belongs to, or why none could be decided."""

    tenant: TenantContext | None
    error: NotFound | None


async def resolve_tenant(
    db: DatabaseDep,
    settings: SettingsDep,
    x_tenant_id: Annotated[str | None, Header()] = None,
) -> TenantResolution:
    slug = x_tenant_id or settings.default_tenant

    def load() -> TenantResolution:
        with db.sessions() as session:
            try:
                return TenantResolution(
                    tenants.context_of(tenants.require_active(session, slug)), None
                )
            except NotFound as error:
                return TenantResolution(None, error)

    return await run_in_threadpool(load)


TenantDep = Annotated[TenantResolution, Depends(resolve_tenant)]


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
