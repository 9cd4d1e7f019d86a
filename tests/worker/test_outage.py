"""Moodle down, a proxy answering 5xx, a connection cut: the jobs retry with backoff and go
through once Moodle is back; an answer lost after Moodle did the work is not done twice; a job
that keeps failing ends dead with the last error, and can be retried."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

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
from zoho_moodle_sync.db.jobs import DeliveryPause, Job
from zoho_moodle_sync.delivery import Batch
from zoho_moodle_sync.delivery.enrolments import EnrolmentDelivery
from zoho_moodle_sync.jobs import operator


@pytest.mark.parametrize(
    ("fault", "error"),
    [(Fault("status", status=503), "HTTP 503"), (Fault("drop"), "RemoteProtocolError")],
    ids=["status", "drop"],
)
def test_past_the_outage_grace_jobs_retry_with_backoff_then_go_through(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, fault: Fault, error: str
) -> None:
    settings = moodle_settings(moodle_sync.settings, moodle_outage_grace_hours=0)
    students = StudentRecordFactory.build_batch(5, program=None)
    moodle_sync.post("students", students)
    before = utcnow()

    # Moodle stays down for the whole drain: on a slow run the breaker's first probe (after
    # 1 s) comes due inside it, and an answering Moodle would take the jobs at once.
    with fake_moodle.fault(fault):
        moodle_sync.drain(fake_moodle, settings=settings)

    assert people(fake_moodle) == []
    for job in moodle_sync.jobs("students"):
        assert (job.state, job.attempts, job.last_errorcode) == ("pending", 1, "unavailable")
        assert error in (job.last_error or "")
        # The first backoff is between half and all of worker_backoff_seconds (60 s here).
        assert before + timedelta(seconds=29) < job.due_at < utcnow() + timedelta(seconds=61)
    assert moodle_sync.drain(fake_moodle, settings=settings) == 0  # not due yet

    moodle_sync.make_due()
    moodle_sync.drain(fake_moodle, settings=settings)

    assert sorted(u.idnumber for u in people(fake_moodle)) == sorted(s["id"] for s in students)
    assert [(j.state, j.attempts) for j in moodle_sync.jobs()] == [("done", 1)] * 5


def test_backoff_grows_with_each_failed_attempt(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    settings = moodle_settings(moodle_sync.settings, moodle_outage_grace_hours=0)
    student = StudentRecordFactory(program=None)
    moodle_sync.post("students", [student])
    delays = []
    with fake_moodle.fault(Fault("status", status=502)):
        for _ in range(3):
            started = utcnow()
            moodle_sync.drain(fake_moodle, settings=settings)
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
    settings = moodle_settings(
        moodle_sync.settings, worker_max_attempts=3, moodle_outage_grace_hours=0
    )
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
    lossy = AfterMoodleAnswers(fake_moodle, function, "lose", still_down=True)

    moodle_sync.drain(fake_moodle, transport=lossy)
    assert lossy.times == 0
    assert moodle_sync.states()["pending"] > 0
    moodle_sync.end_pause_probe_wait()
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
    # A lost answer is Moodle being unreachable for a moment: no attempt is spent on it.
    assert all(job.attempts == 0 for job in moodle_sync.jobs())
    assert moodle_sync.pause() is None


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


# ---- the circuit breaker: an outage is one event, not thousands of failures ----------------


def test_a_moodle_outage_opens_the_breaker_and_no_job_spends_an_attempt(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=4)
    post_all(moodle_sync, world.by_entity())

    with fake_moodle.fault(Fault("status", status=503)):
        moodle_sync.drain(fake_moodle)
        calls = len(fake_moodle.calls)
        pause = moodle_sync.pause()
        assert pause is not None
        assert (pause.kind, pause.failures) == ("outage", 1)
        assert all((job.state, job.attempts) == ("pending", 0) for job in moodle_sync.jobs()), (
            moodle_sync.states()
        )
        status = moodle_sync.client.get("/v1/status").json()
        assert status["paused"]["default"]["kind"] == "outage"
        assert status["paused"]["default"]["reason"].startswith("Moodle cannot be reached")

        # Not probed again before its time: no call at all.
        assert moodle_sync.drain(fake_moodle) == 0
        assert len(fake_moodle.calls) == calls

        # Probed while still down: one call, and the next probe waits longer.
        moodle_sync.end_pause_probe_wait()
        moodle_sync.drain(fake_moodle)
        assert [c.function for c in fake_moodle.calls[calls:]] == ["core_webservice_get_site_info"]
        again = moodle_sync.pause()
        assert again is not None
        assert again.failures == 2
        assert again.probe_at - utcnow() > timedelta(seconds=1)

    moodle_sync.end_pause_probe_wait()
    moodle_sync.drain(fake_moodle)

    assert moodle_sync.pause() is None
    assert moodle_sync.states() == {"done": 11}
    assert all(job.attempts == 0 for job in moodle_sync.jobs())
    assert len(people(fake_moodle)) == 5


def test_after_a_ten_minute_outage_everything_held_back_goes_at_once(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=6)
    post_all(moodle_sync, world.by_entity())
    with fake_moodle.fault(Fault("drop")):
        moodle_sync.drain(fake_moodle)
        for _ in range(8):  # probes during ten minutes, each waiting longer
            moodle_sync.end_pause_probe_wait()
            moodle_sync.drain(fake_moodle)
    pause = moodle_sync.pause()
    assert pause is not None
    # The probes never wait longer than MOODLE_PROBE_MAX_SECONDS (30 s by default).
    assert pause.probe_at - utcnow() <= timedelta(seconds=31)
    with moodle_sync.db.sessions.begin() as session:
        session.execute(update(DeliveryPause).values(paused_at=utcnow() - timedelta(minutes=10)))
        # Some jobs were in a backoff from before (a passing error): they go too.
        session.execute(update(Job).values(due_at=utcnow() + timedelta(hours=1)))

    moodle_sync.end_pause_probe_wait()
    moodle_sync.drain(fake_moodle)

    assert moodle_sync.states() == {"done": 15}
    assert all(job.attempts == 0 for job in moodle_sync.jobs())


def test_an_outage_longer_than_its_grace_spends_attempts_again(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    student = StudentRecordFactory(program=None)
    moodle_sync.post("students", [student])
    with fake_moodle.fault(Fault("status", status=502)):
        moodle_sync.drain(fake_moodle)
        assert moodle_sync.job("students", student["id"]).attempts == 0
        with moodle_sync.db.sessions.begin() as session:
            session.execute(update(DeliveryPause).values(paused_at=utcnow() - timedelta(hours=25)))
        moodle_sync.make_due()
        moodle_sync.drain(fake_moodle)

    job = moodle_sync.job("students", student["id"])
    assert (job.state, job.attempts, job.last_errorcode) == ("pending", 1, "unavailable")
