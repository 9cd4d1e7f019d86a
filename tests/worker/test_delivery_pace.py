"""Delivery at Moodle's pace with few calls: batches of one function go out MOODLE_CONCURRENCY at
a time (an outage in one of them holds the whole batch back, as for one call), a class in a
category the service made is created without a look-up (a course of the class found elsewhere is
still taken over), and records arriving one by one are delivered together at a lull."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update

from tests.factories import ProgramRecordFactory
from tests.fakes.moodle import FakeMoodle
from tests.worker.conftest import (
    STUDENT_ROLE,
    MoodleSync,
    moodle_settings,
    one_class,
    people,
    person,
    post_all,
)
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import Job
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.worker.deliveries import Deliveries


class InFlight(httpx.AsyncBaseTransport):
    """The fake Moodle's transport, counting the calls of `function` in flight at once."""

    def __init__(self, fake: FakeMoodle, function: str) -> None:
        self.inner = fake.transport()
        self.function = function
        self.now = 0
        self.most = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        counted = request.url.params.get("wsfunction") == self.function
        if counted:
            self.now += 1
            self.most = max(self.most, self.now)
            await asyncio.sleep(0.05)  # long enough for another call to start meanwhile
        try:
            return await self.inner.handle_async_request(request)
        finally:
            if counted:
                self.now -= 1


def one_round(moodle_sync: MoodleSync, settings: Settings, fake: FakeMoodle) -> int:
    """One round of a running worker's delivery (which waits for the lull; `drain` does not)."""

    async def run() -> int:
        async with httpx.AsyncClient(transport=fake.transport()) as http:
            deliveries = Deliveries(
                moodle_sync.db, settings, worker_id="w", stopping=asyncio.Event()
            )
            return await deliveries.run_due(http)

    return asyncio.run(run())


def small_batches(settings: Settings, **changes: Any) -> Settings:
    return moodle_settings(settings, worker_batch_size=5, **changes)


def calls_of(fake: FakeMoodle, function: str) -> int:
    return sum(1 for call in fake.calls if call.function == function)


def test_calls_of_one_function_go_out_two_at_a_time(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, settings: Settings
) -> None:
    college = one_class(students=20)
    post_all(moodle_sync, college.by_entity())
    transport = InFlight(fake_moodle, "enrol_manual_enrol_users")

    moodle_sync.drain(fake_moodle, settings=small_batches(settings), transport=transport)

    assert transport.most == 2
    assert calls_of(fake_moodle, "enrol_manual_enrol_users") == 5  # 20 students, 5 a call, +1
    course = next(c for c in fake_moodle.courses() if c.idnumber == college.class_["id"])
    for student in college.students:
        assert fake_moodle.course_roles(person(fake_moodle, student["id"]).id, course.id) == (
            STUDENT_ROLE,
        )
    assert moodle_sync.states() == {"done": 43}


def test_one_call_at_a_time_when_asked(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, settings: Settings
) -> None:
    post_all(moodle_sync, one_class(students=20).by_entity())
    transport = InFlight(fake_moodle, "enrol_manual_enrol_users")

    moodle_sync.drain(
        fake_moodle, settings=small_batches(settings, moodle_concurrency=1), transport=transport
    )

    assert transport.most == 1
    assert moodle_sync.states() == {"done": 43}


def test_an_outage_during_calls_made_at_once_holds_the_batch_back(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, settings: Settings
) -> None:
    college = one_class(students=20)
    post_all(moodle_sync, {k: v for k, v in college.by_entity().items() if k != "enrollments"})
    moodle_sync.drain(fake_moodle)
    moodle_sync.post("enrollments", college.enrollments)
    fake_moodle.fail_next(1, status=503)

    moodle_sync.drain(fake_moodle, settings=small_batches(settings))

    pause = moodle_sync.pause()
    assert pause is not None
    assert pause.kind == "outage"
    jobs = moodle_sync.jobs("enrollments")
    assert {job.attempts for job in jobs} == {0}  # an outage spends no attempt
    assert not [job for job in jobs if job.state in ("dead", "running")]
    moodle_sync.end_pause_probe_wait()
    moodle_sync.make_due()
    moodle_sync.drain(fake_moodle, settings=small_batches(settings))
    assert moodle_sync.states("enrollments") == {"done": 20}


def test_the_programmes_of_a_batch_are_looked_up_in_one_call(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    """Four programmes, one of which Moodle already holds: one listing of the site's
    categories finds it (taken over, not duplicated), and the other three are created."""
    programs = ProgramRecordFactory.build_batch(4)
    existing = fake_moodle.add_category("Made by hand", idnumber=programs[2]["id"])

    post_all(moodle_sync, {"programs": programs})
    moodle_sync.drain(fake_moodle)

    assert calls_of(fake_moodle, "core_course_get_categories") == 1
    by_idnumber = {c.idnumber: c.id for c in fake_moodle.categories() if c.idnumber}
    assert sorted(by_idnumber) == sorted(p["id"] for p in programs)
    assert by_idnumber[programs[2]["id"]] == existing.id
    link = moodle_sync.link("programs", programs[2]["id"])
    assert link is not None
    assert (link.moodle_id, link.adopted) == (existing.id, True)
    assert moodle_sync.states() == {"done": 4}


def test_students_and_teachers_of_a_claim_are_looked_up_together(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    """One call per matching field (idnumber, username, e-mail) for the claim's users, students
    and teachers alike, and one call creating them all."""
    post_all(moodle_sync, one_class(students=5).by_entity())

    moodle_sync.drain(fake_moodle)

    assert calls_of(fake_moodle, "core_user_get_users_by_field") == 3
    assert calls_of(fake_moodle, "core_user_create_users") == 1
    assert len(people(fake_moodle)) == 6  # 5 students and the teacher
    assert moodle_sync.states() == {"done": 13}


def test_a_class_in_a_category_the_service_made_is_created_without_a_look_up(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    post_all(moodle_sync, one_class(students=2).by_entity())

    moodle_sync.drain(fake_moodle)

    assert calls_of(fake_moodle, "core_course_get_courses_by_field") == 0
    assert calls_of(fake_moodle, "core_course_create_courses") == 1


def test_a_course_moved_elsewhere_before_its_link_was_lost_is_taken_over_not_duplicated(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    """The course of the class sits in another category (moved by hand); the service's category
    holds nothing, so the course is created at once, Moodle refuses the taken idnumber, and the
    existing course is found and taken over."""
    college = one_class(students=2)
    elsewhere = fake_moodle.add_category("Archive")
    existing = fake_moodle.add_course(
        "Old name", "OLD-SHORT", categoryid=elsewhere.id, idnumber=college.class_["id"]
    )

    post_all(moodle_sync, college.by_entity())
    moodle_sync.drain(fake_moodle)

    courses = [c for c in fake_moodle.courses() if c.idnumber == college.class_["id"]]
    assert [c.id for c in courses] == [existing.id]
    assert courses[0].shortname == college.class_["Class_Short_Name"]
    assert courses[0].categoryid != elsewhere.id  # back in its programme's category
    link = moodle_sync.link("classes", college.class_["id"])
    assert link is not None
    assert (link.moodle_id, link.adopted) == (existing.id, True)
    assert moodle_sync.states() == {"done": 7}


def test_changes_arriving_one_by_one_wait_for_a_lull_and_go_together(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, settings: Settings
) -> None:
    coalescing = moodle_settings(
        settings, delivery_coalesce_seconds=30, delivery_coalesce_max_seconds=300
    )
    post_all(moodle_sync, one_class(students=3).by_entity())

    assert one_round(moodle_sync, coalescing, fake_moodle) == 0  # still arriving
    assert [course.id for course in fake_moodle.courses()] == [1]  # the site's own
    with moodle_sync.db.sessions.begin() as session:
        lull = utcnow() - timedelta(seconds=31)
        session.execute(update(Job).values(updated_at=lull))
    assert one_round(moodle_sync, coalescing, fake_moodle) == 9


def test_changes_that_keep_arriving_still_go_after_the_longest_wait(
    moodle_sync: MoodleSync, settings: Settings
) -> None:
    post_all(moodle_sync, one_class(students=1).by_entity())
    tenant_id = moodle_sync.tenant.id
    arriving = {"tenant_id": tenant_id, "quiet_seconds": 30, "max_seconds": 300}
    assert queue.still_arriving(moodle_sync.db, **arriving)

    with moodle_sync.db.sessions.begin() as session:
        first = session.query(Job).order_by(Job.id).first()
        assert first is not None
        first.updated_at = utcnow() - timedelta(seconds=301)

    assert not queue.still_arriving(moodle_sync.db, **arriving)
    assert not queue.still_arriving(
        moodle_sync.db, tenant_id=tenant_id, quiet_seconds=0, max_seconds=300
    )
