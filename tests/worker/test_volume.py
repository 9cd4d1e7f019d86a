"""Volume: a thousand students go through calls that stay under Moodle's max_input_vars (PHP
silently drops what is past it), and enrolling a thousand new students in a class takes a
handful of calls, not thousands."""

from __future__ import annotations

from collections import Counter

from tests.factories import EnrollmentRecordFactory, StudentRecordFactory
from tests.fakes.moodle import FakeMoodle
from tests.worker.conftest import (
    STUDENT_ROLE,
    MoodleSync,
    created_items,
    moodle_settings,
    one_class,
    people,
    post_all,
)


def test_a_thousand_students_go_through_calls_under_max_input_vars(
    moodle_sync: MoodleSync,
) -> None:
    fake = FakeMoodle(max_input_vars=1000)
    settings = moodle_settings(
        moodle_sync.settings, moodle_max_input_vars=1000, worker_batch_size=500
    )
    students = StudentRecordFactory.build_batch(1000, program=None)
    moodle_sync.post("students", students)

    moodle_sync.drain(fake, settings=settings)

    assert Counter(u.idnumber for u in people(fake)) == Counter(s["id"] for s in students)
    assert created_items(fake, "core_user_create_users") == 1000
    assert all(call.outcome == "ok" for call in fake.calls), Counter(c.outcome for c in fake.calls)
    assert all(call.dropped_vars == 0 for call in fake.calls)
    assert max(call.post_vars for call in fake.calls) <= 1000
    assert moodle_sync.states() == {"done": 1000}


def test_enrolling_a_thousand_new_students_in_a_class_takes_a_handful_of_calls(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    # A backfill's settings: the whole queue in one claim, as many items per call as Moodle
    # takes. (With the defaults, 100 items per call, the same takes 65 calls.)
    settings = moodle_settings(moodle_sync.settings, worker_batch_size=1000, worker_claim_size=5000)
    world = one_class(students=0)
    students = StudentRecordFactory.build_batch(1000, program=world.program)
    enrollments = [EnrollmentRecordFactory(student=s, class_=world.class_) for s in students]
    post_all(moodle_sync, {**world.by_entity(), "students": students, "enrollments": enrollments})

    moodle_sync.drain(fake_moodle, settings=settings)

    course = fake_moodle.course(world.class_["Class_Short_Name"])
    assert course is not None
    enrolled = [e for e in fake_moodle.enrolments(course.id) if e.roles == (STUDENT_ROLE,)]
    assert len(enrolled) == 1000
    assert all(call.outcome == "ok" and call.dropped_vars == 0 for call in fake_moodle.calls)
    functions = Counter(call.function for call in fake_moodle.calls)
    assert sum(functions.values()) <= 20, functions
    assert moodle_sync.states() == {"done": 2003}
