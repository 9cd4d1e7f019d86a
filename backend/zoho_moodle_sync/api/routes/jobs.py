"""Delivery jobs: list and retry them, and the per-tenant status of the queue."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import records, tenants
from zoho_moodle_sync.api.deps import AdminDep, DatabaseDep, SettingsDep, TenantDep
from zoho_moodle_sync.api.responses import error_responses, json_response
from zoho_moodle_sync.jobs import operator
from zoho_moodle_sync.jobs.operator import JOB_STATES, JobFilter
from zoho_moodle_sync.reconcile import status as reconcile_status

router = APIRouter(
    prefix="/v1", tags=["delivery"], responses=error_responses(401, 403, 404, 409, 422, 503)
)

StateQuery = Annotated[str | None, Query(description=f"One of {', '.join(JOB_STATES)}")]
EntityQuery = Annotated[str | None, Query(description="students, classes, enrollments, ...")]


@router.get("/jobs", summary="Delivery jobs of the tenant, newest first")
async def list_jobs(
    caller: TenantDep,
    db: DatabaseDep,
    state: StateQuery = None,
    entity: EntityQuery = None,
    zoho_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    where = JobFilter.checked(caller.tenant_id(), state, entity, zoho_id)
    return json_response(await run_in_threadpool(operator.jobs_view, db, where, limit=limit))


@router.post("/jobs/{job_id}/retry", summary="Retry one dead, held or waiting job now")
async def retry_job(job_id: int, caller: TenantDep, db: DatabaseDep) -> Response:
    tenant_id = caller.tenant_id()
    view = await run_in_threadpool(
        lambda: operator.retry_one(db, tenant_id=tenant_id, job_id=job_id)
    )
    return json_response(view)


@router.post("/jobs/retry", summary="Retry every dead, held or waiting job the filter matches")
async def retry_jobs(
    caller: TenantDep,
    db: DatabaseDep,
    state: StateQuery = "dead",
    entity: EntityQuery = None,
    zoho_id: str | None = None,
) -> Response:
    where = JobFilter.checked(caller.tenant_id(), state, entity, zoho_id)
    return json_response(await run_in_threadpool(operator.retry_all, db, where))


@router.get(
    "/status",
    summary="Per tenant and entity: jobs by state, queue, dead jobs, warnings, last pulls, drift",
)
async def delivery_status(_admin: AdminDep, db: DatabaseDep, settings: SettingsDep) -> Response:
    def report() -> dict[str, Any]:
        found = operator.status_report(
            db,
            moodle_of=lambda tenant: tenants.moodle_connection(tenant, settings),
            warnings_of=records.warning_summary,
        )
        with db.sessions() as session:
            found["reconcile"] = reconcile_status.status_view(session)
        return found

    return json_response(await run_in_threadpool(report))
