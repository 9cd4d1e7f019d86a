"""Pooled PostgreSQL connections are checked without a round trip, and one the server ended
while it sat in the pool is replaced before anyone uses it."""

from __future__ import annotations

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
