"""The sample college reaches Moodle whatever order its records arrive in: one Moodle user per
valid student and teacher, a category per programme, a course per class with its teacher, an
enrolment per valid enrollment, and nothing twice. Delivering again changes nothing."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from tests.factories import (
    CLASSES,
    ENROLLMENTS,
    PROGRAMS,
    STUDENTS,
    TEACHERS,
    Record,
    load_sample_college,
)
from tests.fakes.moodle import FakeMoodle
from tests.worker.conftest import (
    EDITING_TEACHER_ROLE,
    ENTITY_OF_MODULE,
    SITE_COURSE_ID,
    STUDENT_ROLE,
    MoodleSync,
    day_end,
    day_start,
    people,
    person,
    write_calls,
)
from zoho_moodle_sync.jobs import queue

SUSPENDED_STATUSES = ("Withdraw", "Blocked", "Freezed")
INVALID_IN_SAMPLE = {("students", "5725767141565000044")}  # neither Email nor Academic_Email
NOT_DELIVERED = INVALID_IN_SAMPLE | {
    ("enrollments", "5725767141565000142"),  # waits for that student's correction
}
ENDS_BEFORE_IT_STARTS = "5725767141565000048"
"""A class whose End_Date is before its Start_Date: a course with no end date, all its
students enrolled (with a warning on the record)."""


@dataclass(frozen=True)
class ExpectedUser:
    username: str
    email: str
    firstname: str
    lastname: str
    suspended: bool


def expected_users(college: dict[str, list[Record]]) -> dict[str, ExpectedUser]:
    """idnumber (the Zoho id) → the Moodle user each valid student and teacher should be."""
    users = {}
    for student in college[STUDENTS]:
        if ("students", student["id"]) in INVALID_IN_SAMPLE:
            continue
        users[student["id"]] = ExpectedUser(
            username=student["Name"].lower(),
            email=student["Academic_Email"] or student["Email"],
            firstname=student["First_Name"].strip(),
            lastname=student["Last_Name"].strip(),
            suspended=student["Status"] in SUSPENDED_STATUSES,
        )
    for teacher in college[TEACHERS]:
        email = teacher["Academic_Email"] or teacher["Email"]
        *first, last = teacher["Name"].split()
        users[teacher["id"]] = ExpectedUser(
            username=email.lower(),
            email=email,
            firstname=" ".join(first),
            lastname=last,
            suspended=False,
        )
    return users


def post_in_order(
    moodle_sync: MoodleSync, fake: FakeMoodle, college: dict[str, list[Record]], seed: int
) -> set[tuple[str, str]]:
    """Post every record on its own, in a shuffled order across entities, with workers run at
    random moments in between; the records the service found INVALID."""
    rng = random.Random(seed)
    items = [
        (ENTITY_OF_MODULE[module], record)
        for module, records in college.items()
        for record in records
    ]
    rng.shuffle(items)
    invalid: set[tuple[str, str]] = set()
    for entity, record in items:
        answer = moodle_sync.post(entity, [record])
        for result in answer["results"] + answer["released"]:
            if result["outcome"] == "INVALID":
                invalid.add((result.get("entity", entity), result["zoho_id"]))
        if rng.random() < 0.3:
            moodle_sync.drain(fake)
    moodle_sync.drain(fake)
    return invalid


def assert_college_in_moodle(fake: FakeMoodle, college: dict[str, list[Record]]) -> None:
    users = expected_users(college)
    assert sorted(user.idnumber for user in people(fake)) == sorted(users)
    for idnumber, want in users.items():
        user = person(fake, idnumber)
        got = (user.username, user.email, user.firstname, user.lastname, user.suspended)
        assert got == (want.username, want.email, want.firstname, want.lastname, want.suspended)

    categories = {category.idnumber: category for category in fake.categories()}
    for program in college[PROGRAMS]:
        assert categories[program["id"]].name == program["Product_Name"]
        assert categories[program["id"]].parent == 0
    assert len(fake.categories()) == 1 + len(college[PROGRAMS])

    valid_classes = [c for c in college[CLASSES] if ("classes", c["id"]) not in NOT_DELIVERED]
    courses = {course.idnumber: course for course in fake.courses() if course.id != SITE_COURSE_ID}
    assert sorted(courses) == sorted(c["id"] for c in valid_classes)
    wanted_enrolments: dict[tuple[int, int], tuple[tuple[int, ...], int, int]] = {}
    for class_ in valid_classes:
        course = courses[class_["id"]]
        assert course.fullname == class_["Class_Name"]
        assert course.shortname == (class_["Class_Short_Name"] or class_["Class_Name"])
        assert course.categoryid == categories[class_["BTEC_Program"]["id"]].id
        inverted = class_["End_Date"] < class_["Start_Date"]
        assert inverted == (class_["id"] == ENDS_BEFORE_IT_STARTS)
        assert (course.startdate, course.enddate) == (
            day_start(class_["Start_Date"]),
            0 if inverted else day_end(class_["End_Date"]),
        )
        if class_["Teacher"]:
            teacher = person(fake, class_["Teacher"]["id"])
            wanted_enrolments[(teacher.id, course.id)] = ((EDITING_TEACHER_ROLE,), 0, 0)
    for enrollment in college[ENROLLMENTS]:
        if ("enrollments", enrollment["id"]) in NOT_DELIVERED:
            continue
        student = person(fake, enrollment["Enrolled_Students"]["id"])
        course = courses[enrollment["Classes"]["id"]]
        # Access follows Zoho's statuses, not the calendar: no start or end by default.
        wanted_enrolments[(student.id, course.id)] = ((STUDENT_ROLE,), 0, 0)
    got_enrolments = {
        (e.userid, e.courseid): (e.roles, e.timestart, e.timeend) for e in fake.enrolments()
    }
    assert got_enrolments == wanted_enrolments
    assert not any(e.suspended for e in fake.enrolments())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sample_college_converges_whatever_the_order(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, seed: int
) -> None:
    college = load_sample_college()

    invalid = post_in_order(moodle_sync, fake_moodle, college, seed)

    assert invalid == INVALID_IN_SAMPLE
    assert_college_in_moodle(fake_moodle, college)
    assert moodle_sync.states() == {"done": 28}
    [inverted] = [c for c in fake_moodle.courses() if c.idnumber == ENDS_BEFORE_IT_STARTS]
    students_of_inverted = [
        e
        for e in college[ENROLLMENTS]
        if e["Classes"]["id"] == ENDS_BEFORE_IT_STARTS
        and ("enrollments", e["id"]) not in NOT_DELIVERED
    ]
    enrolled = fake_moodle.enrolments(inverted.id)
    assert len([e for e in enrolled if e.roles == (STUDENT_ROLE,)]) == len(students_of_inverted)
    assert len(students_of_inverted) >= 2
    assert not any(call.outcome != "ok" for call in fake_moodle.calls)


def test_delivering_again_makes_no_write_call(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    college = load_sample_college()
    post_in_order(moodle_sync, fake_moodle, college, seed=4)
    calls = len(fake_moodle.calls)
    before = write_calls(fake_moodle)

    assert moodle_sync.drain(fake_moodle) == 0
    for module, records in college.items():
        answer = moodle_sync.post(ENTITY_OF_MODULE[module], records)
        assert answer["summary"]["NEW"] == answer["summary"]["UPDATED"] == 0
    assert moodle_sync.drain(fake_moodle) == 0
    assert len(fake_moodle.calls) == calls

    # Every record queued again, as an operator's full resync would: Moodle already holds
    # all of it, so nothing is written.
    with moodle_sync.db.sessions.begin() as session:
        for module, records in college.items():
            queue.enqueue_delivery(
                session,
                tenant_id=moodle_sync.tenant.id,
                entity=ENTITY_OF_MODULE[module],
                zoho_ids=[r["id"] for r in records],
            )
    settled = moodle_sync.drain(fake_moodle)

    assert settled == 30  # the 28 stored records, and 2 not stored (refused, or parked)
    assert moodle_sync.states() == {"done": 58}
    assert write_calls(fake_moodle) == before
    assert_college_in_moodle(fake_moodle, college)
