"""Rows written in bulk: new rows only where their key is free, with the keys of those inserted
reported; rows appended (history); every value stored as SQLAlchemy would store it, and a driver
error raised as SQLAlchemy's own."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.bulk import append, insert_new
from zoho_moodle_sync.db.models import ENTITY_TABLES, RecordOutcome
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.tenants import TenantContext

PROGRAMS = ENTITY_TABLES["programs"]
HISTORY = RecordOutcome.__table__
KEY = ("tenant_id", "zoho_id")


def program(tenant_id: int, zoho_id: str, **overrides: Any) -> dict[str, Any]:
    now = utcnow()
    row: dict[str, Any] = {
        "tenant_id": tenant_id,
        "zoho_id": zoho_id,
        "name": f"Programme {zoho_id}",
        "program_code": None,
        "status": "Active",
        "major": None,
        "program_type": None,
        "price": Decimal("1250.5000"),
        "fingerprint": "0" * 64,
        "zoho_modified_time": datetime(2026, 11, 30, 9, 15, tzinfo=UTC),
        "data": {"name": f"Programme {zoho_id}"},
        "raw": {"id": zoho_id, "Name": f"Programme {zoho_id}", "Nested": {"a": [1, "é", None]}},
        "warnings": None,
        "last_event_id": None,
        "created_at": now,
        "updated_at": now,
        "deleted_at": None,
    }
    return row | overrides


def test_only_rows_whose_key_is_free_are_inserted_and_reported(
    db: Database, tenant: TenantContext
) -> None:
    with db.sessions.begin() as session:
        assert insert_new(session, PROGRAMS, [program(tenant.id, "p1")], key=KEY) == ["p1"]

    with db.sessions.begin() as session:
        taken = program(tenant.id, "p1", name="Changed")
        inserted = insert_new(
            session, PROGRAMS, [taken, program(tenant.id, "p2"), program(tenant.id, "p3")], key=KEY
        )

    assert sorted(inserted) == ["p2", "p3"]
    with db.sessions() as session:
        names = dict(session.execute(select(PROGRAMS.c.zoho_id, PROGRAMS.c.name)).all())
    assert names == {"p1": "Programme p1", "p2": "Programme p2", "p3": "Programme p3"}


def test_values_come_back_as_they_went_in(db: Database, tenant: TenantContext) -> None:
    warned = [{"code": "invalid_value", "field": "Price"}]
    sent = [program(tenant.id, "p1"), program(tenant.id, "p2", warnings=warned, price=None)]
    with db.sessions.begin() as session:
        insert_new(session, PROGRAMS, sent, key=KEY)

    with db.sessions() as session:
        stored = {
            row["zoho_id"]: row
            for row in session.execute(select(PROGRAMS).order_by(PROGRAMS.c.id)).mappings()
        }
    for row in sent:
        got = stored[row["zoho_id"]]
        assert {name: got[name] for name in row} == row


def test_a_broken_constraint_is_sqlalchemys_integrity_error(
    db: Database, tenant: TenantContext
) -> None:
    orphan = program(tenant.id + 1000, "p1")
    with db.sessions() as session, pytest.raises(IntegrityError, match=r"(?i)foreign key"):
        insert_new(session, PROGRAMS, [orphan], key=KEY)

    with db.sessions() as session:
        assert session.scalar(select(PROGRAMS.c.id)) is None


def test_a_connection_the_server_ends_is_an_operational_error_and_is_dropped(
    db: Database, backend: str, tenant: TenantContext
) -> None:
    if backend != "postgresql":
        pytest.skip("a server connection is PostgreSQL's")
    other = Database(db.url)
    try:
        with db.sessions() as session:
            pid = session.scalar(text("SELECT pg_backend_pid()"))
            with other.engine.connect() as connection:
                connection.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
                connection.commit()
            with pytest.raises(OperationalError):
                insert_new(session, PROGRAMS, [program(tenant.id, "p1")], key=KEY)
    finally:
        other.dispose()

    with db.sessions.begin() as session:
        assert session.scalar(text("SELECT pg_backend_pid()")) != pid
        assert insert_new(session, PROGRAMS, [program(tenant.id, "p1")], key=KEY) == ["p1"]


@pytest.mark.parametrize("count", [1, 3])
def test_appended_rows_come_back_as_they_went_in(
    db: Database, tenant: TenantContext, count: int
) -> None:
    at = datetime(2026, 12, 1, 8, 30, 15, 123456, tzinfo=UTC)
    details: list[Any] = [{"changes": {"Phone": [None, "07700 900123"]}}, None, ["é", 1]]
    sent = [
        {
            "tenant_id": tenant.id,
            "entity": "students",
            "zoho_id": f"s{n}",
            "inbound_event_id": None,
            "outcome": "NEW",
            "detail": details[n],
            "at": at,
        }
        for n in range(count)
    ]
    with db.sessions.begin() as session:
        append(session, HISTORY, sent)  # type: ignore[arg-type]

    with db.sessions() as session:
        got = session.execute(
            select(*(HISTORY.c[name] for name in sent[0])).order_by(HISTORY.c.id)
        ).mappings()
        assert [dict(row) for row in got] == sent


def test_an_appended_row_breaking_a_foreign_key_is_sqlalchemys_integrity_error(
    db: Database, tenant: TenantContext
) -> None:
    rows = [
        {"tenant_id": tenant.id + 1000 * n, "entity": "students", "zoho_id": f"s{n}"}
        | {"inbound_event_id": None, "outcome": "NEW", "detail": None, "at": utcnow()}
        for n in range(2)
    ]
    with db.sessions() as session, pytest.raises(IntegrityError, match=r"(?i)foreign key"):
        append(session, HISTORY, rows)  # type: ignore[arg-type]
