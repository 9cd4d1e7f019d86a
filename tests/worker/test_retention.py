"""Retention: a daily job deletes expired idempotency keys, and what is older than RETENTION_DAYS
(inbound events with their bodies, outcome history, the Moodle call log, finished jobs), never a
record's stored state, nor an event a parked record or an unfinished job still needs."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from tests.conftest import sync
from tests.factories import EnrollmentRecordFactory, TeacherRecordFactory
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import Job, JobKind, MoodleCall
from zoho_moodle_sync.db.models import InboundEvent, ParkedRecord, RecordOutcome
from zoho_moodle_sync.db.security import IdempotentRequest
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.ingress import pipeline
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import TenantContext
from zoho_moodle_sync.worker.runner import Worker
from zoho_moodle_sync.worker.upkeep import prune

LONG_AGO = timedelta(days=100)


def count(db: Database, model: type) -> int:
    with db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def age_everything(db: Database) -> None:
    """Everything stored so far happened LONG_AGO."""
    then = utcnow() - LONG_AGO
    with db.sessions.begin() as session:
        session.execute(update(InboundEvent).values(received_at=then))
        session.execute(update(RecordOutcome).values(at=then))
        session.execute(update(MoodleCall).values(at=then))
        session.execute(update(Job).values(finished_at=then))
        session.execute(update(IdempotentRequest).values(expires_at=then))


def test_old_history_goes_and_what_is_still_needed_stays(
    client: TestClient, db: Database, tenant: TenantContext
) -> None:
    teacher = TeacherRecordFactory()
    waiting = EnrollmentRecordFactory()
    sync(client, "teachers", [teacher])
    parked_by = sync(client, "enrollments", [waiting])["event_id"]
    keyed = client.post(
        "/v1/sync/teachers", json={"data": [teacher]}, headers={"Idempotency-Key": "k-1"}
    )
    assert keyed.status_code == 200
    dead_webhook = client.post(
        "/v1/webhooks/zoho/BTEC_Teachers", json={**teacher, "zoho_id": teacher["id"]}
    ).json()["event_id"]
    with db.sessions.begin() as session:  # its job gave up: an operator may still replay it
        session.execute(update(Job).where(Job.event_id == dead_webhook).values(state="dead"))
    with db.sessions.begin() as session:
        session.add(
            MoodleCall(
                tenant_id=tenant.id,
                function="core_user_create_users",
                items=1,
                job_ids=[],
                ok=True,
                duration_ms=5,
            )
        )
    with db.sessions.begin() as session:  # delivered long ago
        session.execute(update(Job).where(Job.kind == JobKind.DELIVER).values(state="done"))
    age_everything(db)
    recent = sync(client, "teachers", [{**teacher, "Name": "Renamed Recently"}])["event_id"]
    events_before = count(db, InboundEvent)

    counts = prune(db, retention_days=90)

    with db.sessions() as session:
        kept_events = set(session.scalars(select(InboundEvent.id)))
        parked = session.scalar(select(ParkedRecord.inbound_event_id))
        outcomes = list(session.scalars(select(RecordOutcome.outcome)))
    assert kept_events == {parked_by, dead_webhook, recent}
    assert parked == parked_by
    assert counts["inbound events"] == events_before - 3
    assert counts["idempotency keys"] == 2  # the Idempotency-Key, the webhook body's key
    assert counts["moodle calls"] == 1
    assert counts["finished jobs"] == 1  # the teacher's delivery, done long ago
    assert count(db, IdempotentRequest) == 0
    assert count(db, MoodleCall) == 0
    assert outcomes == ["UPDATED"]  # only the recent change's history is left
    view = client.get(f"/v1/records/teachers/{teacher['id']}").json()
    assert view["stored"]["data"]["name"] == "Renamed Recently"
    assert client.get(f"/v1/records/enrollments/{waiting['id']}").json()["state"] == "parked"
    assert prune(db, retention_days=90)["inbound events"] == 0


def test_a_replay_outlives_its_original(client: TestClient, db: Database) -> None:
    original = sync(client, "teachers", [TeacherRecordFactory()])["event_id"]
    age_everything(db)
    copy = pipeline.replay(db, original, max_records=1000).event_id

    prune(db, retention_days=90)

    with db.sessions() as session:
        assert session.get(InboundEvent, original) is None
        assert session.get_one(InboundEvent, copy).replay_of is None


def test_the_worker_runs_retention_daily_as_one_job(
    client: TestClient, settings: Settings, db: Database
) -> None:
    sync(client, "teachers", [TeacherRecordFactory()])
    age_everything(db)
    keeping = settings.model_copy(update={"retention_days": 30})

    async def drain() -> int:
        async with httpx.AsyncClient() as http:
            kinds = {JobKind.RETENTION}
            return await Worker(db, keeping, http=http, zoho_http=http, kinds=kinds).drain()

    assert asyncio.run(drain()) == 1

    with db.sessions() as session:
        [job] = session.scalars(select(Job).where(Job.kind == JobKind.RETENTION)).all()
    assert (job.state, job.tenant_id, job.attempts) == ("pending", None, 0)
    assert utcnow() + timedelta(hours=23) < job.due_at <= utcnow() + timedelta(days=1)
    assert count(db, InboundEvent) == 0
    assert asyncio.run(drain()) == 0
