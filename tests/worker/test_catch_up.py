"""The scheduled catch-up: what changed in Zoho since the last pull (and what was deleted) reaches
Moodle though no webhook brought it, with no action from anyone; it runs as a periodic job of the
queue, one at a time per tenant, and `/v1/status` and `/metrics` show when each entity was last
pulled and what the catch-up caught."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.factories import STUDENTS, load_sample_college
from tests.fakes.moodle import FakeMoodle
from tests.fakes.zoho import FakeZoho
from tests.worker.conftest import MoodleSync, import_all, moodle_settings, person, zoho_http
from tests.worker.test_convergence import INVALID_IN_SAMPLE
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import Job, JobKind
from zoho_moodle_sync.db.reconciliation import Pull, PullModule
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.reconcile.pull import catch_up_plan
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import TenantContext
from zoho_moodle_sync.worker import reconciling
from zoho_moodle_sync.worker.runner import Worker

CATCHING_UP = frozenset({JobKind.CATCH_UP, JobKind.DELIVER})


def catch_up_settings(zoho_settings: Settings) -> Settings:
    return moodle_settings(zoho_settings, reconcile_minutes=15)


def run_worker(
    db: Database, settings: Settings, fake_moodle: FakeMoodle, fake_zoho: FakeZoho
) -> int:
    """A worker that catches up and delivers, run until nothing is due."""

    async def run() -> int:
        async with (
            httpx.AsyncClient(transport=fake_moodle.transport()) as moodle,
            zoho_http(fake_zoho) as zoho,
        ):
            worker = Worker(db, settings, http=moodle, zoho_http=zoho, kinds=CATCHING_UP)
            return await worker.drain()

    return asyncio.run(run())


def some_active_students(college: dict[str, list[dict[str, str]]], n: int) -> list[str]:
    return [
        s["id"]
        for s in college[STUDENTS]
        if ("students", s["id"]) not in INVALID_IN_SAMPLE and s["Status"] == "Active"
    ][:n]


def imported(
    moodle_sync: MoodleSync,
    fake_moodle: FakeMoodle,
    fake_zoho: FakeZoho,
    settings: Settings,
) -> dict[str, list[dict[str, str]]]:
    college = load_sample_college()
    fake_zoho.seed(college)
    import_all(moodle_sync.db, settings, moodle_sync.tenant, fake_zoho)
    moodle_sync.drain(fake_moodle)
    return college


def test_changes_no_webhook_brought_reach_moodle_at_the_next_catch_up(
    moodle_sync: MoodleSync,
    fake_moodle: FakeMoodle,
    fake_zoho: FakeZoho,
    zoho_settings: Settings,
    db: Database,
) -> None:
    settings = catch_up_settings(zoho_settings)
    college = imported(moodle_sync, fake_moodle, fake_zoho, settings)
    renamed, withdrawn, deleted = some_active_students(college, 3)
    # Edits in Zoho whose webhooks never arrive (the service was down, a rule was off).
    fake_zoho.update_record(STUDENTS, renamed, {"Last_Name": "Caught-Up"})
    fake_zoho.update_record(STUDENTS, withdrawn, {"Status": "Withdraw"})
    fake_zoho.delete_record(STUDENTS, deleted)

    run_worker(db, settings, fake_moodle, fake_zoho)

    assert person(fake_moodle, renamed).lastname == "Caught-Up"
    assert person(fake_moodle, withdrawn).suspended
    assert person(fake_moodle, deleted).suspended  # deleted in Zoho: the removal policy
    with db.sessions() as session:
        catch_up = session.scalars(select(Pull).where(Pull.kind == "catch_up")).one()
        assert catch_up.state == "done"
        students = session.get_one(PullModule, (catch_up.id, "students"))
    # Only what changed was read, and all three were changes no webhook had brought.
    assert students.records == 2
    assert students.outcomes == {"UPDATED": 2, "DELETED": 1}
    assert students.caught == 3


def test_a_catch_up_reads_from_its_last_pull_less_the_overlap(
    moodle_sync: MoodleSync,
    fake_moodle: FakeMoodle,
    fake_zoho: FakeZoho,
    zoho_settings: Settings,
    db: Database,
    tenant: TenantContext,
) -> None:
    settings = catch_up_settings(zoho_settings)
    imported(moodle_sync, fake_moodle, fake_zoho, settings)
    plan = catch_up_plan(db, settings, tenant)
    with db.sessions() as session:
        started = {
            module.entity: module.started_at for module in session.scalars(select(PullModule))
        }
    assert set(plan.since) == set(started)
    for entity, since in plan.since.items():
        assert since == started[entity] - timedelta(minutes=5)


def test_the_first_catch_up_of_a_tenant_never_pulled_looks_back_a_day(
    zoho_settings: Settings, db: Database, tenant: TenantContext
) -> None:
    plan = catch_up_plan(db, zoho_settings, tenant)

    for since in plan.since.values():
        assert since is not None
        assert abs((utcnow() - since) - timedelta(days=1)) < timedelta(minutes=1)


def test_the_catch_up_is_one_periodic_job_per_tenant_run_by_one_worker_at_a_time(
    moodle_sync: MoodleSync,
    fake_moodle: FakeMoodle,
    fake_zoho: FakeZoho,
    zoho_settings: Settings,
    db: Database,
) -> None:
    settings = catch_up_settings(zoho_settings)
    for _ in range(3):  # every worker schedules it; it is queued once
        reconciling.schedule(db, settings, kinds=CATCHING_UP)
    first = queue.claim(db, kind=JobKind.CATCH_UP, worker_id="a", limit=5, lease_seconds=30)
    second = queue.claim(db, kind=JobKind.CATCH_UP, worker_id="b", limit=5, lease_seconds=30)
    assert len(first) == 1
    assert second == []
    queue.settle(db, worker_id="a", jobs=first, verdicts={}, settings=settings)

    run_worker(db, settings, fake_moodle, fake_zoho)

    with db.sessions() as session:
        [job] = session.scalars(select(Job).where(Job.kind == JobKind.CATCH_UP)).all()
    assert job.state == "pending"  # again at its next run
    assert timedelta(minutes=14) < job.due_at - utcnow() <= timedelta(minutes=15)


def test_no_catch_up_without_zoho_credentials_or_when_turned_off(
    settings: Settings, zoho_settings: Settings, db: Database
) -> None:
    reconciling.schedule(db, moodle_settings(settings, reconcile_minutes=15), CATCHING_UP)
    reconciling.schedule(db, moodle_settings(zoho_settings, reconcile_minutes=0), CATCHING_UP)

    with db.sessions() as session:
        assert session.scalars(select(Job).where(Job.kind == JobKind.CATCH_UP)).all() == []


def test_status_and_metrics_show_the_last_pull_of_each_entity(
    client: TestClient,
    moodle_sync: MoodleSync,
    fake_moodle: FakeMoodle,
    fake_zoho: FakeZoho,
    zoho_settings: Settings,
    db: Database,
) -> None:
    settings = catch_up_settings(zoho_settings)
    college = imported(moodle_sync, fake_moodle, fake_zoho, settings)
    [renamed] = some_active_students(college, 1)
    fake_zoho.update_record(STUDENTS, renamed, {"First_Name": "Caught"})
    run_worker(db, settings, fake_moodle, fake_zoho)

    status = client.get("/v1/status").json()["reconcile"]
    pulls = {row["entity"]: row for row in status["last_pulls"]}
    assert pulls["students"]["kind"] == "catch_up"
    assert pulls["students"]["caught"] == 1
    assert pulls["students"]["tenant"] == "default"
    assert 0 <= pulls["students"]["age_seconds"] < 60
    assert pulls["enrollments"]["records"] == 0  # nothing changed there
    metrics = client.get("/metrics").text
    assert 'zms_last_reconcile_timestamp_seconds{entity="students",tenant="default"}' in metrics
    assert 'zms_reconcile_caught{entity="students",tenant="default"} 1.0' in metrics
