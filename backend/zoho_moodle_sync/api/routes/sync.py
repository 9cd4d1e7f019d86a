"""`POST /v1/sync/{entity}`: Zoho API records in, one outcome per record out."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync.api.deps import (
    CallerDep,
    DatabaseDep,
    IdempotencyKey,
    InboundDep,
    SettingsDep,
)
from zoho_moodle_sync.api.responses import answer_response, error_responses
from zoho_moodle_sync.ingress import requests

router = APIRouter(
    prefix="/v1/sync",
    tags=["sync"],
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503),
)


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
    caller: CallerDep,
    db: DatabaseDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Each record comes back `NEW`, `UPDATED` (with `changes`), `UNCHANGED`, `INVALID` (with
    `errors`), `SKIPPED` (parked until its dependencies arrive, with `reason`) or `STALE`.
    Parked records that this request's records released are listed under `released`."""
    answer = await run_in_threadpool(
        lambda: requests.sync(
            db, settings, inbound, caller, entity=entity, idempotency_key=idempotency_key
        )
    )
    return answer_response(answer)


@router.delete(
    "/{entity}/{zoho_id}",
    summary="A record was deleted in Zoho",
    response_description="One result: DELETED, or UNCHANGED when there was nothing to delete",
)
async def delete_record(
    entity: str,
    zoho_id: str,
    inbound: InboundDep,
    caller: CallerDep,
    db: DatabaseDep,
    settings: SettingsDep,
) -> Response:
    """Marks the record deleted (it stays stored, with its history). In Moodle, a deleted
    enrolment or user follows the tenant's removal policy; categories and courses are kept."""
    answer = await run_in_threadpool(
        lambda: requests.delete(db, settings, inbound, caller, entity=entity, zoho_id=zoho_id)
    )
    return answer_response(answer)
