"""What every command shares: the root command, the database option, settings with it applied,
the tenant option, and one way to print JSON or fail with one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from zoho_moodle_sync import tenants
from zoho_moodle_sync.db.models import Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings, get_settings

app = typer.Typer(help="Keeps Moodle LMS in sync with Zoho CRM.", no_args_is_help=True)

DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="Overrides DATABASE_URL for this command.")
]
TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="Tenant slug (default: DEFAULT_TENANT).")
]


def settings_for(database_url: str | None = None) -> Settings:
    settings = get_settings()
    if database_url:
        settings = Settings(**{**settings.model_dump(), "database_url": database_url})
    return settings


def database(database_url: str | None = None) -> Database:
    return Database.from_settings(settings_for(database_url))


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def tenant_row(session: Any, slug: str) -> Tenant:
    tenant = tenants.get_by_slug(session, slug)
    if tenant is None:
        fail(f"no tenant {slug!r}")
    return tenant


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}")


def tenant_id_of(session: Any, slug: str | None) -> int:
    return int(tenant_row(session, slug or get_settings().default_tenant).id)
