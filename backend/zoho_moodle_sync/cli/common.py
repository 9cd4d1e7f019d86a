"""What every command shares: the root command, the database option, settings with it applied,
the database a command opens (named on stderr, never created by accident), the tenant option,
and one way to print JSON or fail with one line."""

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
    return open_database(settings_for(database_url))


def open_database(settings: Settings, *, create: bool = False) -> Database:
    """The database a command works on, named on stderr so that the operator sees which one.

    A SQLite file that does not exist is created only when `create` (`db upgrade`, `serve`):
    any other command run from another folder would otherwise make a second, empty database
    there and report on it as if it were the service's."""
    typer.echo(f"database: {settings.database_label()}", err=True)
    path = settings.sqlite_path()
    if path is not None and not create and not path.exists():
        fail(
            f"no database at {path}. Run the command from the folder the service runs in, or "
            "set DATABASE_URL (or --database-url) to its database; `zoho-moodle-sync db "
            "upgrade` creates a new one"
        )
    return Database.from_settings(settings)


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
