"""The mass-change guard: removals that would suspend or unenrol more than a set share of a
tenant's enrolments (or suspend that share of its users) at once are held until an operator
confirms them; a handful goes through."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from tests.factories import StudentRecordFactory
from tests.fakes.moodle import FakeMoodle
from tests.worker.conftest import MoodleSync, modified, one_class, people, person, post_all
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import Job
from zoho_moodle_sync.jobs import operator


def test_removing_many_enrolments_at_once_waits_for_confirmation(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=21)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)
    course = fake_moodle.course(world.class_["Class_Short_Name"])
    assert course is not None

    def suspended() -> set[int]:
        return {e.userid for e in fake_moodle.enrolments(course.id) if e.suspended}

    # One removal among 21 active enrolments: not a mass change.
    first = world.enrollments[0]
    moodle_sync.delete("enrollments", first["id"])
    moodle_sync.drain(fake_moodle)
    assert moodle_sync.job("enrollments", first["id"]).state == "done"
    assert suspended() == {person(fake_moodle, world.students[0]["id"]).id}

    # Fifteen of the 20 left at once: held, Moodle untouched.
    many = world.enrollments[1:16]
    for enrollment in many:
        moodle_sync.delete("enrollments", enrollment["id"])
    moodle_sync.drain(fake_moodle)

    for enrollment in many:
        job = moodle_sync.job("enrollments", enrollment["id"])
        assert (job.state, job.attempts) == ("held", 0)
        assert job.wait_reason is not None
        assert job.wait_reason.startswith(
            "held by the mass-change guard: 15 enrollments would be suspended or removed at once"
        )
    assert suspended() == {person(fake_moodle, world.students[0]["id"]).id}
    assert moodle_sync.drain(fake_moodle) == 0

    with moodle_sync.db.sessions.begin() as session:
        assert operator.confirm_held(session, tenant_id=moodle_sync.tenant.id) == 15
    moodle_sync.drain(fake_moodle)

    assert suspended() == {person(fake_moodle, s["id"]).id for s in world.students[:16]}
    assert moodle_sync.states("enrollments") == {"done": 21 + 16}
    assert len(fake_moodle.enrolments(course.id)) == 22


def test_withdrawing_many_students_at_once_waits_for_confirmation(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=20)
    moodle_sync.post("students", world.students)
    moodle_sync.drain(fake_moodle)

    leaving = world.students[:12]
    moodle_sync.post("students", [modified(s, Status="Withdraw") for s in leaving])
    moodle_sync.drain(fake_moodle)

    assert not any(person(fake_moodle, s["id"]).suspended for s in world.students)
    assert moodle_sync.states("students") == {"done": 20, "held": 12}

    with moodle_sync.db.sessions.begin() as session:
        operator.confirm_held(session, tenant_id=moodle_sync.tenant.id)
    moodle_sync.drain(fake_moodle)

    assert [person(fake_moodle, s["id"]).suspended for s in world.students] == [True] * 12 + [
        False
    ] * 8
    assert moodle_sync.states("students") == {"done": 32}


def test_a_mass_removal_arriving_record_by_record_is_held_too(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=20)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)

    for enrollment in world.enrollments[:15]:
        moodle_sync.delete("enrollments", enrollment["id"])
        moodle_sync.drain(fake_moodle)

    assert moodle_sync.states("enrollments").get("held", 0) > 0


def test_withdrawals_are_judged_against_every_student_even_while_delivery_lags(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    students = StudentRecordFactory.build_batch(200, program=None)
    moodle_sync.post("students", students)
    # Delivery lags: only the first 49 students have reached Moodle so far.
    delivered = {s["id"] for s in students[:49]}
    later = utcnow() + timedelta(hours=1)
    with moodle_sync.db.sessions.begin() as session:
        session.execute(update(Job).where(Job.zoho_id.not_in(delivered)).values(due_at=later))
    moodle_sync.drain(fake_moodle)
    assert len(people(fake_moodle)) == 49

    # Ten of 200 (5 %) withdraw: an ordinary change, however few have reached Moodle.
    withdrawn = students[:10]
    moodle_sync.post("students", [modified(s, Status="Withdraw") for s in withdrawn])
    moodle_sync.drain(fake_moodle)

    assert {s["id"] for s in withdrawn} == {u.idnumber for u in people(fake_moodle) if u.suspended}
    assert "held" not in moodle_sync.states()

    # Thirty more at once (15 % of the students) is a mass change: held.
    many = students[10:40]
    moodle_sync.post("students", [modified(s, Status="Withdraw") for s in many])
    moodle_sync.drain(fake_moodle)

    assert moodle_sync.states()["held"] == 30
    assert len([u for u in people(fake_moodle) if u.suspended]) == 10
