"""An API process works on `API_THREADS` requests at once; the rest wait their turn. On SQLite,
batches of records take turns from the moment their body is stored."""

from __future__ import annotations

import threading

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.conftest import AUTH
from tests.factories import StudentRecordFactory
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.db.models import InboundEvent
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings


@pytest.mark.parametrize("threads", [1, 3])
def test_requests_work_on_api_threads_at_once(
    settings: Settings, db: Database, threads: int
) -> None:
    app = create_app(settings.model_copy(update={"api_threads": threads}), db)

    with TestClient(app, headers=AUTH) as client:
        assert client.get("/v1/health").status_code == 200
        assert client.portal is not None
        tokens = client.portal.call(
            lambda: anyio.to_thread.current_default_thread_limiter().total_tokens
        )

    assert tokens == threads


def test_the_default_is_a_few_threads() -> None:
    assert Settings(_env_file=None).api_threads == 8


def test_on_sqlite_a_sync_request_stores_its_body_only_in_its_batch_turn(
    client: TestClient, db: Database, backend: str
) -> None:
    """On SQLite a second batch waits for the first before its body is even stored, so that two
    bodies are not held and decoded side by side (docs/performance.md); on PostgreSQL it runs
    beside it."""
    student = StudentRecordFactory()
    answered: list[int] = []

    def send() -> None:
        answered.append(client.post("/v1/sync/students", json={"data": [student]}).status_code)

    request = threading.Thread(target=send)
    with db.batch_turn():
        request.start()
        request.join(timeout=1.0 if backend == "sqlite" else 10)
        waited = request.is_alive()
        stored_meanwhile = _events(db)
    request.join(10)

    if backend == "sqlite":
        assert (waited, stored_meanwhile) == (True, 0)
    else:
        assert (waited, stored_meanwhile) == (False, 1)
    assert answered == [200]
    assert _events(db) == 1


def test_a_thread_holding_the_batch_turn_may_take_it_again(db: Database) -> None:
    taken_twice = threading.Event()

    def take_twice() -> None:
        with db.batch_turn(), db.batch_turn():
            taken_twice.set()

    threading.Thread(target=take_twice, daemon=True).start()
    assert taken_twice.wait(5)


def _events(db: Database) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(InboundEvent)) or 0
