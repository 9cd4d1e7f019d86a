"""Zoho's callers: workflow-rule webhooks and Notifications API callbacks. What arrives is
stored, checked and answered 202 within milliseconds; a worker completes the records afterwards
(fetched from Zoho when the webhook only names them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync.api.deps import (
    DatabaseDep,
    IdempotencyKey,
    InboundDep,
    SettingsDep,
    TenantDep,
)
from zoho_moodle_sync.api.responses import answer_response
from zoho_moodle_sync.ingress import webhooks

router = APIRouter(prefix="/v1/webhooks/zoho", tags=["webhooks"])

XTenantId = Annotated[str | None, Header(alias="X-Tenant-ID", include_in_schema=False)]


@router.post(
    "/notifications",
    status_code=202,
    summary="Zoho Notifications API callback (`{module, ids, operation, channel_id, token}`)",
)
async def notification(
    inbound: InboundDep,
    caller: TenantDep,
    db: DatabaseDep,
    settings: SettingsDep,
    x_tenant_id: XTenantId = None,
) -> Response:
    answer = await run_in_threadpool(
        lambda: webhooks.notification(db, settings, inbound, caller, x_tenant_id=x_tenant_id)
    )
    return answer_response(answer)


@router.post("", status_code=202, summary="Zoho workflow-rule webhook (module in the body)")
@router.post("/{module}", status_code=202, summary="Zoho workflow-rule webhook for a module")
async def workflow(
    inbound: InboundDep,
    caller: TenantDep,
    db: DatabaseDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
    module: str | None = None,
) -> Response:
    """Accepts JSON or form bodies: `{"module": "BTEC_Students", "zoho_id": "..."}`, merge
    fields (`{"zoho_id": ..., "First_Name": ...}`), or `{"data": [records]}`. Answers 202 with the
    event id; literal `${...}` placeholders are a 422."""
    answer = await run_in_threadpool(
        lambda: webhooks.workflow(
            db, settings, inbound, caller, module=module, idempotency_key=idempotency_key
        )
    )
    return answer_response(answer)
