"""A change in Zoho is an update in Moodle, never a second object: the same user, course and
enrolment carry the new values. What an administrator deleted in Moodle comes back."""

from __future__ import annotations

import asyncio

import httpx

from tests.fakes.moodle import DEFAULT_SITE_URL, DEFAULT_TOKEN, FakeMoodle
from tests.worker.conftest import (
    STUDENT_ROLE,
    MoodleSync,
    day_end,
    day_start,
    modified,
    one_class,
    people,
    person,
    post_all,
)
from zoho_moodle_sync.moodle import MoodleClient


def test_changes_in_zoho_update_the_same_moodle_objects(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    moodle_sync.set_policy(enrolment_dates="zoho", enrolment_grace_days=0)
    world = one_class(students=2)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)
    student = world.students[0]
    user = person(fake_moodle, student["id"])
    course = fake_moodle.course(world.class_["Class_Short_Name"])
    assert course is not None

    moodle_sync.post(
        "students",
        [
            modified(
                student,
                Last_Name="Haddad-Smith",
                Academic_Email="new.address@students.example.edu",
            )
        ],
    )
    moodle_sync.post(
        "classes",
        [
            modified(
                world.class_,
                Class_Name="Renamed class",
                Class_Short_Name="RENAMED-1",
                Start_Date="2025-10-01",
                End_Date="2026-01-31",
            )
        ],
    )
    moodle_sync.post(
        "enrollments",
        [modified(world.enrollments[0], Start_Date="2025-10-06", End_Date="2025-12-19")],
    )
    moodle_sync.drain(fake_moodle)

    changed = person(fake_moodle, student["id"])
    assert changed.id == user.id
    assert (changed.lastname, changed.email) == ("Haddad-Smith", "new.address@students.example.edu")
    assert len(people(fake_moodle)) == 3
    renamed = fake_moodle.course("RENAMED-1")
    assert renamed is not None
    assert renamed.id == course.id
    assert (renamed.fullname, renamed.startdate, renamed.enddate) == (
        "Renamed class",
        day_start("2025-10-01"),
        day_end("2026-01-31"),
    )
    assert len(fake_moodle.courses()) == 2
    enrolment = fake_moodle.enrolment(user.id, course.id)
    assert enrolment is not None
    assert (enrolment.roles, enrolment.timestart, enrolment.timeend) == (
        (STUDENT_ROLE,),
        day_start("2025-10-06"),
        day_end("2025-12-19"),
    )
    assert not enrolment.suspended


def delete_in_moodle(fake: FakeMoodle, userid: int) -> None:
    """An administrator deletes the account (core_user_delete_users also unenrols it)."""

    async def delete() -> None:
        async with httpx.AsyncClient(transport=fake.transport()) as http:
            client = MoodleClient(base_url=DEFAULT_SITE_URL, token=DEFAULT_TOKEN, http=http)
            await client.call("core_user_delete_users", {"userids": [userid]})

    asyncio.run(delete())


def test_a_moodle_account_deleted_by_an_administrator_is_created_again(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=2)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)
    student = world.students[0]
    deleted = person(fake_moodle, student["id"])
    delete_in_moodle(fake_moodle, deleted.id)

    moodle_sync.post("students", [modified(student, Last_Name="Returned")])
    moodle_sync.drain(fake_moodle)

    again = person(fake_moodle, student["id"])
    assert again.id != deleted.id
    assert (again.username, again.lastname) == (student["Name"].lower(), "Returned")
    link = moodle_sync.link("students", student["id"])
    assert link is not None
    assert (link.moodle_id, link.adopted) == (again.id, False)
    assert moodle_sync.job("students", student["id"]).state == "done"


def test_a_moodle_account_created_again_gets_its_enrolments_back(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=2)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)
    student = world.students[0]
    course = fake_moodle.course(world.class_["Class_Short_Name"])
    assert course is not None
    delete_in_moodle(fake_moodle, person(fake_moodle, student["id"]).id)

    moodle_sync.post("students", [modified(student, Last_Name="Returned")])
    moodle_sync.drain(fake_moodle)

    enrolment = fake_moodle.enrolment(person(fake_moodle, student["id"]).id, course.id)
    assert enrolment is not None
    assert enrolment.roles == (STUDENT_ROLE,)
