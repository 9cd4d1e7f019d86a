"""Id-only webhooks arriving close together are fetched together: a bulk edit of 1,000
enrolments in Zoho (one webhook each) costs a handful of Zoho API calls, not 1,000."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from tests.conftest import AUTH, sync
from tests.factories import ENROLLMENTS, EnrollmentRecordFactory, StudentRecordFactory
from tests.fakes.zoho import FakeZoho
from tests.worker.conftest import moodle_settings, one_class, zoho_http
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import Job, JobKind
from zoho_moodle_sync.db.models import ENTITY_TABLES
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.worker.runner import Worker

BULK_EDIT = 1000
WINDOW = 1.0


@pytest.fixture
def windowed(zoho_settings: Settings) -> Settings:
    return moodle_settings(zoho_settings, webhook_fetch_window_seconds=WINDOW)


@pytest.fixture
def api(windowed: Settings, db: Database) -> Iterator[TestClient]:
    """The API alone: webhooks are answered and queued, and no worker runs beside it."""
    with TestClient(create_app(windowed, db), headers=AUTH) as client:
        yield client


def complete_webhooks(db: Database, settings: Settings, fake: FakeZoho) -> int:
    async def run() -> int:
        async with zoho_http(fake) as http:
            worker = Worker(db, settings, zoho_http=http, kinds={JobKind.WEBHOOK})
            return await worker.drain()

    return asyncio.run(run())


def test_a_bulk_edit_of_a_thousand_enrolments_costs_few_zoho_calls(
    api: TestClient, windowed: Settings, db: Database, fake_zoho: FakeZoho
) -> None:
    college = one_class(students=1)
    for entity, records in college.by_entity().items():
        sync(api, entity, records)
    student, class_ = college.students[0], college.class_
    enrolments = [EnrollmentRecordFactory(student=student, class_=class_) for _ in range(BULK_EDIT)]
    fake_zoho.seed({ENROLLMENTS: enrolments})

    for enrolment in enrolments:
        answer = api.post(
            "/v1/webhooks/zoho", json={"module": ENROLLMENTS, "zoho_id": enrolment["id"]}
        )
        assert answer.status_code == 202, answer.text
    time.sleep(WINDOW)  # the window of the last one passes
    complete_webhooks(db, windowed, fake_zoho)

    fetches = [c for c in fake_zoho.api_calls if "ids" in c.query]
    assert len(fetches) <= BULK_EDIT // 50  # at most 20 calls
    # (An access token cached from before may be refused once, and that call made again.)
    answered = [c for c in fetches if c.status == 200]
    assert sum(len(c.query["ids"].split(",")) for c in answered) == BULK_EDIT
    with db.sessions() as session:
        table = ENTITY_TABLES["enrollments"]
        stored = session.scalar(select(func.count()).select_from(table))
    assert stored == BULK_EDIT + 1  # and the one enrolment of the class's student


def test_an_id_only_webhook_waits_for_the_window_and_a_full_record_does_not(
    api: TestClient, db: Database
) -> None:
    student = StudentRecordFactory(Program=None)
    before = utcnow()
    api.post("/v1/webhooks/zoho", json={"module": "BTEC_Students", "zoho_id": student["id"]})
    api.post("/v1/webhooks/zoho", json={"module": "BTEC_Students", "data": [student]})

    with db.sessions() as session:
        id_only, full = session.scalars(
            select(Job).where(Job.kind == JobKind.WEBHOOK).order_by(Job.id)
        ).all()
    assert id_only.due_at - before >= timedelta(seconds=WINDOW)
    assert full.due_at - before < timedelta(seconds=WINDOW)


def test_jobs_due_within_the_window_come_along_with_a_due_one(
    api: TestClient, windowed: Settings, db: Database
) -> None:
    students = StudentRecordFactory.build_batch(3, Program=None)
    for student in students:
        api.post("/v1/webhooks/zoho", json={"module": "BTEC_Students", "zoho_id": student["id"]})
    with db.sessions.begin() as session:
        first = session.scalars(select(Job.id).order_by(Job.id)).first()
        session.execute(update(Job).where(Job.id == first).values(due_at=utcnow()))

    alone = queue.claim(db, kind=JobKind.WEBHOOK, worker_id="a", limit=10, lease_seconds=30)
    queue.settle(db, worker_id="a", jobs=alone, verdicts={}, settings=windowed)
    together = queue.claim(
        db, kind=JobKind.WEBHOOK, worker_id="b", limit=10, lease_seconds=30, early_seconds=WINDOW
    )

    assert [job.id for job in alone] == [first]
    assert len(together) == 3
