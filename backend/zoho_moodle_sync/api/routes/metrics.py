"""`GET /metrics` in the Prometheus text format, read from the database so that every API
process and every worker host reports the same figures."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import metrics
from zoho_moodle_sync.api.deps import AdminDep, DatabaseDep
from zoho_moodle_sync.api.responses import error_responses
from zoho_moodle_sync.reconcile.status import ReconcileCollector

router = APIRouter(tags=["health"], responses=error_responses(401, 403, 422, 503))


@router.get(
    "/metrics", summary="Prometheus metrics (jobs, Moodle calls, delivery latency, reconciliation)"
)
async def metrics_text(_admin: AdminDep, db: DatabaseDep) -> Response:
    scrape = await run_in_threadpool(metrics.render, db, [ReconcileCollector(db)])
    return Response(scrape, media_type=metrics.CONTENT_TYPE)
