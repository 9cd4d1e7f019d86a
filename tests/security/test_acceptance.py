"""How what arrives is stored on PostgreSQL. An accepted webhook's event, repeat key and job
are one statement committed on its own; when the key is already held, the event waits as
`received` until its transaction decides it, so no event is ever accepted without the job that
completes it (and a defect meanwhile marks that event failed). A sync's event is committed on
its own before its records are processed, unless an Idempotency-Key must be claimed with it.
The test client here runs no worker: what a test sees is what the answer left behind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event as sql_event
from sqlalchemy import select

from tests.conftest import AUTH
from tests.factories import StudentRecordFactory
from tests.security.conftest import events, expire_every_key
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.db.jobs import Job
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.ingress import webhooks
from zoho_moodle_sync.settings import Settings


@pytest.fixture
def pg(db: Database, backend: str) -> Database:
    if backend != "postgresql":
        pytest.skip("the one-statement acceptance is PostgreSQL's")
    return db


@pytest.fixture
def answering(settings: Settings, pg: Database) -> Iterator[TestClient]:
    """The API alone: accepted webhooks stay accepted, with their jobs waiting."""
    with TestClient(create_app(settings, pg), raise_server_exceptions=False, headers=AUTH) as c:
        yield c


def webhook(student: dict[str, Any]) -> dict[str, Any]:
    return {"module": "BTEC_Students", "data": [student]}


def jobs_by_event(db: Database) -> dict[int | None, int]:
    with db.sessions() as session:
        rows = session.execute(select(Job.event_id, Job.id).where(Job.kind == "webhook"))
        return dict(rows.tuples().all())


def sent_during(db: Database, send: Callable[[], Any]) -> list[tuple[str, bool]]:
    """The statements `send` made the server send: their first word, and whether each was
    sent in autocommit (on its own) rather than in a transaction."""
    sent: list[tuple[str, bool]] = []

    @sql_event.listens_for(db.engine, "before_cursor_execute")
    def note(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        autocommit = connection.connection.driver_connection.autocommit
        sent.append((statement.lstrip().split(None, 1)[0], autocommit))

    try:
        send()
    finally:
        sql_event.remove(db.engine, "before_cursor_execute", note)
    return sent


def test_an_accepted_webhook_is_one_statement_outside_any_transaction(
    answering: TestClient, pg: Database
) -> None:
    answering.post("/v1/webhooks/zoho", json=webhook(StudentRecordFactory(Program=None)))
    answers: list[Any] = []
    sent = sent_during(
        pg,
        lambda: answers.append(
            answering.post("/v1/webhooks/zoho", json=webhook(StudentRecordFactory(Program=None)))
        ),
    )
    response = answers[0]

    assert response.status_code == 202
    assert sent == [("WITH", True)]
    stored = events(pg)[-1]
    assert (stored.id, stored.status, stored.http_status) == (
        response.json()["event_id"],
        "accepted",
        202,
    )
    assert stored.processed_at is None
    assert stored.id in jobs_by_event(pg)


def test_a_sync_stores_its_event_on_its_own_then_processes_it_in_a_transaction(
    answering: TestClient, pg: Database
) -> None:
    def sync_one(**headers: str) -> None:
        body = {"data": [StudentRecordFactory(Program=None)]}
        response = answering.post("/v1/sync/students", json=body, headers=headers)
        assert response.status_code == 200, response.text

    sync_one()
    without_key = sent_during(pg, sync_one)
    with_key = sent_during(pg, lambda: sync_one(**{"Idempotency-Key": "resync-7"}))

    assert without_key[0] == ("INSERT", True)
    assert len(without_key) > 1
    assert not any(autocommit for _, autocommit in without_key[1:])
    # With a key, the event and the key's claim are one transaction.
    assert with_key[0] == ("INSERT", False)
    assert not any(autocommit for _, autocommit in with_key)


def test_a_webhook_whose_key_expired_is_received_then_accepted_with_its_job(
    answering: TestClient, pg: Database
) -> None:
    body = webhook(StudentRecordFactory(Program=None))
    key = {"Idempotency-Key": "zoho-rule-3-run-1"}
    first = answering.post("/v1/webhooks/zoho", json=body, headers=key)
    expire_every_key(pg)

    again = answering.post("/v1/webhooks/zoho", json=body, headers=key)

    assert first.status_code == again.status_code == 202
    assert again.json()["event_id"] > first.json()["event_id"]
    assert [(e.status, e.http_status, e.processed_at) for e in events(pg)] == [
        ("accepted", 202, None)
    ] * 2
    assert set(jobs_by_event(pg)) == {first.json()["event_id"], again.json()["event_id"]}


def test_a_webhook_that_fails_after_it_was_stored_is_never_accepted_without_its_job(
    answering: TestClient, pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = webhook(StudentRecordFactory(Program=None))
    first = answering.post("/v1/webhooks/zoho", json=body)

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a defect while deciding a repeat")

    monkeypatch.setattr(webhooks, "claim", broken)
    again = answering.post("/v1/webhooks/zoho", json=body)

    assert first.status_code == 202
    assert again.status_code == 500
    stored = events(pg)
    jobs = jobs_by_event(pg)
    assert [e.id for e in stored if e.status == "accepted"] == [first.json()["event_id"]]
    assert set(jobs) == {first.json()["event_id"]}
    # What arrived is kept once: the event committed before the defect, marked failed.
    assert [(e.status, e.http_status) for e in stored[1:]] == [("failed", 500)]
    assert "a defect while deciding a repeat" in (stored[1].error or "")
    assert stored[1].body == stored[0].body
