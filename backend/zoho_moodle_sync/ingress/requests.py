"""The `/v1/sync` requests, orchestrated: store what arrived, refuse what cannot be taken (the
caller, the entity, the size, a reused Idempotency-Key), replay a repeat's first answer, run the
records through the pipeline, remember the answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from zoho_moodle_sync import credentials, tenants
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITY_BY_KEY, EntitySpec
from zoho_moodle_sync.errors import (
    BodyTooLarge,
    Forbidden,
    NotFound,
    RequestRejected,
    Unauthenticated,
)
from zoho_moodle_sync.ingress.events import (
    Answer,
    InboundRequest,
    insert_event,
    mark_refused,
    set_status,
    store_refused,
)
from zoho_moodle_sync.ingress.idempotency import (
    Remembered,
    claim,
    finish,
    replayed,
    request_digest,
)
from zoho_moodle_sync.ingress.pipeline import run_delete, run_sync
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import StoredTenant, TenantContext
from zoho_moodle_sync.zoho.ids import is_zoho_id


@dataclass(frozen=True)
class TenantResolution:
    """The tenant a request belongs to, decided by the credential it presents, or why the
    request is refused. What arrived is stored before a refusal is acted on."""

    tenant: TenantContext | None
    error: RequestRejected | None
    admin: bool = False
    stored: StoredTenant | None = None
    """The tenant's stored columns, as read with the credential."""

    def tenant_id(self) -> int:
        """The caller's tenant; the refusal when there is none."""
        if self.error is not None:
            raise self.error
        assert self.tenant is not None
        return self.tenant.id


REFUSED_CREDENTIAL = "missing or invalid credential"
"""What a caller without a valid credential is told, and nothing more."""


@dataclass(frozen=True)
class Caller:
    """Who a request says it is: the secret it presents (however it was sent) and the tenant
    its `X-Tenant-ID` names. Which tenant that is gets decided in the request's transaction."""

    secret: str
    x_tenant_id: str | None = None


def resolve(session: Session, settings: Settings, caller: Caller) -> TenantResolution:
    """The caller's tenant, decided by its credential (one query), or why it is refused. The
    admin token acts for the tenant `X-Tenant-ID` names (the default one without it)."""
    secret = caller.secret
    if not secret:
        return TenantResolution(None, Unauthenticated(REFUSED_CREDENTIAL))
    if credentials.same_secret(secret, settings.admin_token):
        try:
            tenant = tenants.require_active(session, caller.x_tenant_id or settings.default_tenant)
        except NotFound as error:
            return TenantResolution(None, error, admin=True)
        return TenantResolution(tenants.context_of(tenant), None, admin=True, stored=tenant)
    found = credentials.tenant_for(session, secret, settings)
    if found is None:
        return TenantResolution(None, Unauthenticated(REFUSED_CREDENTIAL))
    if caller.x_tenant_id is not None and caller.x_tenant_id != found.slug:
        # Another tenant's data: refused without saying whether that tenant exists.
        return TenantResolution(None, Forbidden("not allowed"))
    return TenantResolution(tenants.context_of(found), None, stored=found)


def sync(
    db: Database,
    settings: Settings,
    inbound: InboundRequest,
    caller: Caller,
    *,
    entity: str,
    idempotency_key: str | None,
) -> Answer:
    """`POST /v1/sync/{entity}`: one outcome per record. What arrived is stored and committed,
    with the caller's tenant decided and its Idempotency-Key claimed in the same transaction,
    before the records are processed."""
    spec = ENTITY_BY_KEY.get(entity)

    def check(tenant: TenantContext | None) -> RequestRejected | None:
        if spec is None:
            return _unknown_entity(entity)
        if inbound.body_truncated:
            return BodyTooLarge(
                f"Body is over the limit of {settings.max_body_bytes} bytes; split the batch"
            )
        return None

    with db.batch_turn():  # on SQLite, from storing the body to the records' commit
        arrival = _arrive(db, settings, inbound, caller, spec, check, idempotency_key)
        if isinstance(arrival, Answer):
            return arrival
        assert spec is not None
        return _process(db, settings, inbound, spec, *arrival)


def _process(
    db: Database,
    settings: Settings,
    inbound: InboundRequest,
    spec: EntitySpec,
    event_id: int,
    tenant: TenantContext,
    claim: int | None,
) -> Answer:
    """Process a stored sync request's records, and keep its answer for its key, if any."""
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


def _unknown_entity(entity: str) -> NotFound:
    return NotFound(f"unknown entity {entity!r}; known: {', '.join(ENTITY_BY_KEY)}")


def _arrive(
    db: Database,
    settings: Settings,
    inbound: InboundRequest,
    caller: Caller,
    spec: EntitySpec | None,
    check: Callable[[TenantContext | None], RequestRejected | None],
    idempotency_key: str | None,
) -> tuple[int, TenantContext, int | None] | Answer:
    """Store what arrived, in one committed transaction with the caller's tenant and its
    Idempotency-Key: the event's id, the tenant and the key's claim when the request is to be
    processed; the first answer again for a repeat; the refusal is raised (after the commit)."""
    with db.sessions.begin() as session:
        resolution = resolve(session, settings, caller)
        tenant = resolution.tenant
        stored_as: dict[str, Any] = {
            "tenant_id": tenant.id if tenant else None,
            "entity": spec.key if spec else None,
        }
        refusal = resolution.error or check(tenant)
        if refusal is not None:
            outcome: tuple[int, TenantContext, int | None] | Answer | RequestRejected = (
                store_refused(session, inbound, refusal, **stored_as)
            )
        else:
            assert tenant is not None
            # Without a key to claim with it, the event is the transaction's only write.
            at_once = idempotency_key is None
            event_id = insert_event(session, inbound, at_once=at_once, **stored_as)
            outcome = event_id, tenant, None
            if idempotency_key is not None:
                fingerprint = request_digest(inbound.method, inbound.route, inbound.body)
                try:
                    claimed = claim(
                        session,
                        tenant_id=tenant.id,
                        key=idempotency_key,
                        fingerprint=fingerprint,
                        ttl_seconds=settings.idempotency_ttl_seconds,
                    )
                except RequestRejected as error:
                    outcome = mark_refused(session, event_id, error)
                else:
                    if isinstance(claimed, Remembered):
                        set_status(session, event_id, status="duplicate", http_status=None)
                        outcome = replayed(claimed)
                    else:
                        outcome = event_id, tenant, claimed
    if isinstance(outcome, RequestRejected):
        raise outcome
    return outcome


def delete(
    db: Database,
    settings: Settings,
    inbound: InboundRequest,
    caller: Caller,
    *,
    entity: str,
    zoho_id: str,
) -> Answer:
    """`DELETE /v1/sync/{entity}/{zoho_id}`: the record was deleted in Zoho."""
    spec = ENTITY_BY_KEY.get(entity)

    def check(_tenant: TenantContext | None) -> RequestRejected | None:
        if spec is None:
            return _unknown_entity(entity)
        if not is_zoho_id(zoho_id):
            return NotFound(f"{zoho_id!r} is not a Zoho record id (digits)")
        return None

    arrival = _arrive(db, settings, inbound, caller, spec, check, None)
    assert not isinstance(arrival, Answer)
    event_id, tenant, _ = arrival
    assert spec is not None
    report = run_delete(db, tenant=tenant, entity=spec, event_id=event_id, zoho_ids=[zoho_id])
    return Answer.json(report.as_dict())
