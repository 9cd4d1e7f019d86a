"""`GET /v1/records/{entity}/{zoho_id}`: a record's stored state, parking and outcome history;
`GET /v1/warnings`: the records stored with warnings, for someone to correct in Zoho."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import records
from zoho_moodle_sync.api.deps import DatabaseDep, TenantDep
from zoho_moodle_sync.api.responses import json_response
from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.errors import NotFound, Unprocessable
from zoho_moodle_sync.jobs import operator

router = APIRouter(prefix="/v1", tags=["records"])


@router.get("/records/{entity}/{zoho_id}", summary="What the service knows about one Zoho record")
async def get_record(
    entity: str,
    zoho_id: str,
    resolution: TenantDep,
    db: DatabaseDep,
    history: int = Query(default=50, ge=0, le=1000, description="How many outcomes to list"),
) -> Response:
    if resolution.error is not None:
        raise resolution.error
    assert resolution.tenant is not None
    spec = ENTITY_BY_KEY.get(entity)
    if spec is None:
        raise NotFound(f"unknown entity {entity!r}; known: {', '.join(ENTITY_BY_KEY)}")
    tenant_id = resolution.tenant.id

    def load() -> dict[str, Any] | None:
        with db.sessions() as session:
            view = records.describe(
                session, tenant_id=tenant_id, entity=spec, zoho_id=zoho_id, history=history
            )
            if view is not None:
                view["delivery"] = operator.delivery_of(
                    session, tenant_id=tenant_id, entity=spec.key, zoho_id=zoho_id
                )
            return view

    view = await run_in_threadpool(load)
    if view is None:
        raise NotFound(f"no {spec.label} {zoho_id} has reached this service")
    return json_response(view)


@router.get("/warnings", summary="Records stored with warnings: what to correct in Zoho")
async def list_warnings(
    resolution: TenantDep,
    db: DatabaseDep,
    entity: str | None = Query(default=None, description="students, classes, enrollments, ..."),
    limit: int = Query(default=1000, ge=1, le=10_000),
) -> Response:
    """One row per warning: the record (entity, Zoho id, name), the Zoho field, a plain-words
    message and since when the record has carried it. A record leaves the list when a later
    version from Zoho no longer has the problem."""
    if resolution.error is not None:
        raise resolution.error
    assert resolution.tenant is not None
    spec = None
    if entity is not None:
        spec = ENTITY_BY_KEY.get(entity)
        if spec is None:
            raise Unprocessable(
                f"unknown entity {entity!r}; known: {', '.join(ENTITY_BY_KEY)}",
                details=[{"field": "entity", "message": "unknown"}],
            )
    tenant_id = resolution.tenant.id

    def load() -> list[dict[str, Any]]:
        with db.sessions() as session:
            return records.warnings_list(session, tenant_id=tenant_id, entity=spec, limit=limit)

    return json_response({"warnings": await run_in_threadpool(load)})
