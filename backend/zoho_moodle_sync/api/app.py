"""The FastAPI application: wiring of settings, database, routes and background upkeep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import __version__, credentials, ingress, tenants, webhook_processing
from zoho_moodle_sync.api.docs_pages import install_docs_pages
from zoho_moodle_sync.api.responses import install_error_handlers
from zoho_moodle_sync.api.routes import health, jobs, metrics, records, sync, webhooks
from zoho_moodle_sync.db import migrate
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings, get_settings
from zoho_moodle_sync.worker.runner import Worker

log = logging.getLogger(__name__)


def prepare_database(db: Database, settings: Settings) -> None:
    """Migrate (when enabled), make sure the default tenant exists, and give an embedded
    install a secret to call it with."""
    if settings.auto_migrate:
        migrate.upgrade(db.engine)
    with db.sessions.begin() as session:
        tenant = tenants.ensure(session, settings.default_tenant)
        path = settings.sqlite_path()
        if path is not None and not credentials.has_any(session, tenant, settings):
            secret_file = path.parent / "webhook-secret"
            secret = credentials.add_secret(session, tenant, label="created at first start")
            secret_file.touch(mode=0o600)
            secret_file.write_text(secret + "\n", encoding="utf-8")
            log.warning(
                "no credential was configured for tenant %r: a new secret was written to %s "
                "(send it as `Authorization: Bearer <secret>`)",
                tenant.slug,
                secret_file,
            )


async def _sweep_forever(app: FastAPI, db: Database, settings: Settings) -> None:
    """Safety nets behind the immediate paths: parked records whose dependency arrived in a
    concurrent request, and accepted webhooks a stopped process did not complete."""
    while True:
        await asyncio.sleep(settings.parked_sweep_seconds)
        try:
            released = await run_in_threadpool(ingress.sweep_all_tenants, db)
            if released:
                log.info("parked-record sweep released %d record(s)", released)
            completed = await webhook_processing.complete_stale(
                db,
                settings,
                older_than=timedelta(seconds=max(60.0, settings.parked_sweep_seconds)),
                http=app.state.zoho_http,
            )
            if completed:
                log.info("completed %d webhook event(s) left behind", completed)
        except Exception:
            log.exception("background sweep failed; will try again")


def create_app(settings: Settings | None = None, db: Database | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = db or Database.from_settings(settings)
        await run_in_threadpool(prepare_database, database, settings)
        app.state.db = database
        own_http = getattr(app.state, "zoho_http", None) is None
        if own_http:
            app.state.zoho_http = httpx.AsyncClient(timeout=30)
        sweeper = None
        if settings.parked_sweep_seconds > 0:
            sweeper = asyncio.create_task(_sweep_forever(app, database, settings))
        worker = Worker(database, settings) if settings.worker_in_process else None
        delivering = asyncio.create_task(worker.run()) if worker is not None else None
        try:
            yield
        finally:
            if worker is not None and delivering is not None:
                worker.stop()  # finishes the batch in flight, hands back the rest
                await delivering
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            if own_http:
                await app.state.zoho_http.aclose()
                app.state.zoho_http = None
            if db is None:
                database.dispose()

    app = FastAPI(
        title="Zoho → Moodle sync",
        version=__version__,
        description="Keeps Moodle LMS in sync with Zoho CRM. Records come in from Zoho, are "
        "validated, fingerprinted and stored per tenant, and drive Moodle.",
        lifespan=lifespan,
        docs_url=None,  # served by install_docs_pages, without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_docs_pages(app)
    app.include_router(health.router)
    app.include_router(sync.router)
    app.include_router(records.router)
    app.include_router(jobs.router)
    app.include_router(metrics.router)
    app.include_router(webhooks.router)
    return app
