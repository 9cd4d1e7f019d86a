"""A worker that dies between Moodle's answer and the commit of the outcome neither loses nor
repeats a change: its jobs stay claimed until their lease runs out, then another worker
delivers them again, finds in Moodle what the first one made, and creates nothing twice."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

import pytest

from tests.fakes.moodle import FakeMoodle
from tests.worker.conftest import (
    EDITING_TEACHER_ROLE,
    STUDENT_ROLE,
    AfterMoodleAnswers,
    MoodleSync,
    OneClass,
    created_items,
    one_class,
    people,
    person,
    post_all,
)
from zoho_moodle_sync.jobs import queue


class WorkerKilled(Exception):
    pass


def assert_delivered_once(fake: FakeMoodle, world: OneClass) -> None:
    """Moodle holds the class exactly once: each user, the category, the course and each
    enrolment, made by one create or enrol each."""
    assert sorted(u.idnumber for u in people(fake)) == sorted(
        [world.teacher["id"]] + [s["id"] for s in world.students]
    )
    assert created_items(fake, "core_user_create_users") == 1 + len(world.students)
    assert created_items(fake, "core_course_create_categories") == 1
    assert created_items(fake, "core_course_create_courses") == 1
    assert [c.idnumber for c in fake.categories()] == ["", world.program["id"]]
    course = fake.course(world.class_["Class_Short_Name"])
    assert course is not None
    assert [c.id for c in fake.courses()] == [1, course.id]
    enrolled = {e.userid: e.roles for e in fake.enrolments()}
    wanted = {person(fake, world.teacher["id"]).id: (EDITING_TEACHER_ROLE,)}
    wanted |= {person(fake, s["id"]).id: (STUDENT_ROLE,) for s in world.students}
    assert enrolled == wanted
    assert not any(e.suspended for e in fake.enrolments())


@pytest.mark.parametrize("entity", ["programs", "teachers", "students", "classes", "enrollments"])
def test_a_crash_before_the_outcome_is_committed_is_delivered_again_without_duplicates(
    moodle_sync: MoodleSync,
    fake_moodle: FakeMoodle,
    monkeypatch: pytest.MonkeyPatch,
    entity: str,
) -> None:
    world = one_class(students=4)
    post_all(moodle_sync, world.by_entity())
    real_settle = queue.settle
    crashes = [entity]

    def settle_or_die(db: Any, **batch: Any) -> None:
        if crashes and crashes[0] in {job.entity for job in batch["jobs"]}:
            crashes.pop()
            raise WorkerKilled(f"killed before committing the {entity} batch")
        real_settle(db, **batch)

    monkeypatch.setattr(queue, "settle", settle_or_die)

    with pytest.raises(WorkerKilled):
        moodle_sync.drain(fake_moodle)

    assert any(c.function and c.outcome == "ok" for c in fake_moodle.calls)
    running = moodle_sync.states()["running"]
    assert running >= len(moodle_sync.jobs(entity))
    assert moodle_sync.drain(fake_moodle) == 0  # the leases still hold
    assert moodle_sync.expire_leases() == running

    moodle_sync.drain(fake_moodle)

    assert_delivered_once(fake_moodle, world)
    assert moodle_sync.states() == {"done": 11}


@pytest.mark.parametrize(
    "function",
    ["core_course_create_categories", "core_user_create_users", "enrol_manual_enrol_users"],
)
def test_a_worker_stopped_right_after_a_moodle_change_leaves_nothing_twice(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, function: str
) -> None:
    world = one_class(students=4)
    post_all(moodle_sync, world.by_entity())

    async def cancelled_drain() -> None:
        stopping = AfterMoodleAnswers(fake_moodle, function, "cancel")
        task = asyncio.create_task(moodle_sync.drain_async(fake_moodle, transport=stopping))
        with suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(cancelled_drain())

    assert [c.function for c in fake_moodle.calls][-1] == function
    assert moodle_sync.states().get("running", 0) > 0
    moodle_sync.expire_leases()

    moodle_sync.drain(fake_moodle)

    assert_delivered_once(fake_moodle, world)
    assert moodle_sync.states() == {"done": 11}
