"""Moodle down, a proxy answering 5xx, a connection cut: the jobs retry with backoff and go
through once Moodle is back; an answer lost after Moodle did the work is not done twice; a job
that keeps failing ends dead with the last error, and can be retried."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.factories import StudentRecordFactory
from tests.fakes.moodle import FakeMoodle, Fault
from tests.worker.conftest import (
    STUDENT_ROLE,
    AfterMoodleAnswers,
    MoodleSync,
    created_items,
    moodle_settings,
    one_class,
    people,
    person,
    post_all,
)
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.delivery import Batch
from zoho_moodle_sync.delivery.enrolments import EnrolmentDelivery
from zoho_moodle_sync.jobs import operator


@pytest.mark.parametrize(
    ("fault", "error"),
    [("status", "HTTP 503"), ("drop", "RemoteProtocolError")],
)
def test_jobs_retry_with_backoff_while_moodle_is_down_then_go_through(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, fault: str, error: str
) -> None:
    students = StudentRecordFactory.build_batch(5, program=None)
    moodle_sync.post("students", students)
    if fault == "status":
        fake_moodle.fail_next(1, status=503)
    else:
        fake_moodle.drop_next(1)
    before = utcnow()

    moodle_sync.drain(fake_moodle)

    assert people(fake_moodle) == []
    for job in moodle_sync.jobs("students"):
        assert (job.state, job.attempts, job.last_errorcode) == ("pending", 1, "unavailable")
        assert error in (job.last_error or "")
        # The first backoff is between half and all of worker_backoff_seconds (60 s here).
        assert before + timedelta(seconds=29) < job.due_at < utcnow() + timedelta(seconds=61)
    assert moodle_sync.drain(fake_moodle) == 0  # not due yet

    moodle_sync.make_due()
    moodle_sync.drain(fake_moodle)

    assert sorted(u.idnumber for u in people(fake_moodle)) == sorted(s["id"] for s in students)
    assert [(j.state, j.attempts) for j in moodle_sync.jobs()] == [("done", 1)] * 5


def test_backoff_grows_with_each_failed_attempt(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    student = StudentRecordFactory(program=None)
    moodle_sync.post("students", [student])
    delays = []
    with fake_moodle.fault(Fault("status", status=502)):
        for _ in range(3):
            started = utcnow()
            moodle_sync.drain(fake_moodle)
            delays.append(moodle_sync.job("students", student["id"]).due_at - started)
            moodle_sync.make_due()

    # 60 s, 120 s, 240 s ceilings, each drawn from its upper half.
    assert timedelta(seconds=29) < delays[0] <= timedelta(seconds=61)
    assert timedelta(seconds=59) < delays[1] <= timedelta(seconds=121)
    assert timedelta(seconds=119) < delays[2] <= timedelta(seconds=241)
    assert moodle_sync.job("students", student["id"]).attempts == 3


def test_a_job_that_keeps_failing_ends_dead_with_the_last_error_and_can_be_retried(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    settings = moodle_settings(moodle_sync.settings, worker_max_attempts=3)
    student = StudentRecordFactory(program=None)
    moodle_sync.post("students", [student])

    with fake_moodle.fault(Fault("status", status=502)):
        for _ in range(3):
            moodle_sync.drain(fake_moodle, settings=settings)
            moodle_sync.make_due()

    job = moodle_sync.job("students", student["id"])
    assert (job.state, job.attempts, job.last_errorcode) == ("dead", 3, "unavailable")
    assert job.last_error is not None
    assert job.last_error.startswith("gave up after 3 attempts: ")
    assert "HTTP 502" in job.last_error
    assert job.finished_at is not None
    assert moodle_sync.drain(fake_moodle, settings=settings) == 0
    assert people(fake_moodle) == []

    with moodle_sync.db.sessions.begin() as session:
        operator.retry_job(session, tenant_id=moodle_sync.tenant.id, job_id=job.id)
    moodle_sync.drain(fake_moodle, settings=settings)

    assert person(fake_moodle, student["id"]).username == student["Name"].lower()
    assert moodle_sync.job("students", student["id"]).state == "done"


@pytest.mark.parametrize(
    "function",
    [
        "core_course_create_categories",
        "core_user_create_users",
        "core_course_create_courses",
        "enrol_manual_enrol_users",
    ],
)
def test_an_answer_lost_after_moodle_did_the_work_does_not_do_it_twice(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, function: str
) -> None:
    world = one_class(students=3)
    post_all(moodle_sync, world.by_entity())
    lossy = AfterMoodleAnswers(fake_moodle, function, "lose")

    moodle_sync.drain(fake_moodle, transport=lossy)
    assert lossy.times == 0
    assert moodle_sync.states()["pending"] > 0
    moodle_sync.make_due()
    moodle_sync.drain(fake_moodle)

    assert created_items(fake_moodle, "core_user_create_users") == 4
    assert created_items(fake_moodle, "core_course_create_categories") == 1
    assert created_items(fake_moodle, "core_course_create_courses") == 1
    assert len(people(fake_moodle)) == 4
    course = fake_moodle.course(world.class_["Class_Short_Name"])
    assert course is not None
    assert len(fake_moodle.courses()) == 2
    for student in world.students:
        user = person(fake_moodle, student["id"])
        assert fake_moodle.course_roles(user.id, course.id) == (STUDENT_ROLE,)
    assert moodle_sync.states() == {"done": 9}
    retried = [job for job in moodle_sync.jobs() if job.attempts == 1]
    assert retried
    assert all(job.last_errorcode == "unavailable" for job in retried)


def test_a_defect_while_delivering_a_batch_is_retried_and_shown_on_its_jobs(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = one_class(students=2)
    post_all(moodle_sync, world.by_entity())

    async def broken(self: EnrolmentDelivery, batch: Batch) -> None:
        raise KeyError("student_zoho_id")

    with monkeypatch.context() as patch:
        patch.setattr(EnrolmentDelivery, "_enrollments", broken)
        moodle_sync.drain(fake_moodle)

    for job in moodle_sync.jobs("enrollments"):
        assert (job.state, job.attempts, job.last_errorcode) == ("pending", 1, "internal_error")
        assert job.last_error == "internal error: KeyError: 'student_zoho_id'"
    assert moodle_sync.states() == {"done": 5, "pending": 2}

    moodle_sync.make_due()
    moodle_sync.drain(fake_moodle)

    assert moodle_sync.states() == {"done": 7}
    assert len(fake_moodle.enrolments()) == 3
