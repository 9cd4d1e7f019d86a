"""Completing accepted webhook events after the 202: fetch what Zoho only named by id, then run
the records through the same pipeline as `/v1/sync` (or mark them deleted).

An event is stored before it is answered; if the process stops before it is completed, the
sweep (`complete_stale`) completes it later, so an accepted event is never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from zoho_moodle_sync import idempotency, ingress, tenants
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.models import InboundEvent, Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import EntitySpec
from zoho_moodle_sync.errors import ConfigurationError, NotFound, ZohoRejected, ZohoUnavailable
from zoho_moodle_sync.sealing import unseal
from zoho_moodle_sync.service import RecordResult
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import TenantContext
from zoho_moodle_sync.webhooks import (
    WebhookEvent,
    parse_notification,
    read_body,
    read_workflow,
)
from zoho_moodle_sync.zoho import TokenStore, ZohoClient, ZohoCredentials
from zoho_moodle_sync.zoho_tokens import token_store_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AcceptedEvent:
    event_id: int
    tenant: TenantContext
    entity: EntitySpec
    event: WebhookEvent
    repeat_key: str | None = None
    """The body-derived key that makes identical webhooks arriving meanwhile duplicates; it is
    released once the event is completed, because the same body later (every edit of a record
    sends the same id-only body) is a new change that must be fetched."""


def zoho_credentials(tenant: Tenant, settings: Settings) -> ZohoCredentials | None:
    """The tenant's Zoho API client, from its stored configuration or, for the default tenant,
    from the ZOHO_* settings; None while not configured."""
    stored = tenant.config.get("zoho") or {}
    if stored.get("client_id"):
        return ZohoCredentials(
            client_id=stored["client_id"],
            client_secret=unseal(stored["client_secret"], settings.secret_key),
            refresh_token=unseal(stored["refresh_token"], settings.secret_key),
            data_centre=stored.get("data_centre", "us"),
        )
    if tenant.slug == settings.default_tenant and settings.zoho_client_id:
        return ZohoCredentials(
            client_id=settings.zoho_client_id,
            client_secret=settings.zoho_client_secret,
            refresh_token=settings.zoho_refresh_token,
            data_centre=settings.zoho_data_centre,
            accounts_url=settings.zoho_accounts_url or None,
        )
    return None


async def complete(
    db: Database, settings: Settings, accepted: AcceptedEvent, *, http: httpx.AsyncClient | None
) -> None:
    """Process one accepted event to its end; failures are recorded on the event, which can
    then be replayed."""
    try:
        await _complete(db, settings, accepted, http=http)
    finally:
        if accepted.repeat_key is not None:
            key = accepted.repeat_key
            await asyncio.to_thread(idempotency.release, db, tenant_id=accepted.tenant.id, key=key)


async def _complete(
    db: Database, settings: Settings, accepted: AcceptedEvent, *, http: httpx.AsyncClient | None
) -> None:
    event = accepted.event
    try:
        if event.operation == "delete":
            await asyncio.to_thread(_apply, db, accepted, [], event.ids)
            return
        credentials = await asyncio.to_thread(_credentials_of, db, settings, accepted.tenant.id)
        if credentials is None:
            if not event.records:
                raise ConfigurationError(
                    "this webhook names records by id only; the service needs the tenant's "
                    "Zoho API credentials (ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET, "
                    "ZOHO_REFRESH_TOKEN) to fetch them. Set them, then replay this event"
                )
            records, gone = event.records, []
        else:
            # The webhook is a hint: what Zoho's API says now is what gets stored.
            store = token_store_for(db, settings.secret_key)
            records = await _fetch(credentials, store, event, http)
            fetched = {str(r.get("id")) for r in records}
            gone = [i for i in event.ids if i not in fetched]  # no longer in Zoho: deleted
        await asyncio.to_thread(_apply, db, accepted, records, gone)
    except (ZohoUnavailable, ZohoRejected, ConfigurationError) as error:
        log.warning("webhook event %s not completed: %s", accepted.event_id, error)
        await asyncio.to_thread(ingress.mark_failed, db, accepted.event_id, error)
    except Exception as error:  # recorded on the event for replay; the loop goes on
        log.exception("webhook event %s failed", accepted.event_id)
        await asyncio.to_thread(ingress.mark_failed, db, accepted.event_id, error)


async def _fetch(
    credentials: ZohoCredentials,
    store: TokenStore,
    event: WebhookEvent,
    http: httpx.AsyncClient | None,
) -> list[dict[str, Any]]:
    async def fetch(client: httpx.AsyncClient) -> list[dict[str, Any]]:
        zoho = ZohoClient(client, credentials, token_store=store)
        return list(await zoho.get_records(event.module, event.ids))

    if http is not None:
        return await fetch(http)
    async with httpx.AsyncClient(timeout=30) as client:
        return await fetch(client)


def _credentials_of(db: Database, settings: Settings, tenant_id: int) -> ZohoCredentials | None:
    with db.sessions() as session:
        tenant = session.get(Tenant, tenant_id)
        return zoho_credentials(tenant, settings) if tenant is not None else None


def _apply(
    db: Database, accepted: AcceptedEvent, records: list[dict[str, Any]], gone: list[str]
) -> None:
    """Store the records and mark the gone ones deleted, in one transaction."""
    tenant, entity, event_id = accepted.tenant, accepted.entity, accepted.event_id
    with db.sessions.begin() as session:
        results: list[RecordResult] = []
        released: list[RecordResult] = []
        if records:
            results, released = ingress.process_records(
                session, tenant=tenant, entity=entity, raw_records=records, event_id=event_id
            )
        if gone:
            results += ingress.delete_records(
                session, tenant=tenant, entity=entity, zoho_ids=gone, event_id=event_id
            )
        report = ingress.SyncReport(event_id, entity.key, results, released)
        ingress.finish(session, event_id, report, http_status=202)


async def replay(db: Database, settings: Settings, event_id: int) -> int:
    """Run a stored webhook event again as a new event (after fixing what made it fail)."""
    new_id = await asyncio.to_thread(ingress.copy_webhook_for_replay, db, event_id)
    accepted = await asyncio.to_thread(accepted_again, db, new_id)
    if accepted is None:
        raise NotFound(f"inbound event {event_id} names no module this tenant syncs")
    await complete(db, settings, accepted, http=None)
    return new_id


async def complete_stale(
    db: Database, settings: Settings, *, older_than: timedelta, http: httpx.AsyncClient | None
) -> int:
    """Complete accepted events that a stopped process left behind; returns how many."""
    ids = await asyncio.to_thread(stale_event_ids, db, older_than=older_than)
    for event_id in ids:
        accepted = await asyncio.to_thread(accepted_again, db, event_id)
        if accepted is not None:
            await complete(db, settings, accepted, http=http)
    return len(ids)


def accepted_again(db: Database, event_id: int) -> AcceptedEvent | None:
    """Rebuild an accepted event from what was stored of it."""
    with db.sessions() as session:
        row = session.get(InboundEvent, event_id)
        if row is None or row.tenant_id is None or row.entity is None:
            return None
        tenant = tenants.context_of(session.get_one(Tenant, row.tenant_id))
        route, body, content_type, query = row.route, row.body, row.content_type, row.query
    if route.endswith("/notifications"):
        event = parse_notification(read_body(body, content_type))
    else:
        module = route.rstrip("/").split("/v1/webhooks/zoho", 1)[1].strip("/") or None
        event = read_workflow(
            body,
            content_type,
            module=module,
            query={k: v for k, v in query.items() if k != "token"},
        )
    entity = tenant.mapping.entity_for_module(event.module)
    return AcceptedEvent(event_id, tenant, entity, event) if entity is not None else None


def stale_event_ids(db: Database, *, older_than: timedelta) -> list[int]:
    """Accepted webhook events still not completed (the process stopped in between)."""
    with db.sessions() as session:
        return list(
            session.scalars(
                select(InboundEvent.id).where(
                    InboundEvent.source == "webhook",
                    InboundEvent.status == "accepted",
                    InboundEvent.received_at < utcnow() - older_than,
                )
            )
        )
