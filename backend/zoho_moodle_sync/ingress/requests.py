"""The `/v1/sync` requests, orchestrated: store what arrived, refuse what cannot be taken (the
caller, the entity, the size, a reused Idempotency-Key), replay a repeat's first answer, run the
records through the pipeline, remember the answer."""

from __future__ import annotations

from dataclasses import dataclass

from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.errors import BodyTooLarge, NotFound, RequestRejected
from zoho_moodle_sync.ingress.events import (
    Answer,
    InboundRequest,
    mark_duplicate,
    refuse,
    store_inbound,
)
from zoho_moodle_sync.ingress.idempotency import Remembered, begin, finish, replayed, request_digest
from zoho_moodle_sync.ingress.pipeline import run_delete, run_sync
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import TenantContext
from zoho_moodle_sync.zoho.ids import is_zoho_id


@dataclass(frozen=True)
class TenantResolution:
    """The tenant a request belongs to, decided by the credential it presents, or why the
    request is refused. What arrived is stored before a refusal is acted on."""

    tenant: TenantContext | None
    error: RequestRejected | None
    admin: bool = False

    def tenant_id(self) -> int:
        """The caller's tenant; the refusal when there is none."""
        if self.error is not None:
            raise self.error
        assert self.tenant is not None
        return self.tenant.id


def sync(
    db: Database,
    settings: Settings,
    inbound: InboundRequest,
    caller: TenantResolution,
    *,
    entity: str,
    idempotency_key: str | None,
) -> Answer:
    """`POST /v1/sync/{entity}`: one outcome per record."""
    spec = ENTITY_BY_KEY.get(entity)
    tenant = caller.tenant
    event_id = store_inbound(
        db, inbound, tenant_id=tenant.id if tenant else None, entity=spec.key if spec else None
    )
    refusal = caller.error
    if refusal is None and spec is None:
        refusal = NotFound(f"unknown entity {entity!r}; known: {', '.join(ENTITY_BY_KEY)}")
    if refusal is None and inbound.body_truncated:
        refusal = BodyTooLarge(
            f"Body is over the limit of {settings.max_body_bytes} bytes; split the batch"
        )
    if refusal is not None:
        raise refuse(db, event_id, refusal)
    assert tenant is not None
    assert spec is not None
    claim: int | None = None
    if idempotency_key is not None:
        fingerprint = request_digest(inbound.method, inbound.route, inbound.body)
        try:
            begun = begin(
                db,
                tenant_id=tenant.id,
                key=idempotency_key,
                fingerprint=fingerprint,
                ttl_seconds=settings.idempotency_ttl_seconds,
            )
        except RequestRejected as error:
            raise refuse(db, event_id, error) from None
        if isinstance(begun, Remembered):
            mark_duplicate(db, event_id)
            return replayed(begun)
        claim = begun
    try:
        report = run_sync(
            db,
            tenant=tenant,
            entity=spec,
            event_id=event_id,
            body=inbound.body,
            content_type=inbound.content_type,
            max_records=settings.max_batch_records,
        )
    except RequestRejected as error:
        error.event_id = event_id
        if claim is not None:
            finish(
                db, claim, status_code=error.status_code, body=Answer.json(error.document()).body
            )
        raise
    except Exception:
        if claim is not None:
            finish(db, claim, status_code=500, body=b"")
        raise
    answer = Answer.json(report.as_dict())
    if claim is not None:
        finish(db, claim, status_code=200, body=answer.body)
    return answer


def delete(
    db: Database, inbound: InboundRequest, caller: TenantResolution, *, entity: str, zoho_id: str
) -> Answer:
    """`DELETE /v1/sync/{entity}/{zoho_id}`: the record was deleted in Zoho."""
    spec = ENTITY_BY_KEY.get(entity)
    tenant = caller.tenant
    event_id = store_inbound(
        db, inbound, tenant_id=tenant.id if tenant else None, entity=spec.key if spec else None
    )
    refusal = caller.error
    if refusal is None and spec is None:
        refusal = NotFound(f"unknown entity {entity!r}; known: {', '.join(ENTITY_BY_KEY)}")
    if refusal is None and not is_zoho_id(zoho_id):
        refusal = NotFound(f"{zoho_id!r} is not a Zoho record id (digits)")
    if refusal is not None:
        raise refuse(db, event_id, refusal)
    assert tenant is not None
    assert spec is not None
    report = run_delete(db, tenant=tenant, entity=spec, event_id=event_id, zoho_ids=[zoho_id])
    return Answer.json(report.as_dict())
