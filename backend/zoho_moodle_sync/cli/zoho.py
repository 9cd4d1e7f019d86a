"""The Zoho side: Notifications API channels."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from typing import Annotated, Any

import httpx
import typer

from zoho_moodle_sync import credentials, tenants
from zoho_moodle_sync.cli.common import (
    DatabaseUrl,
    app,
    fail,
    open_database,
    settings_for,
    tenant_row,
)

zoho_app = typer.Typer(help="The Zoho side: Notifications API channels.", no_args_is_help=True)
app.add_typer(zoho_app, name="zoho")


@zoho_app.command("watch")
def zoho_watch(
    slug: str,
    notify_url: Annotated[
        str, typer.Option(help="Public URL of /v1/webhooks/zoho/notifications on this service.")
    ],
    days: Annotated[float, typer.Option(help="Channel lifetime (Zoho allows at most 7).")] = 7,
    database_url: DatabaseUrl = None,
) -> None:
    """Enable, or renew, the tenant's Notifications API channel for all its modules. Channels
    expire: run this daily (cron) to keep it alive. Each run issues a new channel token."""

    from zoho_moodle_sync.entities import ENTITIES
    from zoho_moodle_sync.zoho import ZohoClient
    from zoho_moodle_sync.zoho_tokens import token_store_for

    settings = settings_for(database_url)
    db = open_database(settings)
    with db.sessions() as session:
        tenant = tenant_row(session, slug)
        zoho = tenants.zoho_credentials(tenant, settings)
        mapping = tenants.mapping_of(tenant.config)
        channel = (tenant.config.get("zoho_channel") or {}).get("channel_id")
    if zoho is None:
        fail(f"tenant {slug!r} has no Zoho API credentials (ZOHO_CLIENT_ID, ...)")
    events = [f"{mapping.module_for(spec)}.all" for spec in ENTITIES]
    token = secrets.token_urlsafe(30)[:40]
    channel_id = channel or str(10**12 + secrets.randbelow(9 * 10**12))
    expiry = timedelta(days=min(days, 7) - 0.01)

    async def call() -> list[Any]:
        async with httpx.AsyncClient(timeout=30) as http:
            client = ZohoClient(http, zoho, token_store=token_store_for(db, settings.secret_key))
            if channel:
                return await client.renew_watch(
                    channel_id=channel_id,
                    events=events,
                    expiry=expiry,
                    token=token,
                    notify_url=notify_url,
                )
            return await client.enable_watch(
                channel_id=channel_id,
                events=events,
                notify_url=notify_url,
                token=token,
                expiry=expiry,
            )

    subscriptions = asyncio.run(call())
    with db.sessions.begin() as session:
        tenant = tenant_row(session, slug)
        # Notifications already on their way with the previous token are still accepted.
        credentials.expire_current(session, tenant, overlap=timedelta(minutes=15), kind="channel")
        credentials.add_secret(
            session,
            tenant,
            label=credentials.channel_label(channel_id),
            kind="channel",
            secret=token,
        )
        tenant.config = {**tenant.config, "zoho_channel": {"channel_id": channel_id}}
    for subscription in subscriptions:
        typer.echo(
            f"{subscription.resource_name}: channel {subscription.channel_id} until "
            f"{subscription.channel_expiry:%Y-%m-%d %H:%M} UTC"
        )
