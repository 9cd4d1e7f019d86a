"""`POST /v1/sync/{entity}`: Zoho API records in, one outcome per record out."""

from __future__ import annotations

import re

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import ingress
from zoho_moodle_sync.api.deps import DatabaseDep, InboundDep, SettingsDep, TenantDep
from zoho_moodle_sync.api.idempotent import (
    IdempotencyKey,
    begin_idempotent,
    finish_idempotent,
)
from zoho_moodle_sync.api.responses import error_body, json_response
from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.errors import BodyTooLarge, NotFound, RequestRejected

router = APIRouter(prefix="/v1/sync", tags=["sync"])
ZOHO_ID = re.compile(r"^\d{1,32}$")


@router.post(
    "/{entity}",
    summary="Store Zoho records of one entity",
    response_description="One result per record, in request order, and a summary",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["data"],
                        "properties": {
                            "data": {
                                "type": "array",
                                "items": {"type": "object"},
                                "description": "Records in the Zoho CRM API shape",
                            }
                        },
                    }
                }
            },
        }
    },
)
async def sync_entity(
    entity: str,
    inbound: InboundDep,
    resolution: TenantDep,
    db: DatabaseDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Each record comes back `NEW`, `UPDATED` (with `changes`), `UNCHANGED`, `INVALID` (with
    `errors`), `SKIPPED` (parked until its dependencies arrive, with `reason`) or `STALE`.
    Parked records that this request's records released are listed under `released`."""
    spec = ENTITY_BY_KEY.get(entity)
    tenant = resolution.tenant
    event_id = await run_in_threadpool(
        ingress.store_inbound,
        db,
        inbound,
        tenant_id=tenant.id if tenant else None,
        entity=spec.key if spec else None,
    )
    refusal: RequestRejected | None = None
    if resolution.error is not None:
        refusal = resolution.error
    elif spec is None:
        refusal = NotFound(f"unknown entity {entity!r}; known: {', '.join(ENTITY_BY_KEY)}")
    elif inbound.body_truncated:
        refusal = BodyTooLarge(
            f"Body is over the limit of {settings.max_body_bytes} bytes; split the batch"
        )
    if refusal is not None:
        await run_in_threadpool(ingress.mark_rejected, db, event_id, refusal)
        refusal.event_id = event_id
        raise refusal
    assert tenant is not None
    assert spec is not None
    remembered = await begin_idempotent(db, settings, tenant.id, idempotency_key, inbound, event_id)
    if isinstance(remembered, Response):
        return remembered
    try:
        report = await run_in_threadpool(
            lambda: ingress.run_sync(
                db,
                tenant=tenant,
                entity=spec,
                event_id=event_id,
                body=inbound.body,
                content_type=inbound.content_type,
                max_records=settings.max_batch_records,
            )
        )
    except RequestRejected as error:
        error.event_id = event_id
        await finish_idempotent(db, remembered, error_body(error), error.status_code)
        raise
    except Exception:
        await finish_idempotent(db, remembered, b"", 500)
        raise
    response = json_response(report.as_dict())
    await finish_idempotent(db, remembered, bytes(response.body), 200)
    return response


@router.delete(
    "/{entity}/{zoho_id}",
    summary="A record was deleted in Zoho",
    response_description="One result: DELETED, or UNCHANGED when there was nothing to delete",
)
async def delete_record(
    entity: str,
    zoho_id: str,
    inbound: InboundDep,
    resolution: TenantDep,
    db: DatabaseDep,
) -> Response:
    """Marks the record deleted (it stays stored, with its history). In Moodle, a deleted
    enrolment or user follows the tenant's removal policy; categories and courses are kept."""
    spec = ENTITY_BY_KEY.get(entity)
    tenant = resolution.tenant
    event_id = await run_in_threadpool(
        ingress.store_inbound,
        db,
        inbound,
        tenant_id=tenant.id if tenant else None,
        entity=spec.key if spec else None,
    )
    refusal: RequestRejected | None = resolution.error
    if refusal is None and spec is None:
        refusal = NotFound(f"unknown entity {entity!r}; known: {', '.join(ENTITY_BY_KEY)}")
    if refusal is None and not ZOHO_ID.match(zoho_id):
        refusal = NotFound(f"{zoho_id!r} is not a Zoho record id (digits)")
    if refusal is not None:
        await run_in_threadpool(ingress.mark_rejected, db, event_id, refusal)
        refusal.event_id = event_id
        raise refusal
    assert tenant is not None
    assert spec is not None
    report = await run_in_threadpool(
        lambda: ingress.run_delete(
            db, tenant=tenant, entity=spec, event_id=event_id, zoho_ids=[zoho_id]
        )
    )
    return json_response(report.as_dict())
