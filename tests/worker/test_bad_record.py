"""One bad record never blocks the others: Moodle refuses a whole batch for one bad item, the
worker splits the batch to find it, delivers the rest, and the bad job ends dead with Moodle's
errorcode and a message a person can act on."""

from __future__ import annotations

from tests.factories import StudentRecordFactory
from tests.fakes.moodle import FakeMoodle
from tests.worker.conftest import MoodleSync, created_items, people


def test_an_email_moodle_refuses_does_not_block_the_other_99(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    students = StudentRecordFactory.build_batch(100, program=None)
    bad = students[37]
    bad["Academic_Email"] = "nour(at)home@students.example.edu"  # Zoho takes it, Moodle not
    moodle_sync.post("students", students)

    moodle_sync.drain(fake_moodle)

    created = {user.idnumber: user for user in people(fake_moodle)}
    assert sorted(created) == sorted(s["id"] for s in students if s is not bad)
    for student in students:
        if student is not bad:
            assert created[student["id"]].username == student["Name"].lower()
    assert created_items(fake_moodle, "core_user_create_users") == 99
    job = moodle_sync.job("students", bad["id"])
    assert (job.state, job.last_errorcode) == ("dead", "invalidparameter")
    assert job.last_error is not None
    assert job.last_error.startswith(
        f"creating user {bad['Name'].lower()}: Moodle refused: Invalid parameter value detected"
    )
    assert "check the e-mail address" in job.last_error
    assert moodle_sync.states() == {"done": 99, "dead": 1}
    refused = [c for c in fake_moodle.calls if c.outcome == "invalidparameter"]
    # Halving 100 items down to the bad one: 7 refused calls, not one call per student.
    assert len(refused) == 7
    assert len([c for c in fake_moodle.calls if c.function == "core_user_create_users"]) <= 15


def test_a_student_number_moodle_cannot_take_as_username_stops_that_student_only(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    students = StudentRecordFactory.build_batch(100, program=None)
    bad = students[60]
    bad["Name"] = "A2025 MS0PSZ/0061"
    moodle_sync.post("students", students)

    moodle_sync.drain(fake_moodle)

    assert sorted(u.idnumber for u in people(fake_moodle)) == sorted(
        s["id"] for s in students if s is not bad
    )
    job = moodle_sync.job("students", bad["id"])
    assert (job.state, job.last_errorcode) == ("dead", "invalid_for_moodle")
    assert job.last_error == (
        "student number as Moodle username: username 'A2025 MS0PSZ/0061' has characters "
        "Moodle rejects: ' ', '/'"
    )
    # Caught before Moodle was asked: the other 99 went in one call.
    creates = [c for c in fake_moodle.calls if c.function == "core_user_create_users"]
    assert [(c.items, c.outcome) for c in creates] == [(99, "ok")]
