"""The `zoho-moodle-sync` command: serve, worker, database, tenants, inbound events, parked
records, records with warnings, delivery jobs, Zoho channels, imports from Zoho, Moodle drift
checks. One module per group of commands."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from zoho_moodle_sync.cli import explain, inspect, moodle, pull, service, tenants, zoho  # noqa: F401
from zoho_moodle_sync.cli.common import app
from zoho_moodle_sync.errors import SyncServiceError

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except SyncServiceError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        typer.secho(f"error: invalid setting: {problems}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except OperationalError as exc:
        typer.secho(
            f"error: the database is not reachable or not set up ({exc.orig or exc}); "
            "check DATABASE_URL and run `zoho-moodle-sync db upgrade`",
            fg=typer.colors.RED,
            err=True,
        )
        sys.exit(1)
