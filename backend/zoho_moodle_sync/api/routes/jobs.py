"""Delivery jobs: list and retry them, and the per-tenant delivery status."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import records, tenants
from zoho_moodle_sync.api.deps import AdminDep, DatabaseDep, SettingsDep, TenantDep
from zoho_moodle_sync.api.responses import json_response
from zoho_moodle_sync.db.jobs import JobKind
from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.errors import ConfigurationError, Unprocessable
from zoho_moodle_sync.jobs import operator
from zoho_moodle_sync.jobs.operator import JOB_STATES, JobFilter

router = APIRouter(prefix="/v1", tags=["delivery"])

StateQuery = Annotated[str | None, Query(description=f"One of {', '.join(JOB_STATES)}")]
EntityQuery = Annotated[str | None, Query(description="students, classes, enrollments, ...")]


def _filter(
    tenant_id: int, state: str | None, entity: str | None, zoho_id: str | None
) -> JobFilter:
    if state is not None and state not in JOB_STATES:
        raise Unprocessable(
            f"unknown job state {state!r}; known: {', '.join(JOB_STATES)}",
            details=[{"field": "state", "message": "unknown"}],
        )
    if entity is not None and entity not in ENTITY_BY_KEY:
        raise Unprocessable(
            f"unknown entity {entity!r}", details=[{"field": "entity", "message": "unknown"}]
        )
    return JobFilter(tenant_id, state, entity, zoho_id)


@router.get("/jobs", summary="Delivery jobs of the tenant, newest first")
async def list_jobs(
    resolution: TenantDep,
    db: DatabaseDep,
    state: StateQuery = None,
    entity: EntityQuery = None,
    zoho_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    if resolution.error is not None:
        raise resolution.error
    assert resolution.tenant is not None
    where = _filter(resolution.tenant.id, state, entity, zoho_id)

    def load() -> list[dict[str, Any]]:
        with db.sessions() as session:
            return [
                operator.job_view(job) for job in operator.list_jobs(session, where, limit=limit)
            ]

    return json_response({"jobs": await run_in_threadpool(load)})


@router.post("/jobs/{job_id}/retry", summary="Retry one dead, held or waiting job now")
async def retry_job(job_id: int, resolution: TenantDep, db: DatabaseDep) -> Response:
    if resolution.error is not None:
        raise resolution.error
    assert resolution.tenant is not None
    tenant_id = resolution.tenant.id

    def retry() -> dict[str, Any]:
        with db.sessions.begin() as session:
            return operator.job_view(
                operator.retry_job(session, tenant_id=tenant_id, job_id=job_id)
            )

    return json_response(await run_in_threadpool(retry))


@router.post("/jobs/retry", summary="Retry every dead, held or waiting job the filter matches")
async def retry_jobs(
    resolution: TenantDep,
    db: DatabaseDep,
    state: StateQuery = "dead",
    entity: EntityQuery = None,
    zoho_id: str | None = None,
) -> Response:
    if resolution.error is not None:
        raise resolution.error
    assert resolution.tenant is not None
    where = _filter(resolution.tenant.id, state, entity, zoho_id)

    def retry() -> int:
        with db.sessions.begin() as session:
            return operator.retry_jobs(session, where)

    return json_response({"retried": await run_in_threadpool(retry)})


@router.get("/status", summary="Delivery per tenant and entity: jobs by state, queue, dead jobs")
async def delivery_status(_admin: AdminDep, db: DatabaseDep, settings: SettingsDep) -> Response:
    def load() -> dict[str, Any]:
        with db.sessions() as session:
            everyone = tenants.list_all(session)
            rows = operator.status(session)
            moodle = {}
            for tenant in everyone:
                try:
                    configured = tenants.moodle_connection(tenant, settings) is not None
                    moodle[tenant.slug] = "configured" if configured else "not configured"
                except ConfigurationError as error:
                    moodle[tenant.slug] = f"misconfigured: {error}"
            warnings = records.warning_summary(session)
        slugs = {tenant.id: tenant.slug for tenant in everyone}
        for row in rows:
            tenant_id = row.pop("tenant_id")
            row["tenant"] = slugs.get(tenant_id) if tenant_id is not None else None
        return {
            "moodle": moodle,
            "delivery": [row for row in rows if row["kind"] == JobKind.DELIVER],
            "queue": [row for row in rows if row["kind"] != JobKind.DELIVER],
            "warnings": [
                {"tenant": slugs.get(tenant_id), "entity": entity, **counts}
                for (tenant_id, entity), counts in sorted(warnings.items())
            ],
        }

    return json_response(await run_in_threadpool(load))
