"""`GET /v1/records/{entity}/{zoho_id}`: a record's stored state, parking and outcome history;
`GET /v1/warnings`: the records stored with warnings, for someone to correct in Zoho."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import records
from zoho_moodle_sync.api.deps import DatabaseDep, TenantDep
from zoho_moodle_sync.api.responses import error_responses, json_response

router = APIRouter(
    prefix="/v1", tags=["records"], responses=error_responses(401, 403, 404, 422, 503)
)


@router.get("/records/{entity}/{zoho_id}", summary="What the service knows about one Zoho record")
async def get_record(
    entity: str,
    zoho_id: str,
    caller: TenantDep,
    db: DatabaseDep,
    history: int = Query(default=50, ge=0, le=1000, description="How many outcomes to list"),
) -> Response:
    tenant_id = caller.tenant_id()
    view = await run_in_threadpool(
        lambda: records.record_view(
            db, tenant_id=tenant_id, entity=entity, zoho_id=zoho_id, history=history
        )
    )
    return json_response(view)


@router.get("/warnings", summary="Records stored with warnings: what to correct in Zoho")
async def list_warnings(
    caller: TenantDep,
    db: DatabaseDep,
    entity: str | None = Query(default=None, description="students, classes, enrollments, ..."),
    limit: int = Query(default=1000, ge=1, le=10_000),
) -> Response:
    """One row per warning: the record (entity, Zoho id, name), the Zoho field, a plain-words
    message and since when the record has carried it. A record leaves the list when a later
    version from Zoho no longer has the problem."""
    tenant_id = caller.tenant_id()
    view = await run_in_threadpool(
        lambda: records.warnings_view(db, tenant_id=tenant_id, entity=entity, limit=limit)
    )
    return json_response(view)
