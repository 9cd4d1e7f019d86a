"""Order in Moodle: a category before its courses, users and courses before enrolments. A job
whose prerequisite has no Moodle id yet waits (with the reason) and goes on by itself once the
prerequisite is delivered, with nothing posted again."""

from __future__ import annotations

from tests.fakes.moodle import FakeMoodle
from tests.worker.conftest import (
    EDITING_TEACHER_ROLE,
    STUDENT_ROLE,
    MoodleSync,
    one_class,
    person,
    post_all,
)


def test_enrollments_wait_for_their_students_then_complete(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=3)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.postpone("students")  # as if their first attempt had failed

    moodle_sync.drain(fake_moodle)

    course = fake_moodle.course(world.class_["Class_Short_Name"])
    assert course is not None
    teacher = person(fake_moodle, world.teacher["id"])
    assert [(e.userid, e.roles) for e in fake_moodle.enrolments()] == [
        (teacher.id, (EDITING_TEACHER_ROLE,))
    ]
    for student, enrollment in zip(world.students, world.enrollments, strict=True):
        job = moodle_sync.job("enrollments", enrollment["id"])
        assert (job.state, job.attempts) == ("waiting", 0)
        assert job.wait_reason == f"student {student['id']} is not in Moodle yet"

    moodle_sync.make_due("students")
    moodle_sync.drain(fake_moodle)

    for student in world.students:
        user = person(fake_moodle, student["id"])
        assert fake_moodle.course_roles(user.id, course.id) == (STUDENT_ROLE,)
    assert moodle_sync.states() == {"done": 9}
    assert all(job.wait_reason is None for job in moodle_sync.jobs("enrollments"))


def test_a_class_waits_for_its_programme_and_its_enrollments_for_the_class(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=2)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.postpone("programs")

    moodle_sync.drain(fake_moodle)

    assert fake_moodle.course(world.class_["Class_Short_Name"]) is None
    class_job = moodle_sync.job("classes", world.class_["id"])
    assert class_job.state == "waiting"
    assert class_job.wait_reason == f"programme {world.program['id']} is not in Moodle yet"
    for enrollment in world.enrollments:
        job = moodle_sync.job("enrollments", enrollment["id"])
        assert job.state == "waiting"
        assert job.wait_reason == f"class {world.class_['id']} is not in Moodle yet"
    assert fake_moodle.enrolments() == []

    moodle_sync.make_due("programs")
    moodle_sync.drain(fake_moodle)

    course = fake_moodle.course(world.class_["Class_Short_Name"])
    assert course is not None
    category = next(c for c in fake_moodle.categories() if c.idnumber == world.program["id"])
    assert course.categoryid == category.id
    assert len(fake_moodle.enrolments(course.id)) == 3
    assert moodle_sync.states() == {"done": 7}


def test_a_course_goes_ahead_while_its_teacher_is_not_in_moodle_yet(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=2)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.postpone("teachers")

    moodle_sync.drain(fake_moodle)

    course = fake_moodle.course(world.class_["Class_Short_Name"])
    assert course is not None
    assert {e.roles for e in fake_moodle.enrolments(course.id)} == {(STUDENT_ROLE,)}
    class_job = moodle_sync.job("classes", world.class_["id"])
    assert class_job.state == "waiting"
    assert class_job.wait_reason == f"teacher {world.teacher['id']} is not in Moodle yet"

    moodle_sync.make_due("teachers")
    moodle_sync.drain(fake_moodle)

    teacher = person(fake_moodle, world.teacher["id"])
    assert fake_moodle.course_roles(teacher.id, course.id) == (EDITING_TEACHER_ROLE,)
    assert [c.id for c in fake_moodle.courses()] == [1, course.id]
    assert moodle_sync.states() == {"done": 7}
