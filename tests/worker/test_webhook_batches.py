"""Webhooks accepted in a burst are completed together, in one transaction: every record gets
the outcome it would have got event by event, is stored under its own event, and releases
what waited for it under that event; an event that fails holds none of the others back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import AUTH, sync
from tests.factories import (
    STUDENTS,
    EnrollmentRecordFactory,
    Record,
    StudentRecordFactory,
)
from tests.worker.conftest import modified, one_class
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.db.jobs import Job, JobKind
from zoho_moodle_sync.db.models import ENTITY_TABLES, InboundEvent, RecordOutcome
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.ingress import accepted
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.worker.runner import Worker


@pytest.fixture
def api(settings: Settings, db: Database) -> Iterator[TestClient]:
    """The API alone: webhooks are answered and queued, and no worker runs beside it."""
    with TestClient(create_app(settings, db), headers=AUTH) as client:
        yield client


def webhook(api: TestClient, record: Record) -> int:
    answer = api.post("/v1/webhooks/zoho", json={"module": STUDENTS, "data": [record]})
    assert answer.status_code == 202, answer.text
    event_id: int = answer.json()["event_id"]
    return event_id


def complete_webhooks(db: Database, settings: Settings) -> int:
    async def run() -> int:
        return await Worker(db, settings, kinds={JobKind.WEBHOOK}).drain()

    return asyncio.run(run())


def stored_events(db: Database, ids: list[int]) -> list[InboundEvent]:
    with db.sessions() as session:
        found = {
            e.id: e for e in session.scalars(select(InboundEvent).where(InboundEvent.id.in_(ids)))
        }
    return [found[i] for i in ids]


def history(db: Database, zoho_id: str) -> list[tuple[str, int | None, Any]]:
    with db.sessions() as session:
        rows = session.execute(
            select(RecordOutcome.outcome, RecordOutcome.inbound_event_id, RecordOutcome.detail)
            .where(RecordOutcome.zoho_id == zoho_id)
            .order_by(RecordOutcome.id)
        )
        return [(o, e, d) for o, e, d in rows]


def last_event(db: Database, entity: str, zoho_id: str) -> int | None:
    table = ENTITY_TABLES[entity]
    with db.sessions() as session:
        event_id: int | None = session.scalar(
            select(table.c.last_event_id).where(table.c.zoho_id == zoho_id)
        )
        return event_id


def summary(event: InboundEvent) -> dict[str, int]:
    assert event.summary is not None
    return {k: v for k, v in event.summary.items() if v and k != "total"}


def test_webhooks_completed_together_get_the_outcomes_they_would_get_one_by_one(
    api: TestClient, settings: Settings, db: Database
) -> None:
    ann, bob = StudentRecordFactory(Program=None), StudentRecordFactory(Program=None)
    renamed = modified(ann, First_Name="Annabel")
    older = modified(ann, minutes=5, First_Name="Anna")
    broken = {**StudentRecordFactory(Program=None), "First_Name": None}
    touched = modified(renamed, minutes=20)  # only Modified_Time

    ids = [webhook(api, r) for r in (ann, bob, renamed, older, broken, touched)]
    assert complete_webhooks(db, settings) == len(ids)

    events = stored_events(db, ids)
    assert [e.status for e in events] == ["processed"] * len(ids)
    assert len({e.processed_at for e in events}) == 1  # one transaction
    assert [summary(e) for e in events] == [
        {"NEW": 1},
        {"NEW": 1},
        {"UPDATED": 1},
        {"STALE": 1},
        {"INVALID": 1},
        {"UNCHANGED": 1},
    ]
    assert [(o, e) for o, e, _ in history(db, ann["id"])] == [
        ("NEW", ids[0]),
        ("UPDATED", ids[2]),
        ("STALE", ids[3]),
    ]
    assert history(db, ann["id"])[1][2]["changes"] == {"First_Name": [ann["First_Name"], "Annabel"]}
    assert last_event(db, "students", ann["id"]) == ids[2]
    assert last_event(db, "students", bob["id"]) == ids[1]


def test_a_parked_record_is_released_by_the_event_whose_record_it_waited_for(
    api: TestClient, settings: Settings, db: Database
) -> None:
    college = one_class(students=3)
    first, waited_for, third = college.students
    for entity in ("programs", "units", "teachers", "classes"):
        sync(api, entity, college.by_entity()[entity])
    enrolment = EnrollmentRecordFactory(student=waited_for, class_=college.class_)
    parked = sync(api, "enrollments", [enrolment])
    assert parked["results"][0]["outcome"] == "SKIPPED"

    ids = [webhook(api, s) for s in (first, waited_for, third)]
    complete_webhooks(db, settings)

    events = stored_events(db, ids)
    assert [e.summary["released"] for e in events if e.summary] == [0, 1, 0]
    assert [(o, e) for o, e, _ in history(db, enrolment["id"])][-1] == ("NEW", ids[1])
    assert last_event(db, "enrollments", enrolment["id"]) == ids[1]


def test_an_event_that_fails_holds_back_none_of_those_completed_with_it(
    api: TestClient, settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    students = StudentRecordFactory.build_batch(4, Program=None)
    bad = students[2]["id"]
    process = accepted.process_records

    def failing(*args: Any, **kwargs: Any) -> Any:
        if any(r.get("id") == bad for r in kwargs["raw_records"]):
            raise RuntimeError("a defect")
        return process(*args, **kwargs)

    monkeypatch.setattr(accepted, "process_records", failing)
    ids = [webhook(api, s) for s in students]
    complete_webhooks(db, settings)

    events = stored_events(db, ids)
    assert [e.status for e in events] == ["processed", "processed", "accepted", "processed"]
    with db.sessions() as session:
        job = session.scalars(select(Job).where(Job.event_id == ids[2])).one()
    assert (job.state, job.last_errorcode) == ("pending", "internal")
    assert "a defect" in (job.last_error or "")
