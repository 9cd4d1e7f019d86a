"""The FastAPI application: wiring of settings, database and routes (and, for the embedded
SQLite install, the worker in the same process)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from zoho_moodle_sync import __version__, credentials, tenants
from zoho_moodle_sync.api.docs_pages import install_docs_pages
from zoho_moodle_sync.api.request_metrics import RequestMetrics
from zoho_moodle_sync.api.responses import error_responses, install_error_handlers
from zoho_moodle_sync.api.routes import explain, health, jobs, metrics, records, sync, webhooks
from zoho_moodle_sync.api.ui import install_console
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


def create_app(settings: Settings | None = None, db: Database | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A few threads, not anyio's 40: each request's database work releases and retakes the
        # GIL at every statement, and 40 threads taking turns cost more CPU than the work (a
        # p99 twice as long under a burst of webhooks, docs/performance.md).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        database = db or Database.from_settings(settings)
        await run_in_threadpool(prepare_database, database, settings)
        app.state.db = database
        await run_in_threadpool(lambda: app.state.schema_check.revision(database, fresh=True))
        # The API answers requests only; background work is the queue's. The embedded install
        # (SQLite, one process owns the file) runs its worker here.
        worker = Worker(database, settings) if settings.worker_in_process else None
        working = asyncio.create_task(worker.run()) if worker is not None else None
        try:
            yield
        finally:
            if worker is not None and working is not None:
                worker.stop()  # finishes the batch in flight, hands back the rest
                await working
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
        openapi_url="/openapi.json" if settings.api_docs == "public" else None,
        responses=error_responses(500),
    )
    app.state.settings = settings
    app.state.schema_check = health.SchemaCheck()
    app.add_middleware(RequestMetrics)
    install_error_handlers(app)
    if settings.api_docs == "public":
        install_docs_pages(app)
    app.include_router(health.router)
    app.include_router(sync.router)
    app.include_router(records.router)
    app.include_router(explain.router)
    app.include_router(jobs.router)
    app.include_router(metrics.router)
    app.include_router(webhooks.router)
    install_console(app)
    return app
