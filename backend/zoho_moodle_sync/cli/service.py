"""Running the service: the API, workers, the database schema, and the status of the queue."""

from __future__ import annotations

import gc
import logging
from typing import Annotated

import typer

from zoho_moodle_sync import memory, tenants
from zoho_moodle_sync.cli.common import (
    DatabaseUrl,
    app,
    database,
    open_database,
    settings_for,
)
from zoho_moodle_sync.db import migrate
from zoho_moodle_sync.jobs import operator
from zoho_moodle_sync.settings import get_settings

db_app = typer.Typer(help="Create, upgrade or inspect the database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
) -> None:
    """Run the HTTP API (migrating the database first unless AUTO_MIGRATE=false)."""
    import uvicorn

    from zoho_moodle_sync.api.access_log import QueryCredentialFilter
    from zoho_moodle_sync.api.app import create_app

    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # A batch of Zoho records parses into tens of thousands of dicts that live until the
    # request is answered. At the default threshold (700 new objects) the cycle collector
    # walks them again and again while they are still in use: measured at about a fifth of
    # the server's CPU. Request data is freed by reference counting; cycles are rare here.
    gc.set_threshold(50_000)
    memory.settle_allocator()
    logging.getLogger("uvicorn.access").addFilter(QueryCredentialFilter())
    typer.echo(f"database: {settings.database_label()}", err=True)
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        access_log=access_log,
    )


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: DatabaseUrl = None,
) -> None:
    """Create the database or bring it to the latest schema; creates the default tenant."""
    settings = settings_for(database_url)
    db = open_database(settings, create=True)
    migrate.upgrade(db.engine, revision)
    with db.sessions.begin() as session:
        tenants.ensure(session, settings.default_tenant)
    typer.echo(f"database at revision {migrate.current_revision(db.engine)}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. base.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Step the schema back to an earlier revision (drops what later revisions added)."""
    db = database(database_url)
    migrate.downgrade(db.engine, revision)
    typer.echo(f"database at revision {migrate.current_revision(db.engine)}")


@db_app.command("current")
def db_current(database_url: DatabaseUrl = None) -> None:
    """Print the schema revision of the database and the newest one this version knows."""
    db = database(database_url)
    typer.echo(f"current: {migrate.current_revision(db.engine)}  head: {migrate.head_revision()}")


@app.command()
def worker(database_url: DatabaseUrl = None) -> None:
    """Deliver stored changes to Moodle until stopped (SIGTERM or Ctrl-C finish the batch in
    flight and hand back the rest). Run as many as you like against PostgreSQL."""
    import asyncio
    import signal

    from zoho_moodle_sync.worker.runner import Worker

    settings = settings_for(database_url)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    memory.settle_allocator()
    db = open_database(settings)

    async def run() -> None:
        delivery = Worker(db, settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, delivery.stop)
        await delivery.run()

    asyncio.run(run())


@app.command()
def status(database_url: DatabaseUrl = None) -> None:
    """Delivery per tenant and entity: jobs by state, queue depth, oldest waiting job."""
    with database(database_url).sessions() as session:
        slugs = {tenant.id: tenant.slug for tenant in tenants.list_all(session)}
        rows = operator.status(session)
    if not rows:
        typer.echo("no delivery jobs yet")
    for row in rows:
        jobs = ", ".join(f"{k}={v}" for k, v in row["jobs"].items() if v)
        age = row["oldest_pending_seconds"]
        typer.echo(
            f"{slugs.get(row['tenant_id'], 'all')}\t{row['entity'] or row['kind']}\t"
            f"queue={row['queue_depth']}\t"
            f"oldest={'-' if age is None else f'{age:.0f}s'}\t{jobs}"
            + (f"\tPAUSED: {row['paused']}" if row["paused"] else "")
        )
