"""Fixtures of the security tests: a client without credentials, a small college held by a fake
Zoho and the app wired to it, a real HTTP server for concurrent callers, and readers of what was
stored.

Every test that takes `db` runs on SQLite and PostgreSQL. Nothing sleeps: expiry is reached by
moving times in the database.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select, update
from starlette.types import ASGIApp

from tests.conftest import AUTH, WorkingClient, sync
from tests.factories import (
    CLASSES,
    ENROLLMENTS,
    PROGRAMS,
    STUDENTS,
    TEACHERS,
    UNITS,
    Record,
    build_college,
)
from tests.fakes.zoho import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
    FakeZoho,
)
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.models import InboundEvent
from zoho_moodle_sync.db.security import IdempotentRequest
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings

ADMIN_TOKEN = "zms_admin-token-for-the-operator-0001"
OTHER_TENANT = "beta"

#: The modules a class or an enrolment needs stored first, in dependency order.
PREREQUISITES = (
    (PROGRAMS, "programs"),
    (TEACHERS, "teachers"),
    (UNITS, "units"),
    (STUDENTS, "students"),
    (CLASSES, "classes"),
)


@pytest.fixture
def bare(client: TestClient) -> TestClient:
    """The app's client without the default tenant's credential: each call brings its own."""
    del client.headers["Authorization"]
    return client


@pytest.fixture
def college() -> dict[str, list[Record]]:
    """One program, unit, teacher, student, class and enrolment, lookups resolving."""
    return build_college(
        students=1,
        teachers=1,
        programs=1,
        units=1,
        classes=1,
        enrollments_per_student=1,
        payments_per_student=1,
    )


@pytest.fixture
def fake_zoho(college: dict[str, list[Record]]) -> FakeZoho:
    fake = FakeZoho()
    fake.seed(college)
    return fake


@pytest.fixture
def zoho_settings(settings: Settings) -> Settings:
    """The default tenant with Zoho API credentials (those the fake Zoho knows), and a key to
    seal other tenants' credentials with."""
    return settings.model_copy(
        update={
            "secret_key": SecretStr("a-secret-key-to-seal-tenant-credentials"),
            "zoho_client_id": DEFAULT_CLIENT_ID,
            "zoho_client_secret": SecretStr(DEFAULT_CLIENT_SECRET),
            "zoho_refresh_token": SecretStr(DEFAULT_REFRESH_TOKEN),
        }
    )


@pytest.fixture
def zoho_client(
    zoho_settings: Settings, db: Database, fake_zoho: FakeZoho
) -> Iterator[WorkingClient]:
    """The app with Zoho credentials, its Zoho calls answered by the fake Zoho."""
    app = create_app(zoho_settings, db)
    with WorkingClient(app, raise_server_exceptions=False, headers=AUTH) as test_client:
        test_client.zoho_transport = fake_zoho.transport()
        yield test_client


def store_prerequisites(client: TestClient, college: dict[str, list[Record]]) -> None:
    """Store everything the college's classes and enrolments depend on, through /v1/sync."""
    for module, entity in PREREQUISITES:
        answer = sync(client, entity, college[module])
        assert answer["summary"]["NEW"] == len(college[module]), answer


def enrollment_of(college: dict[str, list[Record]]) -> Record:
    record: Record = college[ENROLLMENTS][0]
    return record


# ---------------------------------------------------------------------------------------------
# What was stored
# ---------------------------------------------------------------------------------------------


def events(db: Database) -> list[InboundEvent]:
    with db.sessions() as session:
        return list(session.scalars(select(InboundEvent).order_by(InboundEvent.id)))


def expire_every_key(db: Database) -> None:
    """Every repeat and Idempotency-Key past its expiry, without waiting for it."""
    with db.sessions.begin() as session:
        session.execute(
            update(IdempotentRequest).values(expires_at=utcnow() - timedelta(seconds=1))
        )


def event(db: Database, event_id: int) -> InboundEvent:
    with db.sessions() as session:
        return session.get_one(InboundEvent, event_id)


def record_view(client: TestClient, entity: str, zoho_id: str, **kwargs: Any) -> Any:
    """GET /v1/records/{entity}/{zoho_id}, asserting a 200."""
    response = client.get(f"/v1/records/{entity}/{zoho_id}", **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


# ---------------------------------------------------------------------------------------------
# A real HTTP server, for callers that must really run at the same time
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """Run the ASGI `app` under uvicorn in a thread (lifespan included); yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the in-thread server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
