"""`POST /v1/sync/{entity}`: every entity and outcome, and everything a caller can get wrong.

Records come from the factories, in the exact shape Zoho's REST API returns them; the app runs on a
real database built by the migrations (SQLite and PostgreSQL). Variants of one rule travel in one
batch, as they would from Zoho, and each result is checked by its index.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import AUTH, sync, tenant_with_secret
from tests.factories import (
    CLASSES,
    ENROLLMENTS,
    GRADES,
    PAYMENTS,
    PROGRAMS,
    REGISTRATIONS,
    STUDENTS,
    TEACHERS,
    UNITS,
    ClassRecordFactory,
    EnrollmentRecordFactory,
    PaymentRecordFactory,
    ProgramRecordFactory,
    Record,
    StudentRecordFactory,
    TeacherRecordFactory,
    UnitRecordFactory,
    build_college,
    zoho_datetime,
)
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.db.models import InboundEvent
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.settings import Settings

OUTCOMES = ("NEW", "UPDATED", "UNCHANGED", "INVALID", "SKIPPED", "STALE", "DELETED")
MODULE = {
    "programs": PROGRAMS,
    "teachers": TEACHERS,
    "students": STUDENTS,
    "units": UNITS,
    "classes": CLASSES,
    "enrollments": ENROLLMENTS,
    "registrations": REGISTRATIONS,
    "payments": PAYMENTS,
    "grades": GRADES,
}
ENTITY_NAMES = tuple(MODULE)

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def post(
    client: TestClient,
    entity: str,
    body: bytes | dict[str, Any] | list[Any],
    *,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a raw body (bytes) or a JSON document to /v1/sync/{entity}."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = dict(headers or {})
    if content_type is not None:
        sent["Content-Type"] = content_type
    return client.post(f"/v1/sync/{entity}", content=content, headers=sent)


def edited(record: Record, minutes: int, **changes: Any) -> Record:
    """The record as Zoho returns it after an edit `minutes` later (earlier when negative)."""
    modified = dt.datetime.fromisoformat(record["Modified_Time"]) + dt.timedelta(minutes=minutes)
    return {**record, **changes, "Modified_Time": zoho_datetime(modified)}


def record_view(client: TestClient, entity: str, zoho_id: str, **headers: str) -> Any:
    response = client.get(f"/v1/records/{entity}/{zoho_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def stored_data(client: TestClient, entity: str, zoho_id: str) -> dict[str, Any]:
    view = record_view(client, entity, zoho_id)
    assert view["state"] == "stored", view
    data: dict[str, Any] = view["stored"]["data"]
    return data


def only_result(answer: Any) -> dict[str, Any]:
    assert answer["summary"]["total"] == 1, answer
    result: dict[str, Any] = answer["results"][0]
    return result


def errors_by_index(answer: Any) -> list[list[dict[str, str]] | None]:
    return [result.get("errors") for result in answer["results"]]


LEFT_OUT = "; the value is left out until it is corrected in Zoho"


def warnings_by_index(answer: Any) -> list[list[dict[str, str]] | None]:
    """Each result's warnings as (field, code, message); `since` is checked elsewhere."""
    return [
        [{k: w[k] for k in ("field", "code", "message")} for w in result["warnings"]]
        if "warnings" in result
        else None
        for result in answer["results"]
    ]


def left_out(field: str, message: str) -> list[dict[str, str]]:
    """The warning of a value left out of a stored record."""
    return [{"field": field, "code": "invalid_value", "message": message + LEFT_OUT}]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The one error shape: {"error": {"code", "message", "details"?, "event_id"?}}."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str), error
    assert error["message"], error
    assert set(error) <= {"code", "message", "details", "event_id"}, error
    return error


def small_college(**counts: int) -> dict[str, list[Record]]:
    """One of everything unless told otherwise; every lookup resolves within it."""
    sizes = {
        "students": 1,
        "teachers": 1,
        "programs": 1,
        "units": 1,
        "classes": 1,
        "enrollments_per_student": 1,
        "payments_per_student": 1,
    }
    return build_college(**{**sizes, **counts})


def store(client: TestClient, college: dict[str, list[Record]], *entities: str) -> None:
    """Sync the college's records of `entities`, in that order, and check they are all new."""
    for entity in entities:
        records = college[MODULE[entity]]
        answer = sync(client, entity, records)
        assert answer["summary"]["NEW"] == len(records), answer


def stored_event(db: Database, event_id: int) -> InboundEvent:
    with db.sessions() as session:
        event = session.get(InboundEvent, event_id)
        assert event is not None
        return event


def as_utc(zoho_time: str) -> str:
    return dt.datetime.fromisoformat(zoho_time).astimezone(dt.UTC).isoformat()


# ---------------------------------------------------------------------------------------------
# Every entity, every outcome
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntityCase:
    entity: str
    needs: tuple[str, ...]
    """Entities whose records must be stored first, in an order that works."""
    required: str
    """A Zoho field the record cannot do without."""
    edit: tuple[str, Any]
    """A Zoho field and a new value for it."""
    waits_for: tuple[tuple[str, str], ...] = ()
    """(entity, Zoho lookup field) the record is parked on when sent alone."""
    reason: str | None = None

    @property
    def module(self) -> str:
        return MODULE[self.entity]


CASES = (
    EntityCase("programs", (), "Product_Name", ("Product_Name", "BTEC HND in Computing (Şişli)")),
    EntityCase("teachers", (), "Name", ("Phone_Number", "+90 555 010 2030")),
    EntityCase("students", (), "Last_Name", ("First_Name", "Şükrü")),
    EntityCase(
        "units",
        ("programs",),
        "Name",
        ("Unit_Credit", "30"),
        (("programs", "Program"),),
        "program_not_synced_yet",
    ),
    EntityCase(
        "classes",
        ("programs", "teachers", "units"),
        "Class_Name",
        ("Class_Name", "Networking - T1 2025 - Group Z"),
        (("programs", "BTEC_Program"), ("teachers", "Teacher"), ("units", "Unit")),
        "program_not_synced_yet",
    ),
    EntityCase(
        "enrollments",
        ("programs", "teachers", "students", "units", "classes"),
        "Classes",
        ("Enrollment_Type", "Recording"),
        (("students", "Enrolled_Students"), ("classes", "Classes")),
        "student_not_synced_yet",
    ),
    EntityCase(
        "registrations",
        ("programs", "students"),
        "Program",
        ("Intake", "MS0PSZ-2"),
        (("students", "Student_ID"), ("programs", "Program")),
        "student_not_synced_yet",
    ),
    EntityCase(
        "payments",
        ("programs", "students", "registrations"),
        "Registration_ID",
        ("Payment_Method", "Credit Card"),
        (("registrations", "Registration_ID"),),
        "registration_not_synced_yet",
    ),
    EntityCase(
        "grades",
        ("programs", "teachers", "students", "units", "classes"),
        "Class",
        ("Feedback", "Well argued — ممتاز"),
        (("students", "Student"), ("classes", "Class")),
        "student_not_synced_yet",
    ),
)


def test_every_entity_the_service_knows_has_a_case() -> None:
    assert [case.entity for case in CASES] == list(ENTITY_BY_KEY)


def goes_through_every_outcome(
    client: TestClient, case: EntityCase, college: dict[str, list[Record]]
) -> None:
    """SKIPPED (when it has dependencies) or NEW, then UNCHANGED, UPDATED, STALE and INVALID."""
    entity, record = case.entity, college[case.module][0]
    name, value = case.edit

    if case.waits_for:
        skipped = only_result(sync(client, entity, [record]))
        assert skipped["outcome"] == "SKIPPED", entity
        assert skipped["reason"] == case.reason, entity
        assert skipped["waiting_for"] == [
            {"entity": target, "zoho_id": record[lookup]["id"], "field": lookup}
            for target, lookup in case.waits_for
        ], entity
        assert skipped["message"].startswith("Waiting for "), entity
        assert record_view(client, entity, record["id"])["state"] == "parked", entity
        released = [r for e in case.needs for r in sync(client, e, college[MODULE[e]])["released"]]
        assert released == [{"entity": entity, "zoho_id": record["id"], "outcome": "NEW"}], entity
    else:
        new = sync(client, entity, [record])
        assert new["results"] == [{"index": 0, "zoho_id": record["id"], "outcome": "NEW"}], entity
    stored = record_view(client, entity, record["id"])["stored"]
    assert stored["zoho_modified_time"] == as_utc(record["Modified_Time"]), entity

    unchanged = only_result(sync(client, entity, [record]))
    assert unchanged == {"index": 0, "zoho_id": record["id"], "outcome": "UNCHANGED"}, entity

    updated = only_result(sync(client, entity, [edited(record, 5, **{name: value})]))
    assert updated["outcome"] == "UPDATED", entity
    assert updated["changes"] == {name: [record[name], value]}, entity
    assert value in stored_data(client, entity, record["id"]).values(), entity

    stale = only_result(sync(client, entity, [edited(record, -60, **{name: "older"})]))
    assert stale["outcome"] == "STALE", entity
    assert stale["reason"] == "older_than_stored", entity
    assert value in stored_data(client, entity, record["id"]).values(), entity

    broken = edited(record, 10)
    del broken[case.required]
    invalid = only_result(sync(client, entity, [broken]))
    assert invalid["outcome"] == "INVALID", entity
    assert invalid["errors"] == [{"field": case.required, "message": "required, but missing"}], (
        entity
    )
    assert invalid["message"] == f"{case.required}: required, but missing", entity
    assert value in stored_data(client, entity, record["id"]).values(), entity


def test_every_entity_goes_through_every_outcome(client: TestClient) -> None:
    for seed, case in enumerate(CASES, start=100):
        goes_through_every_outcome(client, case, small_college(seed=seed))


def test_only_required_lookups_make_a_record_wait(client: TestClient) -> None:
    program = ProgramRecordFactory()
    student = StudentRecordFactory(program=program)
    klass = ClassRecordFactory(program=program, Teacher=None, Unit=None)

    student_result = only_result(sync(client, "students", [student]))
    class_result = only_result(sync(client, "classes", [klass]))
    answer = sync(client, "programs", [program])

    assert student_result["outcome"] == "NEW"
    assert class_result["waiting_for"] == [
        {"entity": "programs", "zoho_id": program["id"], "field": "BTEC_Program"}
    ]
    assert answer["released"] == [{"entity": "classes", "zoho_id": klass["id"], "outcome": "NEW"}]


# ---------------------------------------------------------------------------------------------
# The answer
# ---------------------------------------------------------------------------------------------


def test_the_answer_has_a_result_per_record_in_order_a_summary_and_the_event_id(
    client: TestClient, db: Database
) -> None:
    teachers = TeacherRecordFactory.build_batch(3)
    broken = {**TeacherRecordFactory(), "Name": None}

    empty = sync(client, "teachers", [])
    first = sync(client, "teachers", teachers[:1])
    answer = sync(client, "teachers", [teachers[1], broken, teachers[2], teachers[0]])

    assert empty["results"] == []
    assert empty["released"] == []
    assert empty["summary"] == {"total": 0, **dict.fromkeys(OUTCOMES, 0)}
    assert set(answer) == {"event_id", "entity", "summary", "results", "released"}
    assert answer["entity"] == "teachers"
    assert answer["event_id"] > first["event_id"]
    assert [(r["index"], r["zoho_id"], r["outcome"]) for r in answer["results"]] == [
        (0, teachers[1]["id"], "NEW"),
        (1, broken["id"], "INVALID"),
        (2, teachers[2]["id"], "NEW"),
        (3, teachers[0]["id"], "UNCHANGED"),
    ]
    assert answer["summary"] == {
        "total": 4,
        "NEW": 2,
        "UPDATED": 0,
        "UNCHANGED": 1,
        "INVALID": 1,
        "SKIPPED": 0,
        "STALE": 0,
        "DELETED": 0,
    }
    assert answer["released"] == []
    event = stored_event(db, answer["event_id"])
    assert (event.status, event.http_status, event.entity) == ("processed", 200, "teachers")
    assert event.summary is not None
    assert event.summary["NEW"] == 2


def test_a_mixed_batch_gets_every_outcome_in_request_order(client: TestClient) -> None:
    college = small_college(students=2, classes=2)
    store(client, college, "programs", "teachers", "students", "units", "classes", "enrollments")
    stored_one, stored_two = college[ENROLLMENTS]
    student, klass = college[STUDENTS][0], college[CLASSES][0]
    fresh = EnrollmentRecordFactory(student=student, class_=klass)
    stranger = EnrollmentRecordFactory(class_=klass)

    answer = sync(
        client,
        "enrollments",
        [
            fresh,
            stored_one,
            edited(stored_two, -30, Enrollment_Type="Recording"),
            {**EnrollmentRecordFactory(student=student), "Classes": None},
            stranger,
            "not a record",
            edited(fresh, 10, Enrollment_Type="Self-Study"),
        ],
    )

    results = answer["results"]
    assert [r["index"] for r in results] == list(range(7))
    assert [r["outcome"] for r in results] == [
        "NEW",
        "UNCHANGED",
        "STALE",
        "INVALID",
        "SKIPPED",
        "INVALID",
        "UPDATED",
    ]
    assert results[3]["errors"] == [{"field": "Classes", "message": "required, but empty"}]
    assert results[4]["reason"] == "student_not_synced_yet"
    assert results[5] == {
        "index": 5,
        "zoho_id": None,
        "outcome": "INVALID",
        "errors": [{"field": "(record)", "message": "expected a JSON object, got a string"}],
        "message": "(record): expected a JSON object, got a string",
    }
    assert results[6]["changes"] == {"Enrollment_Type": ["Normal", "Self-Study"]}
    assert {k: v for k, v in answer["summary"].items() if v} == {
        "total": 7,
        "NEW": 1,
        "UPDATED": 1,
        "UNCHANGED": 1,
        "INVALID": 2,
        "SKIPPED": 1,
        "STALE": 1,
    }
    assert stored_data(client, "enrollments", fresh["id"])["enrollment_type"] == "Self-Study"
    assert stored_data(client, "enrollments", stored_two["id"])["enrollment_type"] == "Normal"


# ---------------------------------------------------------------------------------------------
# Records that arrive before what they depend on
# ---------------------------------------------------------------------------------------------


def test_enrollments_sent_before_their_students_and_classes_are_stored_once_those_arrive(
    client: TestClient,
) -> None:
    college = small_college(students=3, classes=2, enrollments_per_student=2)
    enrollments = college[ENROLLMENTS]

    early = sync(client, "enrollments", enrollments)
    prerequisites = [
        sync(client, entity, college[MODULE[entity]])
        for entity in ("programs", "teachers", "units", "students")
    ]
    classes = sync(client, "classes", college[CLASSES])

    assert early["summary"]["SKIPPED"] == len(enrollments) == 6
    assert {r["reason"] for r in early["results"]} == {"student_not_synced_yet"}
    assert all(answer["released"] == [] for answer in prerequisites)
    assert classes["summary"]["NEW"] == classes["summary"]["total"] == len(college[CLASSES])
    assert sorted(classes["released"], key=lambda r: r["zoho_id"]) == sorted(
        ({"entity": "enrollments", "zoho_id": e["id"], "outcome": "NEW"} for e in enrollments),
        key=lambda r: r["zoho_id"],
    )
    for enrollment in enrollments:
        data = stored_data(client, "enrollments", enrollment["id"])
        assert data["student_zoho_id"] == enrollment["Enrolled_Students"]["id"]
        assert data["class_zoho_id"] == enrollment["Classes"]["id"]
    assert sync(client, "classes", college[CLASSES])["released"] == []


def test_a_whole_college_sent_in_reverse_order_is_stored_without_resending(
    client: TestClient,
) -> None:
    college = small_college(students=2, payments_per_student=2)
    order: tuple[str, ...] = ("grades", "payments", "enrollments", "registrations", "classes")
    order += ("units", "students", "teachers", "programs")

    answers = {entity: sync(client, entity, college[MODULE[entity]]) for entity in order}

    released = [r for answer in answers.values() for r in answer["released"]]
    assert {r["outcome"] for r in released} == {"NEW"}
    assert sorted(r["zoho_id"] for r in released) == sorted(
        record["id"] for entity in order[:6] for record in college[MODULE[entity]]
    )
    for entity in ENTITY_NAMES:
        for record in college[MODULE[entity]]:
            assert record_view(client, entity, record["id"])["state"] == "stored"


def test_a_release_cascades_through_a_chain_of_dependencies_once_they_are_valid(
    client: TestClient,
) -> None:
    program, teacher = ProgramRecordFactory(), TeacherRecordFactory()
    unit = UnitRecordFactory(program=program)
    klass = ClassRecordFactory(unit=unit, teacher=teacher, program=program)

    sync(client, "classes", [klass])
    sync(client, "units", [unit])
    after_teacher = sync(client, "teachers", [teacher])
    after_invalid_program = sync(client, "programs", [{**program, "Product_Name": "   "}])
    still_parked = record_view(client, "units", unit["id"])["state"]
    after_program = sync(client, "programs", [program])

    assert after_teacher["released"] == []
    assert only_result(after_invalid_program)["outcome"] == "INVALID"
    assert after_invalid_program["released"] == []
    assert still_parked == "parked"
    assert after_program["released"] == [
        {"entity": "units", "zoho_id": unit["id"], "outcome": "NEW"},
        {"entity": "classes", "zoho_id": klass["id"], "outcome": "NEW"},
    ]
    assert after_program["summary"]["total"] == 1


def test_a_newer_version_of_a_parked_record_replaces_it_and_an_older_one_is_stale(
    client: TestClient,
) -> None:
    program = ProgramRecordFactory()
    unit = UnitRecordFactory(program=program, Unit_Credit="15")

    sync(client, "units", [unit])
    again = only_result(sync(client, "units", [edited(unit, 10, Unit_Credit="30")]))
    older = only_result(sync(client, "units", [edited(unit, -10, Unit_Credit="5")]))
    released = sync(client, "programs", [program])["released"]

    assert again["outcome"] == "SKIPPED"
    assert older["outcome"] == "STALE"
    assert released == [{"entity": "units", "zoho_id": unit["id"], "outcome": "NEW"}]
    assert stored_data(client, "units", unit["id"])["credit"] == "30"


# ---------------------------------------------------------------------------------------------
# Tenants
# ---------------------------------------------------------------------------------------------


def test_the_tenant_is_chosen_by_its_credential(client: TestClient, db: Database) -> None:
    north = tenant_with_secret(db, "north")
    teacher, program = TeacherRecordFactory(), ProgramRecordFactory()
    unit = UnitRecordFactory(program=program)
    sync(client, "units", [unit])

    in_north = sync(client, "teachers", [teacher], headers=north)
    in_default = sync(client, "teachers", [teacher])
    program_in_north = sync(client, "programs", [program], headers=north)

    assert only_result(in_north)["outcome"] == "NEW"
    assert only_result(in_default)["outcome"] == "NEW"
    north_view = record_view(client, "teachers", teacher["id"], **north)
    assert north_view["stored"]["last_event_id"] == in_north["event_id"]
    default_view = record_view(client, "teachers", teacher["id"])
    assert default_view["stored"]["last_event_id"] == in_default["event_id"]
    assert program_in_north["released"] == []
    assert record_view(client, "units", unit["id"])["state"] == "parked"


# ---------------------------------------------------------------------------------------------
# Field values
# ---------------------------------------------------------------------------------------------


def test_names_in_any_script_are_stored_exactly(client: TestClient) -> None:
    names = [("Şükrü", "Öztürk-İnce"), ("محمد", "العلي"), ("Zeynep 🎓", "O'Neill 👩‍💻")]
    students: list[Record] = [
        StudentRecordFactory(First_Name=f, Last_Name=last) for f, last in names
    ]
    teachers: list[Record] = [TeacherRecordFactory(Name=f"{f} {last}") for f, last in names]
    readable = StudentRecordFactory(Email="şükrü@@örnek", Academic_Email=None)

    student_answer = sync(client, "students", [*students, readable])
    teacher_answer = sync(client, "teachers", teachers)

    assert [r["outcome"] for r in student_answer["results"]] == ["NEW"] * 3 + ["INVALID"]
    assert [r["outcome"] for r in teacher_answer["results"]] == ["NEW"] * 3
    for student, (first, last) in zip(students, names, strict=True):
        data = stored_data(client, "students", student["id"])
        assert (data["first_name"], data["last_name"]) == (first, last)
    for teacher, (first, last) in zip(teachers, names, strict=True):
        assert stored_data(client, "teachers", teacher["id"])["name"] == f"{first} {last}"
    assert student_answer["results"][3]["errors"] == [
        {"field": "Email", "message": "not an e-mail address: 'şükrü@@örnek'"},
        {
            "field": "Academic_Email",
            "message": "a student needs Academic_Email or Email (Moodle requires one)",
        },
    ]
    again = sync(client, "students", students)
    assert [r["outcome"] for r in again["results"]] == ["UNCHANGED"] * 3


def test_modified_times_carry_an_offset_and_are_compared_as_instants(
    client: TestClient,
) -> None:
    teacher = TeacherRecordFactory(Modified_Time="2025-06-01T12:00:00+03:00")
    sync(client, "teachers", [teacher])

    later_in_utc = {**teacher, "Modified_Time": "2025-06-01T10:30:00Z"}
    earlier_in_india = {**teacher, "Modified_Time": "2025-06-01T14:00:00+05:30"}
    later_in_new_york = {**teacher, "Modified_Time": "2025-06-01T06:45:00-04:00"}

    assert only_result(sync(client, "teachers", [later_in_utc]))["outcome"] == "UNCHANGED"
    assert only_result(sync(client, "teachers", [earlier_in_india]))["outcome"] == "STALE"
    assert only_result(sync(client, "teachers", [later_in_new_york]))["outcome"] == "UNCHANGED"
    view = record_view(client, "teachers", teacher["id"])
    assert view["stored"]["zoho_modified_time"] == "2025-06-01T10:45:00+00:00"

    values = ["2025-06-01T10:00:00", "2025-06-01", "yesterday", 1748772000, ["2025-06-01Z"]]
    answer = sync(client, "teachers", [{**teacher, "Modified_Time": value} for value in values])
    for value, errors in zip(values, errors_by_index(answer), strict=True):
        assert errors is not None, value
        assert [e["field"] for e in errors] == ["Modified_Time"], value
        assert errors[0]["message"].startswith("not an ISO 8601 date-time with offset"), value


INVALID_DATES = {
    "2024-02-30": "not a calendar date: '2024-02-30'",
    "2023-02-29": "not a calendar date: '2023-02-29'",
    "2024-13-01": "not a calendar date: '2024-13-01'",
    "30/01/2024": "expected a date as YYYY-MM-DD, got '30/01/2024'",
    "2024-1-5": "expected a date as YYYY-MM-DD, got '2024-1-5'",
    "2024-01-05T10:00:00+03:00": "expected a date as YYYY-MM-DD, got '2024-01-05T10:00:00+03:00'",
}


def test_an_invalid_date_is_left_out_with_a_warning_naming_the_field_and_a_leap_day_is_a_date(
    client: TestClient,
) -> None:
    values: list[Any] = [*INVALID_DATES, 20240105, "2004-02-29"]
    students: list[Record] = [StudentRecordFactory(Birth_Date=value) for value in values]

    answer = sync(client, "students", students)

    expected = [
        *INVALID_DATES.values(),
        "expected a date as YYYY-MM-DD, got 20240105",
    ]
    assert [r["outcome"] for r in answer["results"]] == ["NEW"] * len(values)
    assert warnings_by_index(answer) == [
        *(left_out("Birth_Date", message) for message in expected),
        None,
    ]
    assert stored_data(client, "students", students[0]["id"])["birth_date"] is None
    assert stored_data(client, "students", students[-1]["id"])["birth_date"] == "2004-02-29"


WRONG_TYPES: list[tuple[str, str, Any, str]] = [
    ("students", "First_Name", 42, "expected text, got the number 42"),
    ("students", "First_Name", True, "expected text, got the boolean true"),
    ("students", "First_Name", {"name": "Ali"}, "expected text, got an object"),
    (
        "units",
        "Program",
        "Computing",
        "expected a Zoho record id (digits) or a lookup {name, id}, got 'Computing'",
    ),
    (
        "enrollments",
        "Classes",
        [{"name": "Networking", "id": "5725767141565000047"}],
        "expected a Zoho record id (digits) or a lookup {name, id}, "
        "got [{'name': 'Networking', 'id': '5725767141565000047'}]",
    ),
]
"""Wrong types in a value a record is delivered by (required, or a lookup): INVALID."""

WRONG_OPTIONAL_TYPES: list[tuple[str, str, Any, str]] = [
    ("students", "Status", ["Active"], "expected text, got an array"),
    ("teachers", "Email", 5, "expected text, got the number 5"),
    ("payments", "Payment_Amount", "three hundred", "expected a number, got 'three hundred'"),
    ("payments", "Installment_No", "2", "expected a whole number, got the text '2'"),
    ("payments", "Installment_No", 1.5, "expected a whole number, got the number 1.5"),
    ("grades", "Attempt_Number", "first", "expected a whole number, got the text 'first'"),
]
"""Wrong types in optional values nobody needs to be put into Moodle: left out, with a warning."""


def test_a_value_of_the_wrong_type_or_a_bad_id_is_invalid_naming_the_field(
    client: TestClient,
) -> None:
    college = small_college()

    for entity in dict.fromkeys(entity for entity, *_ in WRONG_TYPES):
        cases = [(name, value, message) for e, name, value, message in WRONG_TYPES if e == entity]
        template = college[MODULE[entity]][0]
        records = [{**template, name: value} for name, value, _ in cases]

        answer = sync(client, entity, records)

        assert errors_by_index(answer) == [
            [{"field": name, "message": message}] for name, _, message in cases
        ], entity

    ids = sync(
        client,
        "teachers",
        [
            {**TeacherRecordFactory(), "id": 5725767141599000001},
            {**TeacherRecordFactory(), "id": "57257671415a"},
            {**TeacherRecordFactory(), "id": 1.5},
            {**TeacherRecordFactory(), "id": "9" * 33},
            {k: v for k, v in TeacherRecordFactory().items() if k != "id"},
        ],
    )["results"]
    assert ids[0] == {"index": 0, "zoho_id": "5725767141599000001", "outcome": "NEW"}
    assert [r["errors"][0]["field"] for r in ids[1:]] == ["id", "id", "id", "id"]
    assert ids[4]["errors"][0]["message"] == "missing: every record needs its Zoho id"


def test_a_value_of_the_wrong_type_in_an_optional_field_is_left_out_with_a_warning(
    client: TestClient,
) -> None:
    college = small_college()
    for entity in ENTITY_BY_KEY:
        sync(client, entity, college[MODULE[entity]])

    for entity, name, value, message in WRONG_OPTIONAL_TYPES:
        template = college[MODULE[entity]][0]
        record = {**template, "id": zoho_id_for(entity, name, value), name: value}

        answer = sync(client, entity, [record])

        assert [r["outcome"] for r in answer["results"]] == ["NEW"], (entity, answer)
        assert warnings_by_index(answer) == [left_out(name, message)], entity
        data = stored_data(client, entity, record["id"])
        domain_name = next(f.name for f in ENTITY_BY_KEY[entity].fields if f.zoho == name)
        assert data[domain_name] is None, (entity, name)


def zoho_id_for(entity: str, name: str, value: Any) -> str:
    """A Zoho id of its own for each case, so that each is a NEW record."""
    digest = abs(hash((entity, name, repr(value)))) % 10**9
    return f"5725767149{digest:09d}"


REQUIRED = [
    ("programs", "Product_Name", True),
    ("students", "First_Name", True),
    ("enrollments", "Enrolled_Students", False),
    ("payments", "Registration_ID", False),
]


def test_required_fields_must_have_a_value_and_optional_ones_may_be_null(
    client: TestClient,
) -> None:
    college = small_college()

    for entity, name, is_text in REQUIRED:
        template = college[MODULE[entity]][0]
        missing = {k: v for k, v in template.items() if k != name}
        empties = [None, "", "   "] if is_text else [None, ""]

        answer = sync(client, entity, [missing, *({**template, name: e} for e in empties)])

        assert errors_by_index(answer) == [
            [{"field": name, "message": "required, but missing"}],
            *([{"field": name, "message": "required, but empty"}] for _ in empties),
        ], entity

    student = StudentRecordFactory(
        Phone_Number=None, Birth_Date=None, Program=None, Major=None, Status="-None-"
    )
    assert only_result(sync(client, "students", [student]))["outcome"] == "NEW"
    data = stored_data(client, "students", student["id"])
    assert data["phone"] is None
    assert data["birth_date"] is None
    assert data["program_zoho_id"] is None
    assert data["status"] is None


def test_records_that_break_a_rule_are_invalid_naming_the_field(client: TestClient) -> None:
    long_number = "A" * 121
    students: list[Record] = [
        StudentRecordFactory(Email=None, Academic_Email=None),
        StudentRecordFactory(Name=long_number, Academic_Email="long@students.example.edu"),
        StudentRecordFactory(First_Name=5, Birth_Date="2024-02-30", Email="nope"),
    ]
    student_errors = errors_by_index(sync(client, "students", students))

    assert student_errors[0] == [
        {
            "field": "Academic_Email",
            "message": "a student needs Academic_Email or Email (Moodle requires one)",
        }
    ]
    assert student_errors[1] == [{"field": "Name", "message": "longer than 120 characters"}]
    assert student_errors[2] is not None
    assert {e["field"] for e in student_errors[2]} == {"First_Name", "Birth_Date", "Email"}


def test_an_end_date_before_the_start_is_a_warning_and_the_record_is_stored(
    client: TestClient,
) -> None:
    klass = ClassRecordFactory(
        Start_Date="2025-09-29", End_Date="2025-09-26", BTEC_Program=None, Teacher=None, Unit=None
    )

    answer = sync(client, "classes", [klass])

    assert only_result(answer)["outcome"] == "NEW"
    assert warnings_by_index(answer) == [
        [
            {
                "field": "End_Date",
                "code": "end_before_start",
                "message": "End_Date 2025-09-26 is before Start_Date 2025-09-29; Moodle gets no "
                "end date until the dates are corrected in Zoho",
            }
        ]
    ]
    data = stored_data(client, "classes", klass["id"])
    assert (data["start_date"], data["end_date"]) == ("2025-09-29", "2025-09-26")


def test_values_a_column_cannot_hold_are_left_out_or_invalid_naming_the_field(
    client: TestClient,
) -> None:
    largest = ProgramRecordFactory(Program_Price="99999999999999.9999")
    programs: list[Record] = [
        ProgramRecordFactory(Program_Price=1e20),
        ProgramRecordFactory(Program_Price=0.12345),
        ProgramRecordFactory(Product_Name="BTEC\u0000HND"),
        largest,
    ]
    payments: list[Record] = [
        PaymentRecordFactory(Installment_No=number) for number in (2**31, -(2**31) - 1, 2**63)
    ]

    program_answer = sync(client, "programs", programs)
    payment_answer = sync(client, "payments", payments)

    assert errors_by_index(program_answer) == [
        None,
        None,
        [
            {
                "field": "Product_Name",
                "message": "contains a NUL character, which no database column can hold",
            }
        ],
        None,
    ]
    assert warnings_by_index(program_answer) == [
        left_out("Program_Price", "too large: 1e+20 (at most 14 digits before the point)"),
        left_out("Program_Price", "more than 4 decimal places: 0.12345"),
        None,
        None,
    ]
    assert stored_data(client, "programs", programs[0]["id"])["price"] is None
    assert stored_data(client, "programs", largest["id"])["price"] == "99999999999999.9999"
    assert [r["outcome"] for r in payment_answer["results"]] == ["SKIPPED"] * 3  # no registration
    assert [[w["field"] for w in ws or []] for ws in warnings_by_index(payment_answer)] == [
        ["Installment_No"]
    ] * 3


def test_meta_keys_unmapped_fields_spaces_and_another_spelling_of_an_amount_change_nothing(
    client: TestClient,
) -> None:
    student = StudentRecordFactory()
    program = ProgramRecordFactory(Program_Price=5900)
    sync(client, "students", [student])
    sync(client, "programs", [program])
    noise = {
        "$approval_state": "approval_process_pending",
        "$editable": False,
        "$review": "pending",
        "$approval": None,
        "$sharing_permission": "full_access",
        "$layout_id": {"name": "Admissions", "id": "5725767141565000099"},
        "Nationality": "Palestine",
        "Last_Activity_Time": "2025-08-01T09:00:00+03:00",
        "Tag": [{"name": "VIP", "id": "5725767141565000123"}],
    }

    padded = {"First_Name": f"  {student['First_Name']} ", "Last_Name": f"{student['Last_Name']}\t"}

    noisy = sync(client, "students", [{**student, **noise}, {**student, **padded}])
    amounts = sync(
        client,
        "programs",
        [{**program, "Program_Price": 5900.0}, {**program, "Program_Price": "5900.00"}],
    )

    assert [r["outcome"] for r in noisy["results"]] == ["UNCHANGED", "UNCHANGED"]
    assert [r["outcome"] for r in amounts["results"]] == ["UNCHANGED", "UNCHANGED"]
    assert stored_data(client, "programs", program["id"])["price"] == "5900"


# ---------------------------------------------------------------------------------------------
# Requests the caller gets wrong
# ---------------------------------------------------------------------------------------------


def test_a_body_over_the_size_limit_is_refused_naming_the_limit_and_is_still_stored(
    client: TestClient, db: Database, settings: Settings
) -> None:
    skeleton = b'{"data": [], "pad": ""}'
    at_limit = skeleton[:-2] + b"x" * (settings.max_body_bytes - len(skeleton)) + b'"}'
    assert len(at_limit) == settings.max_body_bytes
    over_limit = at_limit[:-2] + b'x"}'

    accepted = post(client, "teachers", at_limit)
    error = assert_error(post(client, "teachers", over_limit), 413, "body_too_large")

    assert accepted.status_code == 200, accepted.text
    assert str(settings.max_body_bytes) in error["message"]
    event = stored_event(db, error["event_id"])
    assert (event.status, event.http_status) == ("rejected", 413)
    assert event.body_truncated is True
    assert event.body_size > settings.max_body_bytes


def test_a_body_over_the_size_limit_keeps_its_first_64_kib(
    client: TestClient, db: Database, settings: Settings
) -> None:
    body = json.dumps({"data": [TeacherRecordFactory(Description="x" * 3_000_000)]}).encode()

    error = assert_error(post(client, "teachers", body), 413, "body_too_large")

    assert stored_event(db, error["event_id"]).body == body[: 64 * 1024]


REFUSALS: list[tuple[str, str, bytes, str | None, dict[str, str], int, str, str]] = [
    # (case, entity, body, content type, headers, status, code, expected message fragment)
    ("empty", "students", b"", "application/json", {}, 400, "malformed_body", "Body is empty"),
    ("blank", "students", b" \n\t", None, {}, 400, "malformed_body", "Body is empty"),
    ("{}", "students", b"{}", "application/json", {}, 422, "unprocessable", '"data" array'),
    ("no-data", "students", b'{"records": []}', None, {}, 422, "unprocessable", '"data" array'),
    ("array", "students", b"[]", "application/json", {}, 422, "unprocessable", '"data" array'),
    ("null", "students", b"null", "application/json", {}, 422, "unprocessable", '"data" array'),
    ("data-string", "grades", b'{"data": "x"}', None, {}, 422, "unprocessable", "got str"),
    ("data-object", "grades", b'{"data": {"id": "1"}}', None, {}, 422, "unprocessable", "got dict"),
    ("data-null", "grades", b'{"data": null}', None, {}, 422, "unprocessable", "got NoneType"),
    (
        "not-utf8",
        "students",
        '{"data": [{"Name": "Şükrü"}]}'.encode("iso-8859-9"),
        "application/json",
        {},
        400,
        "malformed_body",
        "not valid UTF-8",
    ),
    ("xml", "students", b"<data/>", "text/xml", {}, 415, "unsupported_media_type", "text/xml"),
    (
        "form",
        "students",
        b"module=BTEC_Students&zoho_id=1",
        "application/x-www-form-urlencoded",
        {},
        415,
        "unsupported_media_type",
        "send application/json",
    ),
    (
        "multipart",
        "students",
        b"--zz\r\n\r\nx\r\n--zz--\r\n",
        "multipart/form-data; boundary=zz",
        {},
        415,
        "unsupported_media_type",
        "multipart/form-data",
    ),
    ("text", "students", b"hello", "text/plain", {}, 415, "unsupported_media_type", "text/plain"),
    ("none", "students", b"hello", None, {}, 415, "unsupported_media_type", "(none)"),
    (
        "unknown-entity",
        "contacts",
        b'{"data": []}',
        "application/json",
        {},
        404,
        "not_found",
        "unknown entity 'contacts'; known: programs, teachers, students, units, classes, "
        "enrollments, registrations, payments, grades",
    ),
    (
        "another-tenant",
        "students",
        b'{"data": []}',
        "application/json",
        {"X-Tenant-ID": "ghost"},
        403,
        "forbidden",
        "not allowed",
    ),
    (
        "no-credential",
        "students",
        b'{"data": []}',
        "application/json",
        {"Authorization": ""},
        401,
        "unauthenticated",
        "missing or invalid credential",
    ),
]


MALFORMED = [
    # (body, line, column of the first character that breaks it)
    (b'{\n  "data": [\n    {"id": "1",}\n  ]\n}', 3, 15),
    (b'{"data": [{"id": "1", "Name": "unterminated}]}', 1, 47),
    (b'{"data": [\n{"id": 01}\n]}', 2, 8),
    (b"{'data': []}", 1, 2),
    (b'{"data": []} trailing', 1, 14),
]


def test_a_request_that_cannot_be_read_is_refused_in_the_error_shape_and_stored(
    client: TestClient, db: Database
) -> None:
    for case, entity, body, content_type, headers, status, code, fragment in REFUSALS:
        response = post(client, entity, body, content_type=content_type, headers=headers)

        error = assert_error(response, status, code)
        assert fragment in error["message"], case
        event = stored_event(db, error["event_id"])
        assert (event.status, event.http_status, event.error) == (
            "rejected",
            status,
            error["message"],
        ), case
        assert event.body == body, case
        assert event.route == f"/v1/sync/{entity}", case
    for body, line, column in MALFORMED:
        error = assert_error(post(client, "students", body), 400, "malformed_body")
        assert error["details"]["line"] == line, body
        assert error["details"]["column"] == column, body
        assert f"at line {line} column {column}" in error["message"], body
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        assert_error(client.request(method, "/v1/sync/students"), 405, "http_error")


def test_json_is_read_under_the_content_types_curl_and_zoho_send(client: TestClient) -> None:
    content_types = [
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/vnd.api+json",
        "application/x-www-form-urlencoded",
        "text/plain",
        None,
    ]
    for content_type in content_types:
        teacher = TeacherRecordFactory()

        response = post(client, "teachers", {"data": [teacher]}, content_type=content_type)

        assert response.status_code == 200, (content_type, response.text)
        assert only_result(response.json())["outcome"] == "NEW", content_type


@pytest.fixture
def three_per_batch(settings: Settings, db: Database) -> Iterator[TestClient]:
    limited = settings.model_copy(update={"max_batch_records": 3})
    app = create_app(limited, db)
    with TestClient(app, raise_server_exceptions=False, headers=AUTH) as test_client:
        yield test_client


def test_a_batch_over_max_batch_records_is_refused_naming_the_limit(
    three_per_batch: TestClient,
) -> None:
    teachers = TeacherRecordFactory.build_batch(4)

    refused = post(three_per_batch, "teachers", {"data": teachers})
    accepted = sync(three_per_batch, "teachers", teachers[:3])

    error = assert_error(refused, 422, "unprocessable")
    assert (
        error["message"] == "Too many records in one request: 4; the limit is 3. Split the batch."
    )
    assert error["details"] == [{"field": "data", "message": "more than 3 records"}]
    assert accepted["summary"]["NEW"] == 3
    assert three_per_batch.get(f"/v1/records/teachers/{teachers[3]['id']}").status_code == 404


HOSTILE_BODIES = {
    "record-is-number": b'{"data": [1, 2.5, -3]}',
    "record-is-null": b'{"data": [null]}',
    "record-is-array": b'{"data": [[{"id": "1"}]]}',
    "record-is-string": b'{"data": ["5725767141565000085"]}',
    "empty-record": b'{"data": [{}]}',
    "id-only": b'{"data": [{"id": "5725767141565000085"}]}',
    "id-object": b'{"data": [{"id": {"id": "1"}}]}',
    "id-boolean": b'{"data": [{"id": true}]}',
    "id-huge-number": b'{"data": [{"id": 123456789012345678901234567890123456789}]}',
    "every-field-object": b'{"data": [{"id": "1", "Name": {}, "Class_Name": {}, '
    b'"Product_Name": {}, "First_Name": {}, "Last_Name": {}, "Enrolled_Students": {}, '
    b'"Classes": {}, "Student_ID": {}, "Program": {}, "Registration_ID": {}, "Student": {}, '
    b'"Class": {}}]}',
    "every-field-array": b'{"data": [{"id": "1", "Name": [], "Class_Name": [], '
    b'"Product_Name": [], "First_Name": [], "Last_Name": [], "Enrolled_Students": [], '
    b'"Classes": [], "Student_ID": [], "Program": [], "Registration_ID": [], "Student": [], '
    b'"Class": [], "Start_Date": [], "End_Date": [], "Program_Price": [], "Installment_No": []}]}',
    "lookup-id-nested": b'{"data": [{"id": "1", "Program": {"id": {"id": "2"}}, '
    b'"Enrolled_Students": {"id": [1]}, "Classes": {"id": null}}]}',
    "amount-not-finite": b'{"data": [{"id": "1", "Product_Name": "x", "Program_Price": "NaN", '
    b'"Payment_Amount": "Infinity", "Registration_ID": "2"}]}',
    "huge-exponent": b'{"data": [{"id": "1", "Product_Name": "x", "Program_Price": 1e999}]}',
    "deep-nesting": b'{"data": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
    "lone-surrogate": b'{"data": [{"id": "1", "Name": "\\ud800"}]}',
    "duplicate-keys": b'{"data": [], "data": [{"id": "1"}]}',
    "dollar-keys-only": b'{"data": [{"id": "1", "$approved": "yes", "$state": {}}]}',
    "very-long-text": b'{"data": [{"id": "1", "Name": "' + b"x" * 100_000 + b'"}]}',
    "byte-order-mark": b'\xef\xbb\xbf{"data": []}',
}


def test_nothing_a_caller_sends_gives_a_500(client: TestClient) -> None:
    for case, body in HOSTILE_BODIES.items():
        for entity in ("programs", "enrollments", "payments"):
            response = post(client, entity, body)

            assert response.status_code in (200, 400, 422), (case, entity, response.text)
            if response.status_code == 200:
                answer = response.json()
                assert answer["summary"]["total"] == len(answer["results"]), (case, entity)
            else:
                assert_error(response, response.status_code, response.json()["error"]["code"])


# ---------------------------------------------------------------------------------------------
# Known defects: each test states the expected behaviour
# ---------------------------------------------------------------------------------------------


def test_a_modified_time_at_the_edge_of_the_calendar_is_invalid(client: TestClient) -> None:
    edges = ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]
    teachers = [{**TeacherRecordFactory(), "Modified_Time": edge} for edge in edges]

    response = post(client, "teachers", {"data": teachers})

    assert response.status_code == 200, response.text
    assert [[e["field"] for e in errors or []] for errors in errors_by_index(response.json())] == [
        ["Modified_Time"],
        ["Modified_Time"],
    ]


def test_an_amount_beyond_decimal_precision_is_left_out(client: TestClient) -> None:
    prices: list[Any] = ["1e300", 123456789012345678901234567890]
    programs = [{**ProgramRecordFactory(), "Program_Price": price} for price in prices]

    response = post(client, "programs", {"data": programs})

    assert response.status_code == 200, response.text
    answer = response.json()
    assert [r["outcome"] for r in answer["results"]] == ["NEW", "NEW"]
    assert [[w["field"] for w in ws or []] for ws in warnings_by_index(answer)] == [
        ["Program_Price"],
        ["Program_Price"],
    ]


def test_a_nul_character_outside_the_mapped_fields_is_not_a_500(
    client: TestClient, request: pytest.FixtureRequest
) -> None:
    program = ProgramRecordFactory(Description="BTEC\u0000HND")
    keyed = {**ProgramRecordFactory(), "Notes\u0000": "x"}
    unit = UnitRecordFactory(Program={"name": "BTEC\u0000HND", "id": "5725767141565000001"})

    programs = post(client, "programs", {"data": [program, keyed]})
    units = post(client, "units", {"data": [unit]})

    assert programs.status_code == 200, programs.text
    assert units.status_code == 200, units.text


def test_a_long_path_or_content_type_is_not_a_500(
    client: TestClient, request: pytest.FixtureRequest
) -> None:
    long_entity = post(client, "x" * 400, {"data": []})
    long_type = post(
        client, "teachers", {"data": []}, content_type="application/json; p=" + "x" * 300
    )

    assert_error(long_entity, 404, "not_found")
    assert long_type.status_code == 200, long_type.text
