"""Dates never keep students out of Moodle, and never end their access by surprise.

A class or enrolment whose End_Date is before its Start_Date is delivered (the course without an
end date) and listed among the warnings until Zoho corrects it. Enrolments carry no start or end
in Moodle unless the tenant asks for Zoho's dates (`enrolment_dates: zoho`, with a grace); then a
change of policy queues them again, through the mass-change guard when it would end access.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from tests.factories import (
    CLASSES,
    ENROLLMENTS,
    EnrollmentRecordFactory,
    Record,
    load_sample_college,
)
from tests.fakes.moodle import DEFAULT_SITE_URL, DEFAULT_TOKEN, FakeCourse, FakeMoodle
from tests.worker.conftest import (
    ENTITY_OF_MODULE,
    POST_ORDER,
    STUDENT_ROLE,
    MoodleSync,
    OneClass,
    day_end,
    day_start,
    modified,
    one_class,
    person,
    post_all,
)
from zoho_moodle_sync.jobs import operator
from zoho_moodle_sync.moodle import MoodleClient

INVERTED_CLASS = "5725767141565000048"
"""The sample college's class whose End_Date (2025-09-26) is before its Start_Date."""
NO_EMAIL = "5725767141565000044"
"""The sample college's student with no e-mail at all: refused, its enrolment waits."""


def active_students(fake: FakeMoodle, course: FakeCourse) -> set[int]:
    """Users Moodle counts as actively enrolled in the course now, asked as a person would."""

    async def ask() -> set[int]:
        async with httpx.AsyncClient(transport=fake.transport()) as http:
            client = MoodleClient(base_url=DEFAULT_SITE_URL, token=DEFAULT_TOKEN, http=http)
            users = await client.get_enrolled_users(course.id, onlyactive=True)
            return {user.id for user in users}

    return asyncio.run(ask())


def course_of(fake: FakeMoodle, class_: Record) -> FakeCourse:
    [course] = [c for c in fake.courses() if c.idnumber == class_["id"]]
    return course


def class_with_dates(students: int, start: date, end: date) -> OneClass:
    """One class and its enrolments, all with these Start_Date and End_Date."""
    dates: dict[str, Any] = {"Start_Date": start.isoformat(), "End_Date": end.isoformat()}
    world = one_class(students=students, **dates)
    world.enrollments = [
        EnrollmentRecordFactory(student=student, class_=world.class_, **dates)
        for student in world.students
    ]
    return world


def warnings(moodle_sync: MoodleSync, entity: str | None = None) -> list[dict[str, Any]]:
    response = moodle_sync.client.get("/v1/warnings", params={"entity": entity} if entity else {})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["warnings"]
    return found


def test_the_sample_colleges_inverted_class_is_a_course_without_end_date_with_students_active(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    college = load_sample_college()
    by_entity = {ENTITY_OF_MODULE[module]: records for module, records in college.items()}
    for entity in POST_ORDER:
        moodle_sync.post(entity, by_entity[entity])
    moodle_sync.drain(fake_moodle)

    [class_] = [c for c in college[CLASSES] if c["id"] == INVERTED_CLASS]
    course = course_of(fake_moodle, class_)
    assert (course.startdate, course.enddate) == (day_start(class_["Start_Date"]), 0)
    students = [
        person(fake_moodle, e["Enrolled_Students"]["id"]).id
        for e in college[ENROLLMENTS]
        if e["Classes"]["id"] == INVERTED_CLASS and e["Enrolled_Students"]["id"] != NO_EMAIL
    ]
    assert len(students) >= 2
    assert set(students) <= active_students(fake_moodle, course)
    for userid in students:
        enrolment = fake_moodle.enrolment(userid, course.id)
        assert enrolment is not None
        assert (enrolment.roles, enrolment.suspended, enrolment.timeend) == (
            (STUDENT_ROLE,),
            False,
            0,
        )
    listed = [w for w in warnings(moodle_sync, "classes") if w["zoho_id"] == INVERTED_CLASS]
    assert listed == [
        {
            "entity": "classes",
            "zoho_id": INVERTED_CLASS,
            "name": class_["Class_Name"],
            "field": "End_Date",
            "code": "end_before_start",
            "message": f"End_Date {class_['End_Date']} is before Start_Date "
            f"{class_['Start_Date']}; Moodle gets no end date until the dates are corrected "
            "in Zoho",
            "since": listed[0]["since"],
        }
    ]


def test_a_college_whose_classes_ended_last_year_stays_active_under_the_default_policy(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    today = date.today()
    worlds = [
        class_with_dates(4, today - timedelta(days=400), today - timedelta(days=300)),
        class_with_dates(3, today - timedelta(days=380), today - timedelta(days=390)),
    ]
    for world in worlds:
        post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)

    for world in worlds:
        course = course_of(fake_moodle, world.class_)
        students = {person(fake_moodle, s["id"]).id for s in world.students}
        assert students <= active_students(fake_moodle, course)
        for userid in students:
            enrolment = fake_moodle.enrolment(userid, course.id)
            assert enrolment is not None
            assert (enrolment.timestart, enrolment.timeend, enrolment.suspended) == (0, 0, False)
    assert moodle_sync.states() == {"done": sum(len(w.students) * 2 + 3 for w in worlds)}


def test_the_zoho_policy_sets_the_times_with_the_grace_in_the_tenants_time_zone(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    moodle_sync.set_policy(
        enrolment_dates="zoho", enrolment_grace_days=30, timezone="Europe/Istanbul"
    )
    today = date.today()
    world = class_with_dates(2, today - timedelta(days=60), today + timedelta(days=10))
    inverted = EnrollmentRecordFactory(
        student=world.students[1],
        class_=world.class_,
        Start_Date=today.isoformat(),
        End_Date=(today - timedelta(days=5)).isoformat(),
    )
    world.enrollments = [world.enrollments[0], inverted]
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)

    zone = ZoneInfo("Europe/Istanbul")

    def midnight(day: date) -> int:
        return int(datetime.combine(day, time(), zone).timestamp())

    course = course_of(fake_moodle, world.class_)
    first = fake_moodle.enrolment(person(fake_moodle, world.students[0]["id"]).id, course.id)
    second = fake_moodle.enrolment(person(fake_moodle, world.students[1]["id"]).id, course.id)
    assert first is not None
    assert second is not None
    assert (first.timestart, first.timeend) == (
        midnight(today - timedelta(days=60)),
        midnight(today + timedelta(days=10 + 30 + 1)),
    )
    # An end before the start gives no end at all: a date mistake never cuts access.
    assert (second.timestart, second.timeend) == (midnight(today), 0)
    assert {first.userid, second.userid} <= active_students(fake_moodle, course)


def test_switching_the_policy_requeues_the_enrolments_with_their_new_times(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    today = date.today()
    start, end = today - timedelta(days=20), today + timedelta(days=60)
    world = class_with_dates(3, start, end)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)
    course = course_of(fake_moodle, world.class_)

    def times() -> set[tuple[int, int]]:
        return {
            (e.timestart, e.timeend)
            for e in fake_moodle.enrolments(course.id)
            if e.roles == (STUDENT_ROLE,)
        }

    assert times() == {(0, 0)}

    moodle_sync.set_policy(enrolment_dates="zoho", enrolment_grace_days=0)
    assert moodle_sync.states("enrollments") == {"done": 3, "pending": 3}
    moodle_sync.drain(fake_moodle)
    assert times() == {(day_start(start.isoformat()), day_end(end.isoformat()))}

    # The same policy again changes nothing; another grace moves the end.
    moodle_sync.set_policy(enrolment_dates="zoho", enrolment_grace_days=0)
    assert "pending" not in moodle_sync.states("enrollments")
    moodle_sync.set_policy(enrolment_dates="zoho", enrolment_grace_days=7)
    moodle_sync.drain(fake_moodle)
    assert times() == {(day_start(start.isoformat()), day_end((end + timedelta(7)).isoformat()))}

    moodle_sync.set_policy()
    moodle_sync.drain(fake_moodle)
    assert times() == {(0, 0)}
    assert moodle_sync.states("enrollments") == {"done": 12}


def test_zoho_dates_that_would_end_many_students_access_wait_for_confirmation(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    today = date.today()
    world = class_with_dates(12, today - timedelta(days=200), today - timedelta(days=100))
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)
    course = course_of(fake_moodle, world.class_)
    students = {person(fake_moodle, s["id"]).id for s in world.students}
    assert students <= active_students(fake_moodle, course)

    moodle_sync.set_policy(enrolment_dates="zoho", enrolment_grace_days=30)
    moodle_sync.drain(fake_moodle)

    assert moodle_sync.states("enrollments") == {"done": 12, "held": 12}
    held = moodle_sync.job("enrollments", world.enrollments[0]["id"])
    assert held.wait_reason is not None
    assert held.wait_reason.startswith("held by the mass-change guard: 12 enrollments")
    assert students <= active_students(fake_moodle, course)

    with moodle_sync.db.sessions.begin() as session:
        assert operator.confirm_held(session, tenant_id=moodle_sync.tenant.id) == 12
    moodle_sync.drain(fake_moodle)

    assert not students & active_students(fake_moodle, course)
    assert moodle_sync.states("enrollments") == {"done": 24}


def test_a_corrected_date_clears_the_warning_and_reaches_moodle(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=2, Start_Date="2025-09-29", End_Date="2025-09-26")
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)
    course = course_of(fake_moodle, world.class_)
    assert course.enddate == 0
    [warning] = warnings(moodle_sync, "classes")
    assert warning["zoho_id"] == world.class_["id"]

    # Another edit that leaves the dates wrong keeps the warning and its age.
    renamed = modified(world.class_, Class_Name="Networking (evening)")
    moodle_sync.post("classes", [renamed])
    [still] = warnings(moodle_sync, "classes")
    assert (still["name"], still["since"]) == ("Networking (evening)", warning["since"])

    corrected = modified(renamed, minutes=20, End_Date="2025-12-19")
    answer = moodle_sync.post("classes", [corrected])
    moodle_sync.drain(fake_moodle)

    [result] = answer["results"]
    assert result["outcome"] == "UPDATED"
    assert "warnings" not in result
    assert warnings(moodle_sync, "classes") == []
    record = moodle_sync.client.get(f"/v1/records/classes/{world.class_['id']}").json()
    assert record["stored"]["warnings"] == []
    updated = course_of(fake_moodle, world.class_)
    assert (updated.id, updated.startdate, updated.enddate) == (
        course.id,
        day_start("2025-09-29"),
        day_end("2025-12-19"),
    )
