"""Shared fixtures: real databases (SQLite and PostgreSQL) built by the real migrations.

Every test that takes `db` runs once per backend. PostgreSQL runs when TEST_DATABASE_URL points
at a server (CI starts a throwaway one); with REQUIRE_POSTGRES=1 its absence is an error rather
than a skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from zoho_moodle_sync import credentials, tenants
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.db import migrate
from zoho_moodle_sync.db.base import Base
from zoho_moodle_sync.db.jobs import JobKind
from zoho_moodle_sync.db.session import Database, make_engine
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import TenantContext, context_of, ensure
from zoho_moodle_sync.worker.runner import Worker

PG_URL = os.environ.get("TEST_DATABASE_URL", "")
REQUIRE_PG = os.environ.get("REQUIRE_POSTGRES") == "1"
DEFAULT_TENANT = "default"
TEST_SECRET = "zms_test-secret-of-the-default-tenant"
AUTH = {"Authorization": f"Bearer {TEST_SECRET}"}


def pytest_configure(config: pytest.Config) -> None:
    if REQUIRE_PG and not PG_URL:
        raise pytest.UsageError("REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL test database, reset to an empty schema and migrated once per session."""
    if not PG_URL:
        pytest.skip("PostgreSQL not configured (set TEST_DATABASE_URL)")
    engine = make_engine(PG_URL)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    migrate.upgrade(engine)
    engine.dispose()
    return PG_URL


def _truncate_postgres(db: Database) -> None:
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with db.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        path = tmp_path / "test.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def db(database_url: str, backend: str) -> Iterator[Database]:
    database = Database(database_url)
    if backend == "postgresql":
        _truncate_postgres(database)
    yield database
    database.dispose()


@pytest.fixture
def tenant(db: Database) -> TenantContext:
    with db.sessions.begin() as session:
        return context_of(ensure(session, DEFAULT_TENANT))


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        auto_migrate=False,
        parked_sweep_seconds=0,
        retention_days=0,
        reconcile_minutes=0,
        moodle_check_hours=0,
        webhook_fetch_window_seconds=0,
        delivery_coalesce_seconds=0,
        default_tenant=DEFAULT_TENANT,
        max_body_bytes=2 * 1024 * 1024,
        max_batch_records=1000,
        run_worker=False,
        webhook_secret=TEST_SECRET,
        _env_file=None,
    )


class WorkingClient(TestClient):
    """The app's test client, with a worker beside it as in the embedded install: after every
    webhook request the queue's webhook jobs are run, so a test sees the accepted event
    completed (its records fetched from Zoho through `zoho_transport`, and stored)."""

    zoho_transport: httpx.AsyncBaseTransport | None = None

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> httpx.Response:
        response = super().request(method, url, *args, **kwargs)
        if "/v1/webhooks/" in str(url) or str(url).endswith("/v1/webhooks/zoho"):
            self.complete_webhooks()
        return response

    def complete_webhooks(self) -> int:
        """Run the due webhook jobs until none is left; how many were settled."""
        app: Any = self.app
        settings: Settings = app.state.settings
        db: Database = app.state.db

        async def run() -> int:
            async with httpx.AsyncClient(transport=self.zoho_transport) as zoho_http:
                worker = Worker(db, settings, zoho_http=zoho_http, kinds={JobKind.WEBHOOK})
                return await worker.drain()

        return asyncio.run(run())


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[WorkingClient]:
    """The ASGI app on the test database, lifespan included (creates the default tenant),
    calling with the default tenant's secret."""
    app = create_app(settings, db)
    with WorkingClient(app, raise_server_exceptions=False, headers=AUTH) as test_client:
        yield test_client


def sync(client: TestClient, entity: str, records: list[dict[str, Any]], **kwargs: Any) -> Any:
    """POST records to /v1/sync/{entity} and return the decoded answer (asserting a 200)."""
    response = client.post(f"/v1/sync/{entity}", json={"data": records}, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def tenant_with_secret(db: Database, slug: str) -> dict[str, str]:
    """Create tenant `slug` with a secret of its own; returns the headers that authenticate."""
    with db.sessions.begin() as session:
        tenant = tenants.get_by_slug(session, slug) or tenants.create(session, slug=slug)
        secret = credentials.add_secret(session, tenant, label="test")
    return {"Authorization": f"Bearer {secret}"}
