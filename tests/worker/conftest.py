"""Fixtures of the worker tests: a fake Moodle, settings that point the default tenant at it,
and `MoodleSync`, which posts records through the API and drains workers against the fake.

Every test runs on SQLite and PostgreSQL (the `db` fixture) and judges the outcome by what the
fake Moodle holds at the end, user by user and enrolment by enrolment, and by the jobs' rows.
Nothing here sleeps: a job is made due, or a lease expired, by moving its time in the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import factory.random
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update

from tests.conftest import DEFAULT_TENANT, sync
from tests.factories import (
    CLASSES,
    ENROLLMENTS,
    GRADES,
    PAYMENTS,
    PROGRAMS,
    REGISTRATIONS,
    STUDENTS,
    TEACHERS,
    UNITS,
    ClassRecordFactory,
    EnrollmentRecordFactory,
    ProgramRecordFactory,
    Record,
    StudentRecordFactory,
    TeacherRecordFactory,
    UnitRecordFactory,
    ZohoRecordFactory,
    zoho_datetime,
)
from tests.fakes.moodle import DEFAULT_SITE_URL, DEFAULT_TOKEN, FakeCall, FakeMoodle, FakeUser
from tests.fakes.zoho import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
    FakeZoho,
)
from zoho_moodle_sync import tenants
from zoho_moodle_sync.db.base import Base, utcnow
from zoho_moodle_sync.db.jobs import DeliveryPause, Job, JobKind, MoodleLink
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.reconcile import pull
from zoho_moodle_sync.reconcile.reports import PullReport
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import TenantContext
from zoho_moodle_sync.worker.runner import Worker

ENTITY_OF_MODULE = {
    PROGRAMS: "programs",
    UNITS: "units",
    TEACHERS: "teachers",
    STUDENTS: "students",
    CLASSES: "classes",
    ENROLLMENTS: "enrollments",
    REGISTRATIONS: "registrations",
    PAYMENTS: "payments",
    GRADES: "grades",
}
SITE_USER_IDS = frozenset({1, 2, 3, 4})
"""guest, admin, the token's user and the user without capabilities the fake starts with."""
SITE_COURSE_ID = 1
STUDENT_ROLE = 5
EDITING_TEACHER_ROLE = 3
WRITE_FUNCTIONS = frozenset(
    {
        "core_user_create_users",
        "core_user_update_users",
        "core_course_create_categories",
        "core_course_update_categories",
        "core_course_create_courses",
        "core_course_update_courses",
        "enrol_manual_enrol_users",
        "enrol_manual_unenrol_users",
    }
)


@pytest.fixture
def db(database_url: str, backend: str) -> Iterator[Database]:
    """The shared `db` (an empty, migrated database), emptied with DELETE on PostgreSQL: a
    TRUNCATE of every table costs PostgreSQL about 0.4 s a test, DELETE a few milliseconds."""
    database = Database(database_url)
    if backend == "postgresql":
        with database.engine.begin() as connection:
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(delete(table))
    yield database
    database.dispose()


@pytest.fixture(autouse=True)
def same_records_every_run() -> Iterator[None]:
    """The same random state and id sequence for every test; both are put back afterwards."""
    state = factory.random.get_random_state()
    resume_at = ZohoRecordFactory._meta.next_sequence()
    factory.random.reseed_random(20250512)
    ZohoRecordFactory.reset_sequence(1)
    yield
    factory.random.set_random_state(state)
    ZohoRecordFactory.reset_sequence(resume_at)


DELIVERY = frozenset({JobKind.DELIVER})
"""The kind of job these tests drain: Moodle delivery (upkeep has tests of its own)."""

MOODLE = {
    "moodle_url": DEFAULT_SITE_URL,
    "moodle_token": DEFAULT_TOKEN,
    "max_body_bytes": 8 * 1024 * 1024,
    "worker_backoff_seconds": 60.0,
    "worker_wait_seconds": 60.0,
    "pause_probe_seconds": 60.0,
}
"""The default tenant delivers to the fake Moodle. Backoff, waiting and the pause's probe are
long on purpose: a test makes a job due by moving its time in the database."""


def moodle_settings(base: Settings, **changes: Any) -> Settings:
    """`base` with `changes`, checked like any settings."""
    return Settings(**{**base.model_dump(), **changes}, _env_file=None)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return moodle_settings(settings, **MOODLE)


@pytest.fixture
def fake_moodle() -> FakeMoodle:
    return FakeMoodle()


class MoodleSync:
    """The service on a test database, delivering to a fake Moodle: post records through the
    API, drain workers, and read jobs, links and pauses back."""

    def __init__(
        self, client: TestClient, db: Database, tenant: TenantContext, settings: Settings
    ) -> None:
        self.client = client
        self.db = db
        self.tenant = tenant
        self.settings = settings

    # ---- the API ------------------------------------------------------------------------

    def post(self, entity: str, records: Sequence[Record]) -> dict[str, Any]:
        """POST records to /v1/sync/{entity}; the decoded answer."""
        answer: dict[str, Any] = sync(self.client, entity, list(records))
        return answer

    def delete(self, entity: str, zoho_id: str) -> dict[str, Any]:
        """DELETE /v1/sync/{entity}/{zoho_id}: the record was deleted in Zoho."""
        response = self.client.delete(f"/v1/sync/{entity}/{zoho_id}")
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    # ---- workers ------------------------------------------------------------------------

    def drain(
        self,
        fake: FakeMoodle,
        *,
        settings: Settings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> int:
        """Run a new worker until nothing is due; how many jobs it settled."""
        return asyncio.run(self.drain_async(fake, settings=settings, transport=transport))

    async def drain_async(
        self,
        fake: FakeMoodle,
        *,
        settings: Settings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        worker_id: str | None = None,
    ) -> int:
        async with httpx.AsyncClient(transport=transport or fake.transport()) as http:
            worker = Worker(
                self.db, settings or self.settings, http=http, worker_id=worker_id, kinds=DELIVERY
            )
            return await worker.drain()

    # ---- the database -------------------------------------------------------------------

    def jobs(self, entity: str | None = None, zoho_id: str | None = None) -> list[Job]:
        query = select(Job).where(Job.tenant_id == self.tenant.id, Job.kind == "deliver")
        if entity is not None:
            query = query.where(Job.entity == entity)
        if zoho_id is not None:
            query = query.where(Job.zoho_id == zoho_id)
        with self.db.sessions() as session:
            return list(session.scalars(query.order_by(Job.id)))

    def job(self, entity: str, zoho_id: str) -> Job:
        """The record's latest job."""
        jobs = self.jobs(entity, zoho_id)
        assert jobs, f"no job for {entity} {zoho_id}"
        return jobs[-1]

    def states(self, entity: str | None = None) -> dict[str, int]:
        """How many jobs are in each state."""
        counts: dict[str, int] = {}
        for job in self.jobs(entity):
            counts[job.state] = counts.get(job.state, 0) + 1
        return counts

    def link(self, entity: str, zoho_id: str) -> MoodleLink | None:
        with self.db.sessions() as session:
            return session.scalar(
                select(MoodleLink).where(
                    MoodleLink.tenant_id == self.tenant.id,
                    MoodleLink.entity == entity,
                    MoodleLink.zoho_id == zoho_id,
                )
            )

    def pause(self) -> DeliveryPause | None:
        with self.db.sessions() as session:
            return session.get(DeliveryPause, self.tenant.id)

    def make_due(self, entity: str | None = None) -> None:
        """Pending and waiting jobs become due now, as if their backoff or wait had passed."""
        condition = [Job.state.in_(("pending", "waiting"))]
        if entity is not None:
            condition.append(Job.entity == entity)
        with self.db.sessions.begin() as session:
            session.execute(update(Job).where(*condition).values(due_at=utcnow()))

    def postpone(self, entity: str) -> None:
        """The entity's pending jobs become due only in an hour (a backoff in progress)."""
        later = utcnow() + timedelta(hours=1)
        with self.db.sessions.begin() as session:
            session.execute(
                update(Job).where(Job.entity == entity, Job.state == "pending").values(due_at=later)
            )

    def expire_leases(self) -> int:
        """Running jobs' leases run out, as when their worker died."""
        with self.db.sessions.begin() as session:
            result = session.execute(
                update(Job)
                .where(Job.state == "running")
                .values(lease_until=utcnow() - timedelta(seconds=1))
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def end_pause_probe_wait(self) -> None:
        with self.db.sessions.begin() as session:
            session.execute(update(DeliveryPause).values(probe_at=utcnow() - timedelta(seconds=1)))

    def set_policy(self, **policy: Any) -> None:
        """The default tenant's delivery policy (what is not given takes its default)."""
        with self.db.sessions.begin() as session:
            tenant = tenants.get_by_slug(session, DEFAULT_TENANT)
            assert tenant is not None
            tenants.set_delivery_policy(session, tenant, policy)


@pytest.fixture
def moodle_sync(
    client: TestClient, db: Database, tenant: TenantContext, settings: Settings
) -> MoodleSync:
    return MoodleSync(client, db, tenant, settings)


# ---- reading the fake Moodle --------------------------------------------------------------


def people(fake: FakeMoodle) -> list[FakeUser]:
    """The Moodle users the site did not start with."""
    return [user for user in fake.users() if user.id not in SITE_USER_IDS]


def person(fake: FakeMoodle, idnumber: str) -> FakeUser:
    """The one Moodle user with this idnumber."""
    found = [user for user in fake.users() if user.idnumber == idnumber]
    assert len(found) == 1, f"{len(found)} Moodle users have idnumber {idnumber}: {found}"
    return found[0]


def write_calls(fake: FakeMoodle) -> list[FakeCall]:
    return [call for call in fake.calls if call.function in WRITE_FUNCTIONS]


def created_items(fake: FakeMoodle, function: str) -> int:
    """Items of `function` calls Moodle carried out."""
    return sum(
        call.items
        for call in fake.calls
        if call.function == function and call.outcome.startswith("ok")
    )


def day_start(day: str | None) -> int:
    """Unix time of the start of `day` in UTC (the default tenant's time zone)."""
    if day is None:
        return 0
    return int(datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC).timestamp())


def day_end(day: str | None) -> int:
    """Unix time of the end of `day`: an end date is inclusive."""
    if day is None:
        return 0
    return day_start(day) + int(timedelta(days=1).total_seconds())


def modified(record: Record, minutes: int = 10, **changes: Any) -> Record:
    """`record` edited in Zoho `minutes` later, with `changes`."""
    later = datetime.fromisoformat(record["Modified_Time"]) + timedelta(minutes=minutes)
    return {**record, **changes, "Modified_Time": zoho_datetime(later)}


# ---- colleges -----------------------------------------------------------------------------

POST_ORDER = ("programs", "units", "teachers", "students", "classes", "enrollments")


@dataclass
class OneClass:
    """A programme with one unit and one class taught by `teacher`, and its students, each
    enrolled in the class."""

    program: Record
    unit: Record
    teacher: Record
    class_: Record
    students: list[Record]
    enrollments: list[Record]

    def by_entity(self) -> dict[str, list[Record]]:
        return {
            "programs": [self.program],
            "units": [self.unit],
            "teachers": [self.teacher],
            "students": self.students,
            "classes": [self.class_],
            "enrollments": self.enrollments,
        }


def one_class(students: int = 3, program: Record | None = None, **class_fields: Any) -> OneClass:
    program = program or ProgramRecordFactory()
    unit = UnitRecordFactory(program=program)
    teacher = TeacherRecordFactory()
    class_ = ClassRecordFactory(unit=unit, teacher=teacher, **class_fields)
    people_ = StudentRecordFactory.build_batch(students, program=program)
    enrollments = [EnrollmentRecordFactory(student=s, class_=class_) for s in people_]
    return OneClass(program, unit, teacher, class_, people_, enrollments)


def post_all(moodle_sync: MoodleSync, records: dict[str, list[Record]]) -> None:
    """Post each entity's records in one request, in dependency order."""
    for entity in POST_ORDER:
        if records.get(entity):
            answer = moodle_sync.post(entity, records[entity])
            summary = answer["summary"]
            assert summary["INVALID"] == summary["SKIPPED"] == 0, answer


# ---- interrupting a worker ----------------------------------------------------------------


class AfterMoodleAnswers(httpx.AsyncBaseTransport):
    """The fake Moodle's transport, with something going wrong right after Moodle carried out
    a call of `function`: the answer is lost on the way (`lose`), or the worker's task is
    cancelled (`cancel`), as when the process is stopped at that moment. With `still_down`,
    the breaker's probes (site info) are lost too once that happened, so that however slow
    the run, Moodle does not come back within it."""

    def __init__(
        self,
        fake: FakeMoodle,
        function: str,
        what: Literal["lose", "cancel"],
        *,
        times: int = 1,
        still_down: bool = False,
    ) -> None:
        self.inner = fake.transport()
        self.function = function
        self.what = what
        self.times = times
        self.still_down = still_down

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        probing = request.url.params.get("wsfunction") == "core_webservice_get_site_info"
        if self.still_down and self.times == 0 and probing:
            raise httpx.ConnectError("Moodle is still unreachable")
        response = await self.inner.handle_async_request(request)
        if request.url.params.get("wsfunction") != self.function or self.times == 0:
            return response
        self.times -= 1
        await response.aread()
        if self.what == "lose":
            raise httpx.ReadError("connection reset while reading Moodle's answer")
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)
        raise AssertionError("the task was cancelled")


# ---- the Zoho API -------------------------------------------------------------------------


@pytest.fixture
def fake_zoho() -> FakeZoho:
    """A fake Zoho org with every module the default mapping reads, and no record yet."""
    return FakeZoho(modules=ENTITY_OF_MODULE)


@pytest.fixture
def zoho_settings(settings: Settings) -> Settings:
    """The worker settings, with the default tenant's Zoho API credentials (the fake's)."""
    return moodle_settings(
        settings,
        zoho_client_id=DEFAULT_CLIENT_ID,
        zoho_client_secret=DEFAULT_CLIENT_SECRET,
        zoho_refresh_token=DEFAULT_REFRESH_TOKEN,
        zoho_requests_per_minute=0,
    )


def zoho_http(fake: FakeZoho) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=fake.transport())


def import_all(
    db: Database,
    settings: Settings,
    tenant: TenantContext,
    fake: FakeZoho,
    **options: Any,
) -> PullReport:
    """`zoho-moodle-sync pull` of every entity (`options`: since, dry_run, entities, resume,
    progress)."""
    progress = options.pop("progress", None)
    resume = options.pop("resume", False)
    plan = pull.plan_for(
        db,
        tenant,
        kind="import",
        entities=options.pop("entities", None),
        since=options.pop("since", None),
        dry_run=options.pop("dry_run", False),
    )
    assert not options, options

    async def run() -> PullReport:
        async with zoho_http(fake) as http:
            return await pull.pull(db, settings, plan, http=http, progress=progress, resume=resume)

    return asyncio.run(run())


# ---- the console's tenant --------------------------------------------------------------


@pytest.fixture
def console_college(moodle_sync: MoodleSync, fake_moodle: FakeMoodle) -> dict[str, Any]:
    """A class delivered to Moodle, a student Moodle refuses (dead job), and an enrolment
    parked for a class that never arrived."""
    world = one_class(students=2)
    refused = world.students[1]
    fake_moodle.add_user("someone.else", email=refused["Academic_Email"])
    moodle_sync.set_policy(user_match=["idnumber", "username"])
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)
    lonely = EnrollmentRecordFactory(student=world.students[0])
    moodle_sync.post("enrollments", [lonely])
    [dead] = [job for job in moodle_sync.jobs("students") if job.state == "dead"]
    return {"world": world, "dead": dead, "parked": lonely}
