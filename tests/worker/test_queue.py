"""The one queue: API processes only answer, jobs are settled without ever breaking the rule of
one open job per record, and periodic upkeep (parked-record sweep) runs as jobs that come back
due at their next run."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tests.conftest import AUTH, TEST_SECRET, sync
from tests.factories import (
    ClassRecordFactory,
    EnrollmentRecordFactory,
    StudentRecordFactory,
    TeacherRecordFactory,
)
from tests.test_cli import store_without_releasing
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import Job, JobKind
from zoho_moodle_sync.db.models import InboundEvent
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.jobs.queue import Verdict
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import TenantContext
from zoho_moodle_sync.worker.runner import Worker


def jobs_of(db: Database, kind: JobKind) -> list[Job]:
    with db.sessions() as session:
        return list(session.scalars(select(Job).where(Job.kind == kind).order_by(Job.id)))


def run_worker(db: Database, settings: Settings) -> int:
    """Drain webhook completion and the parked-record sweep (no Moodle answers here; retention
    has tests of its own)."""
    kinds = {JobKind.WEBHOOK, JobKind.SWEEP_PARKED}

    async def drain() -> int:
        async with httpx.AsyncClient() as http:
            return await Worker(db, settings, http=http, zoho_http=http, kinds=kinds).drain()

    return asyncio.run(drain())


def test_an_api_process_only_answers_and_a_worker_completes_the_webhook(
    settings: Settings, db: Database
) -> None:
    teacher = TeacherRecordFactory()
    body = {
        "module": "BTEC_Teachers",
        "zoho_id": teacher["id"],
        "Name": teacher["Name"],
        "Academic_Email": teacher["Academic_Email"],
    }
    with TestClient(create_app(settings, db), headers=AUTH) as api:
        answer = api.post("/v1/webhooks/zoho", json=body)
        assert answer.status_code == 202
        event_id = answer.json()["event_id"]
        with db.sessions() as session:
            assert session.get_one(InboundEvent, event_id).status == "accepted"
        [job] = jobs_of(db, JobKind.WEBHOOK)
        assert (job.event_id, job.state) == (event_id, "pending")
        assert api.get(f"/v1/records/teachers/{teacher['id']}").status_code == 404

        assert run_worker(db, settings) == 1

        assert api.get(f"/v1/records/teachers/{teacher['id']}").json()["state"] == "stored"
    with db.sessions() as session:
        assert session.get_one(InboundEvent, event_id).status == "processed"
    assert [job.state for job in jobs_of(db, JobKind.WEBHOOK)] == ["done"]
    assert TEST_SECRET not in str(body)


def test_a_job_put_back_while_its_record_has_a_newer_job_is_superseded_without_a_conflict(
    settings: Settings, db: Database, tenant: TenantContext
) -> None:
    with db.sessions.begin() as session:
        queue.enqueue_delivery(
            session, tenant_id=tenant.id, entity="enrollments", zoho_ids=["11", "12"]
        )
    claimed = queue.claim(
        db, kind=JobKind.DELIVER, worker_id="w1", limit=10, lease_seconds=60, tenant_id=tenant.id
    )
    assert len(claimed) == 2
    # A newer change of record 11 arrives while the worker holds its job.
    with db.sessions.begin() as session:
        queue.enqueue_delivery(session, tenant_id=tenant.id, entity="enrollments", zoho_ids=["11"])

    queue.settle(
        db,
        worker_id="w1",
        jobs=claimed,
        verdicts={job.id: Verdict("wait", "class 5 is not in Moodle yet") for job in claimed},
        settings=settings,
    )

    states = {(job.zoho_id, job.id): job.state for job in jobs_of(db, JobKind.DELIVER)}
    first, second, newer = sorted(states, key=lambda item: item[1])
    assert states[first] == "superseded"  # record 11: the newer job carries on
    assert states[second] == "waiting"  # record 12
    assert states[newer] == "pending"


def test_a_periodic_sweep_releases_parked_records_and_comes_back_due_later(
    settings: Settings, db: Database, client: TestClient, tenant: TenantContext
) -> None:
    student = StudentRecordFactory(Program=None)
    class_ = ClassRecordFactory(BTEC_Program=None, Teacher=None, Unit=None)
    enrollment = EnrollmentRecordFactory(student=student, class_=class_)
    sync(client, "classes", [class_])
    assert sync(client, "enrollments", [enrollment])["summary"]["SKIPPED"] == 1
    store_without_releasing(db, "students", student)
    sweeping = settings.model_copy(update={"parked_sweep_seconds": 30})

    assert run_worker(db, sweeping) == 1

    [sweep] = jobs_of(db, JobKind.SWEEP_PARKED)
    assert (sweep.state, sweep.attempts, sweep.tenant_id) == ("pending", 0, tenant.id)
    assert utcnow() + timedelta(seconds=20) < sweep.due_at <= utcnow() + timedelta(seconds=30)
    record = client.get(f"/v1/records/enrollments/{enrollment['id']}").json()
    assert (record["state"], record["history"][0]["outcome"]) == ("stored", "NEW")

    # Due again: the same row runs again; nothing else is queued.
    with db.sessions.begin() as session:
        session.execute(update(Job).values(due_at=utcnow()))
    assert run_worker(db, sweeping) == 1
    assert len(jobs_of(db, JobKind.SWEEP_PARKED)) == 1
    # Turned off: it runs a last time and is done.
    with db.sessions.begin() as session:
        session.execute(update(Job).values(due_at=utcnow()))
    assert run_worker(db, settings) == 1
    assert [job.state for job in jobs_of(db, JobKind.SWEEP_PARKED)] == ["done"]
    assert run_worker(db, settings) == 0
