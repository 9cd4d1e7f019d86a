"""What leaves Zoho leaves Moodle by the tenant's removal policy: `suspend` keeps the enrolment
(and the grades) but suspends it, `unenrol` removes it, `keep` leaves it. This holds for a
deleted enrollment, an enrollment moved to another class, and a class teacher who is replaced
or removed. Deletions come through DELETE /v1/sync/{entity}/{id}."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.factories import ClassRecordFactory, TeacherRecordFactory, lookup
from tests.fakes.moodle import FakeEnrolment, FakeMoodle
from tests.worker.conftest import (
    EDITING_TEACHER_ROLE,
    STUDENT_ROLE,
    MoodleSync,
    modified,
    one_class,
    person,
    post_all,
)

POLICIES = ["suspend", "unenrol", "keep"]


def after_policy(policy: str, before: FakeEnrolment) -> FakeEnrolment | None:
    """What an enrolment the service made becomes under the removal policy."""
    if policy == "suspend":
        return replace(before, suspended=True)
    if policy == "unenrol":
        return None
    return before


@pytest.mark.parametrize("policy", POLICIES)
def test_a_deleted_enrollment_follows_the_removal_policy(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, policy: str
) -> None:
    # Zoho's dates on the enrolments, to see that a suspended enrolment keeps them.
    moodle_sync.set_policy(removal_policy=policy, enrolment_dates="zoho")
    world = one_class(students=3)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)
    course = fake_moodle.course(world.class_["Class_Short_Name"])
    assert course is not None
    leaving = person(fake_moodle, world.students[0]["id"])
    before = {e.userid: e for e in fake_moodle.enrolments(course.id)}
    assert before[leaving.id].roles == (STUDENT_ROLE,)
    assert before[leaving.id].timestart > 0

    answer = moodle_sync.delete("enrollments", world.enrollments[0]["id"])
    assert answer["results"][0]["outcome"] == "DELETED"
    moodle_sync.drain(fake_moodle)

    after = {e.userid: e for e in fake_moodle.enrolments(course.id)}
    assert after.get(leaving.id) == after_policy(policy, before[leaving.id])
    if policy == "unenrol":
        assert fake_moodle.course_roles(leaving.id, course.id) == ()
    assert {k: v for k, v in after.items() if k != leaving.id} == {
        k: v for k, v in before.items() if k != leaving.id
    }
    job = moodle_sync.job("enrollments", world.enrollments[0]["id"])
    assert (job.action, job.state) == ("remove", "done")
    assert not person(fake_moodle, world.students[0]["id"]).suspended


@pytest.mark.parametrize("policy", POLICIES)
def test_an_enrollment_moved_to_another_class_leaves_the_old_course_by_the_policy(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, policy: str
) -> None:
    moodle_sync.set_policy(removal_policy=policy)
    world = one_class(students=1)
    other = ClassRecordFactory(unit=world.unit, teacher=world.teacher)
    post_all(moodle_sync, {**world.by_entity(), "classes": [world.class_, other]})
    moodle_sync.drain(fake_moodle)
    old_course = fake_moodle.course(world.class_["Class_Short_Name"])
    new_course = fake_moodle.course(other["Class_Short_Name"])
    assert old_course is not None
    assert new_course is not None
    student = person(fake_moodle, world.students[0]["id"])
    before = fake_moodle.enrolment(student.id, old_course.id)
    assert before is not None

    moved = modified(world.enrollments[0], Classes=lookup(other))
    assert moodle_sync.post("enrollments", [moved])["summary"]["UPDATED"] == 1
    moodle_sync.drain(fake_moodle)

    assert fake_moodle.enrolment(student.id, old_course.id) == after_policy(policy, before)
    now = fake_moodle.enrolment(student.id, new_course.id)
    assert now is not None
    assert (now.roles, now.suspended) == ((STUDENT_ROLE,), False)
    assert moodle_sync.job("enrollments", world.enrollments[0]["id"]).state == "done"


@pytest.mark.parametrize("policy", POLICIES)
def test_a_replaced_class_teacher_follows_the_removal_policy(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, policy: str
) -> None:
    moodle_sync.set_policy(removal_policy=policy)
    world = one_class(students=2)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)
    course = fake_moodle.course(world.class_["Class_Short_Name"])
    assert course is not None
    old = person(fake_moodle, world.teacher["id"])
    before = fake_moodle.enrolment(old.id, course.id)
    assert before is not None
    assert before.roles == (EDITING_TEACHER_ROLE,)
    students_before = [e for e in fake_moodle.enrolments(course.id) if e.userid != old.id]

    replacement = TeacherRecordFactory()
    moodle_sync.post("teachers", [replacement])
    changed = modified(world.class_, Teacher=lookup(replacement))
    assert moodle_sync.post("classes", [changed])["summary"]["UPDATED"] == 1
    moodle_sync.drain(fake_moodle)

    new = person(fake_moodle, replacement["id"])
    assert fake_moodle.enrolment(old.id, course.id) == after_policy(policy, before)
    now = fake_moodle.enrolment(new.id, course.id)
    assert now is not None
    assert (now.roles, now.suspended) == ((EDITING_TEACHER_ROLE,), False)
    assert [e for e in fake_moodle.enrolments(course.id) if e.userid not in (old.id, new.id)] == (
        students_before
    )
    link = moodle_sync.link("classes", world.class_["id"])
    assert link is not None
    assert link.detail == {"teacher_userid": new.id}
    assert moodle_sync.job("classes", world.class_["id"]).state == "done"

    # Back to the first teacher: enrolled again as editing teacher, and active.
    moodle_sync.post("classes", [modified(changed, Teacher=lookup(world.teacher))])
    moodle_sync.drain(fake_moodle)

    again = fake_moodle.enrolment(old.id, course.id)
    assert again is not None
    assert (again.roles, again.suspended) == ((EDITING_TEACHER_ROLE,), False)
    assert fake_moodle.enrolment(new.id, course.id) == after_policy(policy, now)


def test_a_class_left_without_teacher_removes_the_teacher_by_the_policy(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=1)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)
    course = fake_moodle.course(world.class_["Class_Short_Name"])
    assert course is not None
    teacher = person(fake_moodle, world.teacher["id"])
    before = fake_moodle.enrolment(teacher.id, course.id)
    assert before is not None

    moodle_sync.post("classes", [modified(world.class_, Teacher=None)])
    moodle_sync.drain(fake_moodle)

    assert fake_moodle.enrolment(teacher.id, course.id) == replace(before, suspended=True)
    link = moodle_sync.link("classes", world.class_["id"])
    assert link is not None
    assert link.detail == {"teacher_userid": None}
