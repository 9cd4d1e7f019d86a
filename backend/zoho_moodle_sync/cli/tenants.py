"""Tenants (schools): create, show, secrets, Moodle and Zoho credentials, mapping and policy."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from zoho_moodle_sync import credentials, tenants
from zoho_moodle_sync.cli.common import (
    DatabaseUrl,
    app,
    database,
    fail,
    open_database,
    print_json,
    read_json,
    settings_for,
    tenant_row,
)
from zoho_moodle_sync.settings import Settings

tenant_app = typer.Typer(help="Manage tenants (schools).", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")


@tenant_app.command("create")
def tenant_create(
    slug: str,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a tenant."""
    with database(database_url).sessions.begin() as session:
        tenant = tenants.create(session, slug=slug, name=name)
        typer.echo(f"created tenant {tenant.slug} (id {tenant.id})")


@tenant_app.command("list")
def tenant_list(database_url: DatabaseUrl = None) -> None:
    """List tenants."""
    with database(database_url).sessions() as session:
        for tenant in tenants.list_all(session):
            state = "disabled" if tenant.disabled_at else "active"
            typer.echo(f"{tenant.slug}\t{state}\t{tenant.name}")


@tenant_app.command("show")
def tenant_show(slug: str, database_url: DatabaseUrl = None) -> None:
    """Show a tenant: its field mapping, Zoho API client, Moodle, delivery policy and the
    secrets its callers present (never a secret itself)."""
    settings = settings_for(database_url)
    with open_database(settings).sessions() as session:
        tenant = tenant_row(session, slug)
        views = credentials.list_for(session, tenant)
        from_settings = tenant.slug == settings.default_tenant
        env_secret = from_settings and bool(settings.webhook_secret.get_secret_value())
        print_json(
            {
                "slug": tenant.slug,
                "name": tenant.name,
                "disabled_at": tenant.disabled_at,
                "mapping": tenants.mapping_of(tenant.config).model_dump(exclude_defaults=True),
                "zoho": _zoho_view(tenant.config.get("zoho") or {}, settings, from_settings),
                "moodle": {
                    "url": (tenant.config.get("moodle") or {}).get("base_url"),
                    "token": "set (encrypted)"
                    if (tenant.config.get("moodle") or {}).get("token")
                    else "not set",
                },
                "delivery": tenants.delivery_policy(tenant).model_dump(mode="json"),
                "caller_secrets": {
                    "active": sum(1 for view in views if view.active) + (1 if env_secret else 0),
                    "WEBHOOK_SECRET": "set" if env_secret else "not used",
                },
                "secrets": [
                    {
                        "id": view.id,
                        "label": view.label,
                        "starts": view.hint + "…",
                        "created_at": view.created_at,
                        "expires_at": view.expires_at,
                        "state": "active" if view.active else "expired or revoked",
                    }
                    for view in views
                ],
            }
        )


def _zoho_view(stored: dict[str, Any], settings: Settings, default: bool) -> dict[str, Any]:
    """The tenant's Zoho API client as it is used: stored for the tenant, or (the default
    tenant) from the ZOHO_* settings; which secrets are there, never their values."""
    if stored.get("client_id"):
        return {
            "source": "stored for this tenant (tenant set-zoho)",
            "client_id": stored["client_id"],
            "data_centre": stored.get("data_centre", "us"),
            "client_secret": "set (encrypted)" if stored.get("client_secret") else "not set",
            "refresh_token": "set (encrypted)" if stored.get("refresh_token") else "not set",
        }
    if default and settings.zoho_client_id:
        return {
            "source": "ZOHO_* settings",
            "client_id": settings.zoho_client_id,
            "data_centre": settings.zoho_data_centre,
            "client_secret": "set" if settings.zoho_client_secret.get_secret_value() else "not set",
            "refresh_token": "set" if settings.zoho_refresh_token.get_secret_value() else "not set",
        }
    return {"source": "not set: id-only webhooks and pulls are refused"}


@tenant_app.command("add-secret")
def tenant_add_secret(
    slug: str,
    label: Annotated[str, typer.Option(help="What the secret is for.")] = "webhook",
    database_url: DatabaseUrl = None,
) -> None:
    """Make a new secret for the tenant and print it once (only its digest is stored)."""
    with database(database_url).sessions.begin() as session:
        tenant = tenant_row(session, slug)
        secret = credentials.add_secret(session, tenant, label=label)
    typer.echo(secret)


@tenant_app.command("rotate-secret")
def tenant_rotate_secret(
    slug: str,
    overlap_hours: Annotated[
        float, typer.Option(help="How long the current secrets keep working.")
    ] = 24.0,
    database_url: DatabaseUrl = None,
) -> None:
    """Make a new secret and let the current ones expire after the overlap window."""

    with database(database_url).sessions.begin() as session:
        tenant = tenant_row(session, slug)
        secret = credentials.rotate(
            session, tenant, overlap=timedelta(hours=overlap_hours), label="rotated"
        )
    typer.echo(secret)
    typer.secho(f"the previous secrets of {slug} stop working in {overlap_hours:g} h", err=True)


@tenant_app.command("revoke-secret")
def tenant_revoke_secret(slug: str, credential_id: int, database_url: DatabaseUrl = None) -> None:
    """Stop one secret working at once (ids from `tenant show`)."""
    with database(database_url).sessions.begin() as session:
        if not credentials.revoke(session, tenant_row(session, slug), credential_id):
            fail(f"tenant {slug!r} has no active secret {credential_id}")
    typer.echo(f"secret {credential_id} of {slug} revoked")


@tenant_app.command("disable")
def tenant_disable(slug: str, database_url: DatabaseUrl = None) -> None:
    """Refuse every request of the tenant and stop its delivery (its data is kept)."""
    from zoho_moodle_sync.db.base import utcnow

    with database(database_url).sessions.begin() as session:
        tenant = tenant_row(session, slug)
        tenant.disabled_at = tenant.disabled_at or utcnow()
    typer.echo(f"tenant {slug} disabled")


@tenant_app.command("enable")
def tenant_enable(slug: str, database_url: DatabaseUrl = None) -> None:
    """Undo `disable`."""
    with database(database_url).sessions.begin() as session:
        tenant_row(session, slug).disabled_at = None
    typer.echo(f"tenant {slug} enabled")


@tenant_app.command("set-mapping")
def tenant_set_mapping(
    slug: str,
    mapping_file: Annotated[Path, typer.Argument(help="JSON file with the field mapping.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Replace a tenant's field mapping (module, field and status-value overrides)."""
    document = read_json(mapping_file)
    with database(database_url).sessions.begin() as session:
        tenant = tenant_row(session, slug)
        tenants.set_mapping(session, tenant, document)
    typer.echo(f"mapping of {slug} updated")


@tenant_app.command("set-moodle")
def tenant_set_moodle(
    slug: str,
    url: Annotated[str, typer.Option(help="Base URL of the tenant's Moodle.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Set a tenant's Moodle; the token is read from the prompt or MOODLE_TOKEN_INPUT, never
    from the command line, and stored encrypted with SECRET_KEY."""
    import os

    token = os.environ.get("MOODLE_TOKEN_INPUT") or typer.prompt("Moodle token", hide_input=True)
    settings = settings_for(database_url)
    with open_database(settings).sessions.begin() as session:
        tenant = tenant_row(session, slug)
        tenants.set_moodle(session, tenant, base_url=url, token=token, settings=settings)
    typer.echo(f"Moodle of {slug} set to {url}")


@tenant_app.command("set-zoho")
def tenant_set_zoho(
    slug: str,
    client_id: Annotated[str, typer.Option(help="OAuth client id (api-console.zoho.com).")],
    data_centre: Annotated[str, typer.Option(help="us, eu, in, au, cn, jp, ca, sa or uk.")] = "us",
    database_url: DatabaseUrl = None,
) -> None:
    """Set a tenant's Zoho API client. The client secret and refresh token are read from hidden
    prompts (or ZOHO_CLIENT_SECRET_INPUT / ZOHO_REFRESH_TOKEN_INPUT), never from the command
    line, and stored encrypted with SECRET_KEY."""
    import os

    from zoho_moodle_sync.sealing import seal
    from zoho_moodle_sync.zoho import DataCentre

    if data_centre not in {dc.value for dc in DataCentre}:
        fail(f"unknown data centre {data_centre!r}")
    secret = os.environ.get("ZOHO_CLIENT_SECRET_INPUT") or typer.prompt(
        "Zoho client secret", hide_input=True
    )
    refresh = os.environ.get("ZOHO_REFRESH_TOKEN_INPUT") or typer.prompt(
        "Zoho refresh token", hide_input=True
    )
    settings = settings_for(database_url)
    with open_database(settings).sessions.begin() as session:
        tenant = tenant_row(session, slug)
        tenant.config = {
            **tenant.config,
            "zoho": {
                "client_id": client_id,
                "client_secret": seal(secret, settings.secret_key),
                "refresh_token": seal(refresh, settings.secret_key),
                "data_centre": data_centre,
            },
        }
    typer.echo(f"Zoho API client of {slug} set ({data_centre} data centre)")


@tenant_app.command("set-policy")
def tenant_set_policy(
    slug: str,
    policy_file: Annotated[Path, typer.Argument(help="JSON file with the delivery policy.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Replace a tenant's delivery policy (removal policy, guard, roles, time zone, ...)."""
    document = read_json(policy_file)
    with database(database_url).sessions.begin() as session:
        tenant = tenant_row(session, slug)
        change = tenants.set_delivery_policy(session, tenant, document)
    typer.echo(f"delivery policy of {slug} updated")
    if change.requeued_enrolments:
        typer.echo(
            f"{change.requeued_enrolments} enrolment(s) queued again: their Moodle dates change"
        )
