"""A student's status drives their Moodle account: a withdrawn (blocked, frozen) student is
suspended, and reactivated when back to Active; their enrolments are left as they are."""

from __future__ import annotations

from tests.fakes.moodle import FakeMoodle
from tests.worker.conftest import STUDENT_ROLE, MoodleSync, modified, one_class, person, post_all


def test_a_withdrawn_student_is_suspended_and_reactivated_when_active_again(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=2)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)
    leaving, staying = world.students
    course = fake_moodle.course(world.class_["Class_Short_Name"])
    assert course is not None
    user = person(fake_moodle, leaving["id"])
    assert not user.suspended

    withdrawn = modified(leaving, Status="Withdraw")
    assert moodle_sync.post("students", [withdrawn])["summary"]["UPDATED"] == 1
    moodle_sync.drain(fake_moodle)

    assert person(fake_moodle, leaving["id"]).suspended
    assert not person(fake_moodle, staying["id"]).suspended
    link = moodle_sync.link("students", leaving["id"])
    assert link is not None
    assert (link.moodle_id, link.state) == (user.id, "suspended")
    enrolment = fake_moodle.enrolment(user.id, course.id)
    assert enrolment is not None
    assert not enrolment.suspended
    assert enrolment.roles == (STUDENT_ROLE,)

    moodle_sync.post("students", [modified(withdrawn, Status="Active")])
    moodle_sync.drain(fake_moodle)

    back = person(fake_moodle, leaving["id"])
    assert (back.id, back.suspended) == (user.id, False)
    link = moodle_sync.link("students", leaving["id"])
    assert link is not None
    assert link.state == "active"
    assert len([u for u in fake_moodle.users() if u.idnumber == leaving["id"]]) == 1
    assert moodle_sync.states("students") == {"done": 4}


def test_a_student_new_in_moodle_with_a_suspending_status_is_created_suspended(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=1)
    blocked = {**world.students[0], "Status": "Blocked"}
    moodle_sync.post("students", [blocked])

    moodle_sync.drain(fake_moodle)

    user = person(fake_moodle, blocked["id"])
    assert user.suspended
    # No `suspended` on create: created, then suspended by an update.
    functions = [c.function for c in fake_moodle.calls]
    assert functions[-2:] == ["core_user_create_users", "core_user_update_users"]
    assert moodle_sync.job("students", blocked["id"]).state == "done"
