"""Explain a record: why it is, or is not, in Moodle as Zoho has it, in plain words first and
then the chain of facts behind it (what arrived from Zoho and how, what it waits for, its
delivery jobs and Moodle's refusals, its Moodle ids, and with `live` what Moodle shows now)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx

from zoho_moodle_sync import tenants
from zoho_moodle_sync.db.models import Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.errors import ConfigurationError
from zoho_moodle_sync.explain.answer import entity_spec, explain
from zoho_moodle_sync.explain.live import live_view
from zoho_moodle_sync.explain.models import Explanation, Live, Search
from zoho_moodle_sync.explain.search import search
from zoho_moodle_sync.moodle import MoodleClient
from zoho_moodle_sync.settings import Settings

__all__ = ["Explanation", "Search", "add_live", "entity_spec", "explain", "search"]


async def add_live(
    explanation: Explanation,
    *,
    db: Database,
    tenant_id: int,
    settings: Settings,
    http: httpx.AsyncClient,
) -> Explanation:
    """The explanation with what the tenant's Moodle shows now about the record."""
    ids = explanation._moodle_ids
    if not ids:
        return explanation

    def connection() -> tenants.MoodleConnection | None:
        with db.sessions() as session:
            return tenants.moodle_connection(session.get_one(Tenant, tenant_id), settings)

    try:
        found = await asyncio.to_thread(connection)
    except ConfigurationError as error:
        found = None
        reason = f"this tenant's Moodle is misconfigured: {error}"
    else:
        reason = "this tenant's Moodle is not configured (MOODLE_URL, tenant set-moodle)"
    if found is None:
        explanation.live = Live(checked_at=datetime.now(UTC), error=reason)
        return explanation
    client = MoodleClient(
        base_url=found.base_url,
        token=found.token.get_secret_value(),
        http=http,
        timeout=min(settings.moodle_timeout_seconds, 30.0),
        max_input_vars=settings.moodle_max_input_vars,
    )
    explanation.live = await live_view(client, zoho_id=explanation.zoho_id, targets=ids)
    return explanation
