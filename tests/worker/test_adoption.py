"""Never a duplicate: users, categories and courses that already exist in Moodle are adopted
(found by idnumber, then username, then e-mail; by idnumber, then short name) instead of being
created a second time, and a match that is not clear-cut stops with a reason."""

from __future__ import annotations

from tests.factories import StudentRecordFactory, TeacherRecordFactory
from tests.fakes.moodle import FakeMoodle
from tests.worker.conftest import (
    EDITING_TEACHER_ROLE,
    STUDENT_ROLE,
    MoodleSync,
    moodle_settings,
    one_class,
    people,
    person,
    post_all,
)


def test_users_already_in_moodle_are_adopted_by_idnumber_username_or_email(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    by_idnumber, by_username, by_email, new = StudentRecordFactory.build_batch(4, program=None)
    teacher = TeacherRecordFactory(Academic_Email="Omar.Haddad@Staff.Example.edu")
    seeded = {
        by_idnumber["id"]: fake_moodle.add_user(
            "legacy.account", email="legacy@old.example.org", idnumber=by_idnumber["id"]
        ),
        by_username["id"]: fake_moodle.add_user(by_username["Name"].lower(), email="x@y.example"),
        by_email["id"]: fake_moodle.add_user("s.by.email", email=by_email["Academic_Email"]),
        teacher["id"]: fake_moodle.add_user("ohaddad", email="omar.haddad@staff.example.edu"),
    }

    moodle_sync.post("students", [by_idnumber, by_username, by_email, new])
    moodle_sync.post("teachers", [teacher])
    moodle_sync.drain(fake_moodle)

    assert len(people(fake_moodle)) == 5
    for zoho_id, existing in seeded.items():
        user = person(fake_moodle, zoho_id)
        assert user.id == existing.id
        # An adopted account keeps its username; the rest follows Zoho.
        assert user.username == existing.username
        link = moodle_sync.link("students" if zoho_id != teacher["id"] else "teachers", zoho_id)
        assert link is not None
        assert (link.moodle_id, link.adopted) == (existing.id, True)
    assert person(fake_moodle, by_idnumber["id"]).email == by_idnumber["Academic_Email"]
    assert person(fake_moodle, new["id"]).username == new["Name"].lower()
    assert moodle_sync.states() == {"done": 5}


def test_a_user_whose_email_differs_only_in_case_is_adopted(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    """Moodle refuses a second account with the same e-mail whatever its case, and
    core_user_get_users_by_field searches e-mail case-sensitively."""
    student = StudentRecordFactory(program=None)
    existing = fake_moodle.add_user("mixed.case", email=student["Academic_Email"].upper())

    moodle_sync.post("students", [student])
    moodle_sync.drain(fake_moodle)

    job = moodle_sync.job("students", student["id"])
    assert (job.state, job.last_error) == ("done", None)
    assert [user.id for user in people(fake_moodle)] == [existing.id]
    assert person(fake_moodle, student["id"]).id == existing.id


def test_two_moodle_users_with_one_idnumber_stop_that_record_only(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    twice, fine = StudentRecordFactory.build_batch(2, program=None)
    first = fake_moodle.add_user("first.copy", idnumber=twice["id"])
    second = fake_moodle.add_user("second.copy", idnumber=twice["id"])

    moodle_sync.post("students", [twice, fine])
    moodle_sync.drain(fake_moodle)

    job = moodle_sync.job("students", twice["id"])
    assert (job.state, job.last_errorcode) == ("dead", "ambiguous_user")
    assert f"2 Moodle users have idnumber '{twice['id']}'" in (job.last_error or "")
    assert f"ids {first.id}, {second.id}" in (job.last_error or "")
    assert moodle_sync.link("students", twice["id"]) is None
    assert sorted(u.username for u in people(fake_moodle)) == sorted(
        ["first.copy", "second.copy", fine["Name"].lower()]
    )
    assert moodle_sync.job("students", fine["id"]).state == "done"


def test_a_moodle_user_is_never_linked_to_two_records(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    """A teacher whose address is a student's: the student's account is not taken over."""
    student = StudentRecordFactory(program=None)
    teacher = TeacherRecordFactory(Academic_Email=student["Academic_Email"])
    moodle_sync.post("students", [student])
    moodle_sync.drain(fake_moodle)

    moodle_sync.post("teachers", [teacher])
    moodle_sync.drain(fake_moodle)

    job = moodle_sync.job("teachers", teacher["id"])
    assert (job.state, job.last_errorcode) == ("dead", "user_taken")
    assert f"already belongs to students {student['id']}" in (job.last_error or "")
    assert [u.idnumber for u in people(fake_moodle)] == [student["id"]]


def test_two_new_records_with_one_email_do_not_share_an_account(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    """Siblings entered with a parent's address, in one batch: Moodle creates the first and
    refuses the second address; the second record is not linked to the first one's account
    (whose name and idnumber it would then overwrite) but stops with the reason."""
    first = StudentRecordFactory(program=None)
    second = StudentRecordFactory(program=None, Academic_Email=first["Academic_Email"].upper())

    moodle_sync.post("students", [first, second])
    moodle_sync.drain(fake_moodle)

    [account] = people(fake_moodle)
    assert account.idnumber == first["id"]
    link = moodle_sync.link("students", first["id"])
    assert link is not None
    assert link.moodle_id == account.id
    assert moodle_sync.link("students", second["id"]) is None
    job = moodle_sync.job("students", second["id"])
    assert (job.state, job.last_errorcode) == ("dead", "user_taken")
    assert f"already belongs to students {first['id']}" in (job.last_error or "")


def test_a_teacher_and_a_student_with_one_email_in_one_batch_get_one_account(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    """Students and teachers are delivered together: the address goes to one of them, and the
    other stops as user_taken naming who has it."""
    student = StudentRecordFactory(program=None)
    teacher = TeacherRecordFactory(Academic_Email=student["Academic_Email"])
    moodle_sync.post("students", [student])
    moodle_sync.post("teachers", [teacher])

    moodle_sync.drain(fake_moodle)

    [account] = people(fake_moodle)
    links = {
        (entity, zoho_id): moodle_sync.link(entity, zoho_id)
        for entity, zoho_id in (("students", student["id"]), ("teachers", teacher["id"]))
    }
    [(owner, link)] = [(key, link) for key, link in links.items() if link is not None]
    assert link.moodle_id == account.id
    assert account.idnumber == owner[1]
    [(entity, zoho_id)] = [key for key in links if key != owner]
    job = moodle_sync.job(entity, zoho_id)
    assert (job.state, job.last_errorcode) == ("dead", "user_taken")
    assert f"already belongs to {owner[0]} {owner[1]}" in (job.last_error or "")


def test_category_and_courses_already_in_moodle_are_adopted(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    by_idnumber = one_class(students=1)
    by_shortname = one_class(students=1, program=by_idnumber.program)
    category = fake_moodle.add_category("Old name", idnumber=by_idnumber.program["id"])
    course_a = fake_moodle.add_course("Old A", "OLD-A", idnumber=by_idnumber.class_["id"])
    course_b = fake_moodle.add_course("Old B", by_shortname.class_["Class_Short_Name"])

    post_all(moodle_sync, by_idnumber.by_entity())
    post_all(moodle_sync, {**by_shortname.by_entity(), "programs": []})
    moodle_sync.drain(fake_moodle)

    assert len(fake_moodle.categories()) == 2
    assert fake_moodle.categories()[1].id == category.id
    assert fake_moodle.categories()[1].name == by_idnumber.program["Product_Name"]
    assert len(fake_moodle.courses()) == 3
    for world, existing in ((by_idnumber, course_a), (by_shortname, course_b)):
        course = next(c for c in fake_moodle.courses() if c.id == existing.id)
        assert course.idnumber == world.class_["id"]
        assert course.shortname == world.class_["Class_Short_Name"]
        assert course.fullname == world.class_["Class_Name"]
        assert course.categoryid == category.id
        teacher = person(fake_moodle, world.teacher["id"])
        student = person(fake_moodle, world.students[0]["id"])
        assert fake_moodle.course_roles(teacher.id, course.id) == (EDITING_TEACHER_ROLE,)
        assert fake_moodle.course_roles(student.id, course.id) == (STUDENT_ROLE,)
    assert moodle_sync.states() == {"done": 9}


def test_two_classes_with_one_short_name_do_not_share_a_course(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    """A course made by hand, without idnumber, whose short name two classes of the batch
    carry (a copy-paste in Zoho): one class takes it over, the other stops with the reason."""
    first = one_class(students=1, Class_Short_Name="NET-T1")
    second = one_class(students=1, program=first.program, Class_Short_Name="NET-T1")
    fake_moodle.add_category("Old name", idnumber=first.program["id"])
    by_hand = fake_moodle.add_course("By hand", "NET-T1")

    post_all(moodle_sync, first.by_entity())
    post_all(moodle_sync, {**second.by_entity(), "programs": []})
    moodle_sync.drain(fake_moodle)

    [course] = [c for c in fake_moodle.courses() if c.shortname == "NET-T1"]
    assert course.id == by_hand.id
    owners = {
        world.class_["id"]: moodle_sync.link("classes", world.class_["id"])
        for world in (first, second)
    }
    [(taker, link)] = [(zoho_id, link) for zoho_id, link in owners.items() if link is not None]
    assert link.moodle_id == by_hand.id
    assert course.idnumber == taker
    [stopped] = [zoho_id for zoho_id in owners if zoho_id != taker]
    job = moodle_sync.job("classes", stopped)
    assert (job.state, job.last_errorcode) == ("dead", "shortnametaken")
    assert f"already taken by class {taker}" in (job.last_error or "")


def test_a_short_name_taken_by_another_course_stops_the_class(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=1)
    other = fake_moodle.add_course(
        "Someone else's", world.class_["Class_Short_Name"], idnumber="MANUAL-1"
    )

    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)

    job = moodle_sync.job("classes", world.class_["id"])
    assert (job.state, job.last_errorcode) == ("dead", "shortnametaken")
    assert f"taken by Moodle course {other.id}" in (job.last_error or "")
    assert [c.id for c in fake_moodle.courses()] == [1, other.id]
    assert fake_moodle.enrolments() == []
    enrollment = moodle_sync.job("enrollments", world.enrollments[0]["id"])
    assert enrollment.state == "waiting"
    assert enrollment.wait_reason == f"class {world.class_['id']} is not in Moodle yet"


SETUP_GUIDE_FUNCTIONS = (
    "core_webservice_get_site_info",
    "core_user_create_users",
    "core_user_update_users",
    "core_user_get_users_by_field",
    "core_course_create_categories",
    "core_course_get_categories",
    "core_course_update_categories",
    "core_course_create_courses",
    "core_course_update_courses",
    "core_course_get_courses_by_field",
    "enrol_manual_enrol_users",
    "enrol_manual_unenrol_users",
    "core_enrol_get_enrolled_users",
    "core_role_assign_roles",
)
"""The functions docs/moodle-setup.md puts in the service: core_user_get_users is not one."""


def test_without_core_user_get_users_a_user_differing_in_case_stops_with_the_refusal(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    token = "00112233445566778899aabbccddeeff"
    fake_moodle.add_token(token, functions=SETUP_GUIDE_FUNCTIONS)
    settings = moodle_settings(moodle_sync.settings, moodle_token=token)
    student, other = StudentRecordFactory.build_batch(2, program=None)
    fake_moodle.add_user("mixed.case", email=student["Academic_Email"].upper())

    moodle_sync.post("students", [student, other])
    moodle_sync.drain(fake_moodle, settings=settings)

    job = moodle_sync.job("students", student["id"])
    assert (job.state, job.last_errorcode) == ("dead", "invalidparameter")
    assert moodle_sync.job("students", other["id"]).state == "done"
    assert moodle_sync.pause() is None
