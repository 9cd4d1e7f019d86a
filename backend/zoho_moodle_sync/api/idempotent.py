"""Idempotency-Key on the API's POST routes: the first answer is remembered and replayed."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Response
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import idempotency, ingress
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.errors import RequestRejected
from zoho_moodle_sync.ingress import InboundRequest
from zoho_moodle_sync.settings import Settings

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Repeats with the same key get the first answer (same key, other body: 422; "
        "while the first is still running: 409)",
    ),
]


async def begin_idempotent(
    db: Database,
    settings: Settings,
    tenant_id: int,
    key: str | None,
    inbound: InboundRequest,
    event_id: int,
) -> Response | int | None:
    """None without a key; the remembered answer for a repeat; else the claim to finish."""
    if key is None:
        return None
    fingerprint = idempotency.request_digest(inbound.method, inbound.route, inbound.body)
    try:
        begun = await run_in_threadpool(
            lambda: idempotency.begin(
                db,
                tenant_id=tenant_id,
                key=key,
                fingerprint=fingerprint,
                ttl_seconds=settings.idempotency_ttl_seconds,
            )
        )
    except RequestRejected as error:
        await run_in_threadpool(ingress.mark_rejected, db, event_id, error)
        error.event_id = event_id
        raise
    if isinstance(begun, idempotency.Remembered):
        await run_in_threadpool(ingress.mark_duplicate, db, event_id)
        return Response(
            begun.body,
            status_code=begun.status_code,
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    return begun


async def finish_idempotent(db: Database, claim: int | None, body: bytes, status: int) -> None:
    if claim is not None:
        await run_in_threadpool(
            lambda: idempotency.finish(db, claim, status_code=status, body=body)
        )
