"""`GET /metrics` in the Prometheus text format, read from the database so that every API
process and every worker host reports the same figures."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import tenants
from zoho_moodle_sync.api.deps import AdminDep, DatabaseDep
from zoho_moodle_sync.metrics import prometheus_text

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics (jobs, Moodle calls, delivery latency)")
async def metrics(_admin: AdminDep, db: DatabaseDep) -> Response:
    def render() -> str:
        with db.sessions() as session:
            slugs = {tenant.id: tenant.slug for tenant in tenants.list_all(session)}
            return prometheus_text(session, slugs)

    return Response(
        await run_in_threadpool(render), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
