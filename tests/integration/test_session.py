"""Pooled PostgreSQL connections are checked without a round trip, and one the server ended
while it sat in the pool is replaced before anyone uses it. On SQLite, batches of records take
turns."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import event, text

from zoho_moodle_sync.db.session import Database


@pytest.fixture
def pg(db: Database, backend: str) -> Database:
    if backend != "postgresql":
        pytest.skip("a pool of server connections is PostgreSQL's")
    return db


def statements(db: Database) -> list[str]:
    seen: list[str] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def note(*args: Any) -> None:
        seen.append(args[2])

    return seen


def test_taking_a_connection_from_the_pool_sends_nothing(pg: Database) -> None:
    with pg.engine.connect() as connection:
        connection.execute(text("SELECT 2"))
    seen = statements(pg)

    for _ in range(3):
        with pg.engine.connect() as connection:
            connection.execute(text("SELECT 2"))

    assert seen == ["SELECT 2"] * 3


def test_a_pooled_connection_the_server_ended_is_replaced_before_use(pg: Database) -> None:
    with pg.engine.connect() as connection:
        ended = connection.scalar(text("SELECT pg_backend_pid()"))
    with Database(pg.url).engine.connect() as other:
        assert other.scalar(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": ended})
        other.commit()

    with pg.sessions() as session:
        now = session.scalar(text("SELECT pg_backend_pid()"))

    assert now != ended


def test_batches_take_turns_on_sqlite_and_run_side_by_side_on_postgresql(
    db: Database, backend: str
) -> None:
    first_inside = threading.Event()
    let_first_go = threading.Event()
    second_inside = threading.Event()

    def first() -> None:
        with db.batch_turn():
            first_inside.set()
            let_first_go.wait(10)

    def second() -> None:
        with db.batch_turn():
            second_inside.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert first_inside.wait(10)
    threads[1].start()
    entered_beside_first = second_inside.wait(0.5)
    let_first_go.set()
    for thread in threads:
        thread.join(10)

    assert entered_beside_first is (backend == "postgresql")
    assert second_inside.is_set()
