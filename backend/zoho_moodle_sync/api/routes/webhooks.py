"""Zoho's callers: workflow-rule webhooks and Notifications API callbacks. What arrives is
stored, checked and answered 202 within milliseconds; a worker completes the records afterwards
(fetched from Zoho when the webhook only names them)."""

from __future__ import annotations

from typing import Any

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
from zoho_moodle_sync.ingress import webhooks

router = APIRouter(
    prefix="/v1/webhooks/zoho",
    tags=["webhooks"],
    responses=error_responses(400, 401, 403, 409, 413, 415, 422, 503),
)

_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Stored and accepted; a worker completes it. A repeat is answered like "
        "the first (`status: duplicate`, or the first answer with `Idempotent-Replayed`)",
        "content": {
            "application/json": {
                "example": {
                    "event_id": 14,
                    "status": "accepted",
                    "entity": "enrollments",
                    "module": "BTEC_Enrollments",
                    "operation": "upsert",
                    "ids": ["5725767141565000085"],
                }
            }
        },
    }
}
_WORKFLOW_BODY = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "title": "Record id only",
                            "type": "object",
                            "properties": {
                                "module": {"type": "string", "example": "BTEC_Enrollments"},
                                "zoho_id": {"type": "string", "example": "5725767141565000085"},
                                "operation": {"type": "string", "enum": ["upsert", "delete"]},
                            },
                            "required": ["zoho_id"],
                        },
                        {
                            "title": "Merge fields",
                            "type": "object",
                            "description": "zoho_id (or id) and module, with the record's "
                            "fields by their api names",
                            "additionalProperties": True,
                        },
                        {
                            "title": "Full records",
                            "type": "object",
                            "properties": {
                                "module": {"type": "string"},
                                "data": {"type": "array", "items": {"type": "object"}},
                            },
                            "required": ["data"],
                        },
                    ]
                }
            },
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {"module": {"type": "string"}, "zoho_id": {"type": "string"}},
                    "additionalProperties": {"type": "string"},
                }
            },
        },
    }
}
_NOTIFICATION_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "server_time": {"type": "integer"},
                        "query_params": {"type": "object"},
                        "module": {"type": "string", "example": "BTEC_Students"},
                        "resource_uri": {"type": "string"},
                        "ids": {"type": "array", "items": {"type": "string"}},
                        "affected_fields": {"type": "array", "items": {}},
                        "operation": {"type": "string", "enum": ["insert", "update", "delete"]},
                        "channel_id": {"type": "string"},
                        "token": {"type": "string", "description": "The channel's token"},
                    },
                    "required": ["module", "ids", "operation", "channel_id"],
                }
            }
        },
    }
}


@router.post(
    "/notifications",
    status_code=202,
    summary="Zoho Notifications API callback (`{module, ids, operation, channel_id, token}`)",
    responses=_ACCEPTED,
    openapi_extra=_NOTIFICATION_BODY,
)
async def notification(
    inbound: InboundDep, caller: CallerDep, db: DatabaseDep, settings: SettingsDep
) -> Response:
    answer = await run_in_threadpool(lambda: webhooks.notification(db, settings, inbound, caller))
    return answer_response(answer)


@router.post(
    "",
    status_code=202,
    summary="Zoho workflow-rule webhook (module in the body)",
    responses=_ACCEPTED,
    openapi_extra=_WORKFLOW_BODY,
)
@router.post(
    "/{module}",
    status_code=202,
    summary="Zoho workflow-rule webhook for a module",
    responses=_ACCEPTED,
    openapi_extra=_WORKFLOW_BODY,
)
async def workflow(
    inbound: InboundDep,
    caller: CallerDep,
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
