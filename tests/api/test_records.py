"""`GET /v1/records/{entity}/{zoho_id}` (what the service knows about a record) and `/v1/health`."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import sync, tenant_with_secret
from tests.factories import (
    ClassRecordFactory,
    EnrollmentRecordFactory,
    ProgramRecordFactory,
    Record,
    StudentRecordFactory,
    TeacherRecordFactory,
    UnitRecordFactory,
    zoho_datetime,
)
from zoho_moodle_sync import __version__
from zoho_moodle_sync.db import migrate
from zoho_moodle_sync.db.session import Database

SHA256 = re.compile(r"^[0-9a-f]{64}$")


def view_of(client: TestClient, entity: str, zoho_id: str, query: str = "") -> Any:
    response = client.get(f"/v1/records/{entity}/{zoho_id}{query}")
    assert response.status_code == 200, response.text
    return response.json()


def edited(record: Record, minutes: int, **changes: Any) -> Record:
    modified = dt.datetime.fromisoformat(record["Modified_Time"]) + dt.timedelta(minutes=minutes)
    return {**record, **changes, "Modified_Time": zoho_datetime(modified)}


def moment(iso: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(iso)
    assert parsed.utcoffset() == dt.timedelta(0), iso
    return parsed


def assert_not_found(client: TestClient, path: str, message: str, **headers: str) -> None:
    response = client.get(path, headers=headers)
    assert response.status_code == 404, response.text
    assert response.json() == {"error": {"code": "not_found", "message": message}}


def test_a_stored_record_shows_its_data_fingerprint_times_and_history(
    client: TestClient,
) -> None:
    teacher = TeacherRecordFactory(Name="Ayşe Güneş", Modified_Time="2025-05-10T08:12:01+03:00")
    answer = sync(client, "teachers", [teacher])

    view = view_of(client, "teachers", teacher["id"])

    assert view["entity"] == "teachers"
    assert view["zoho_id"] == teacher["id"]
    assert view["state"] == "stored"
    assert view["parked"] is None
    stored = view["stored"]
    assert stored["data"] == {
        "name": "Ayşe Güneş",
        "email": teacher["Email"],
        "academic_email": teacher["Academic_Email"],
        "phone": teacher["Phone_Number"],
    }
    assert SHA256.match(stored["fingerprint"])
    assert stored["zoho_modified_time"] == "2025-05-10T05:12:01+00:00"
    assert moment(stored["created_at"]) == moment(stored["updated_at"])
    assert stored["deleted_at"] is None
    assert stored["last_event_id"] == answer["event_id"]
    assert [(h["outcome"], h["event_id"]) for h in view["history"]] == [("NEW", answer["event_id"])]
    assert moment(view["history"][0]["at"]) >= moment(stored["created_at"])


def test_a_parked_record_says_what_it_waits_for_until_it_is_released(
    client: TestClient,
) -> None:
    program, teacher, student = (
        ProgramRecordFactory(),
        TeacherRecordFactory(),
        StudentRecordFactory(),
    )
    unit = UnitRecordFactory(program=program)
    klass = ClassRecordFactory(unit=unit, teacher=teacher, program=program)
    enrollment = EnrollmentRecordFactory(student=student, class_=klass)
    first = sync(client, "enrollments", [enrollment])
    newer = sync(client, "enrollments", [edited(enrollment, 5, Enrollment_Type="Recording")])

    parked = view_of(client, "enrollments", enrollment["id"])

    assert parked["state"] == "parked"
    assert parked["stored"] is None
    waiting_for = [
        {"entity": "students", "zoho_id": student["id"], "field": "Enrolled_Students"},
        {"entity": "classes", "zoho_id": klass["id"], "field": "Classes"},
    ]
    assert parked["parked"]["reason"] == "student_not_synced_yet"
    assert parked["parked"]["waiting_for"] == waiting_for
    assert student["id"] in parked["parked"]["message"]
    assert parked["parked"]["event_id"] == newer["event_id"]
    assert moment(parked["parked"]["parked_at"]) < moment(parked["parked"]["updated_at"])
    assert [(h["outcome"], h["event_id"]) for h in parked["history"]] == [
        ("SKIPPED", newer["event_id"]),
        ("SKIPPED", first["event_id"]),
    ]
    assert parked["history"][0]["waiting_for"] == waiting_for

    for entity, record in [("programs", program), ("teachers", teacher), ("units", unit)]:
        sync(client, entity, [record])
    sync(client, "students", [student])
    released_by = sync(client, "classes", [klass])
    stored = view_of(client, "enrollments", enrollment["id"])

    assert stored["state"] == "stored"
    assert stored["parked"] is None
    assert stored["stored"]["data"]["enrollment_type"] == "Recording"
    assert stored["stored"]["last_event_id"] == released_by["event_id"]
    assert [h["outcome"] for h in stored["history"]] == ["NEW", "SKIPPED", "SKIPPED"]


def test_a_parked_record_no_longer_waits_for_a_dependency_that_arrived(
    client: TestClient,
) -> None:
    student, klass = StudentRecordFactory(), ClassRecordFactory()
    enrollment = EnrollmentRecordFactory(student=student, class_=klass)
    sync(client, "enrollments", [enrollment])
    sync(client, "students", [student])

    parked = view_of(client, "enrollments", enrollment["id"])["parked"]

    assert parked["waiting_for"] == [
        {"entity": "classes", "zoho_id": klass["id"], "field": "Classes"}
    ]
    assert parked["reason"] == "class_not_synced_yet"


def test_a_record_that_only_ever_arrived_invalid_is_not_stored_with_its_errors(
    client: TestClient,
) -> None:
    student = StudentRecordFactory(First_Name="  ")
    answer = sync(client, "students", [student])

    view = view_of(client, "students", student["id"])

    assert view["state"] == "not_stored"
    assert view["stored"] is None
    assert view["parked"] is None
    assert view["history"] == [
        {
            "outcome": "INVALID",
            "at": view["history"][0]["at"],
            "event_id": answer["event_id"],
            "errors": [{"field": "First_Name", "message": "required, but empty"}],
            "message": "First_Name: required, but empty",
        }
    ]


def test_the_history_is_newest_first_and_as_long_as_asked_within_range(client: TestClient) -> None:
    student = StudentRecordFactory(First_Name="Hana")
    sync(client, "students", [student])
    sync(client, "students", [edited(student, 5, First_Name="Hanan")])
    sync(client, "students", [edited(student, 10, Last_Name="")])
    sync(client, "students", [edited(student, -60)])
    sync(client, "students", [edited(student, 5, First_Name="Hanan")])

    history = view_of(client, "students", student["id"])["history"]
    two = view_of(client, "students", student["id"], "?history=2")
    none = view_of(client, "students", student["id"], "?history=0")

    assert [h["outcome"] for h in history] == ["STALE", "INVALID", "UPDATED", "NEW"]
    assert history[2]["changes"] == {"First_Name": ["Hana", "Hanan"]}
    assert history[1]["errors"] == [{"field": "Last_Name", "message": "required, but empty"}]
    assert history[0]["reason"] == "older_than_stored"
    assert [h["outcome"] for h in two["history"]] == ["STALE", "INVALID"]
    assert none["history"] == []
    assert none["state"] == "stored"
    assert none["stored"]["data"]["first_name"] == "Hanan"
    for query in ("-1", "1001", "many"):
        response = client.get(f"/v1/records/students/{student['id']}?history={query}")
        assert response.status_code == 422, (query, response.text)
        error = response.json()["error"]
        assert error["code"] == "unprocessable", query
        assert [d["field"] for d in error["details"]] == ["query.history"], query


def test_an_unknown_record_entity_or_tenant_is_404(client: TestClient, db: Database) -> None:
    north = tenant_with_secret(db, "north")
    teacher = TeacherRecordFactory()
    sync(client, "teachers", [teacher])
    path = f"/v1/records/teachers/{teacher['id']}"

    assert_not_found(
        client,
        "/v1/records/enrollments/5725767141565000085",
        "no enrollment 5725767141565000085 has reached this service",
    )
    assert_not_found(
        client,
        "/v1/records/contacts/1",
        "unknown entity 'contacts'; known: programs, teachers, students, units, classes, "
        "enrollments, registrations, payments, grades",
    )
    assert_not_found(client, path, f"no teacher {teacher['id']} has reached this service", **north)
    assert view_of(client, "teachers", teacher["id"])["state"] == "stored"


def test_health_reports_the_database_and_its_schema_or_that_it_is_unreachable(
    client: TestClient, backend: str
) -> None:
    healthy = client.get("/v1/health", headers={"X-Tenant-ID": "no-such-tenant"})
    unreachable = Database("postgresql+psycopg://nobody:nothing@127.0.0.1:9/nowhere")
    working = client.app.state.db  # type: ignore[attr-defined]
    client.app.state.db = unreachable  # type: ignore[attr-defined]
    try:
        down = client.get("/v1/health")
    finally:
        client.app.state.db = working  # type: ignore[attr-defined]
        unreachable.dispose()

    assert healthy.status_code == 200, healthy.text
    assert healthy.json() == {
        "status": "ok",
        "database": backend,
        "schema": migrate.head_revision(),
        "schema_current": True,
        "version": __version__,
    }
    assert down.status_code == 503, down.text
    assert down.json()["status"] == "unavailable"
    assert down.json()["version"] == __version__
