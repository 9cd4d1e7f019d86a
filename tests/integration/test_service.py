"""The service on a real database: outcomes, what is stored, parking and its release, tenants.

Requests go through ingress as the API sends them (the body stored and committed, then one
transaction); every assertion reads what ended up in the tables.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from tests.factories import (
    USERS,
    ClassRecordFactory,
    EnrollmentRecordFactory,
    PaymentRecordFactory,
    ProgramRecordFactory,
    Record,
    RegistrationRecordFactory,
    StudentRecordFactory,
    TeacherRecordFactory,
    UnitRecordFactory,
    build_college,
    load_sample_college,
    lookup,
)
from tests.integration.harness import (
    ENTITY_KEYS,
    count,
    describe,
    event,
    history,
    jobs,
    later,
    new_tenant,
    one_of_each,
    outcomes,
    parked,
    released,
    send,
    send_before,
    stored,
    stored_ids,
    utc,
    waits,
)
from zoho_moodle_sync import service
from zoho_moodle_sync.db.models import ENTITY_TABLES, ParkedRecord, ParkedWait, RecordOutcome
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.field_mapping import DEFAULT_MAPPING
from zoho_moodle_sync.fingerprint import fingerprint
from zoho_moodle_sync.ingress import pipeline
from zoho_moodle_sync.mapper import map_record
from zoho_moodle_sync.parser import parse_record
from zoho_moodle_sync.service import Outcome
from zoho_moodle_sync.stages import MappedRecord
from zoho_moodle_sync.tenants import TenantContext, context_of, create, set_mapping

# --- what each entity's tests change --------------------------------------------------------


def family() -> dict[str, Record]:
    """One record of every entity, with the values the edits below start from."""
    college = one_of_each()
    college["teachers"]["Phone_Number"] = "+90 532 555 0101"
    college["students"]["Last_Name"] = "Kaya"
    return college


@dataclass(frozen=True)
class Edit:
    """A change made in Zoho and what it becomes: the column read back and `changes`."""

    field: str
    value: Any
    column: str
    stored: Any
    before: Any
    after: Any


EDITS: dict[str, Edit] = {
    "programs": Edit("Program_Price", 5200.5, "price", Decimal("5200.5"), "4800", "5200.5"),
    "teachers": Edit(
        "Phone_Number",
        "+90 532 555 0199",
        "phone",
        "+90 532 555 0199",
        "+90 532 555 0101",
        "+90 532 555 0199",
    ),
    "students": Edit("Last_Name", "  Öztürk ", "last_name", "Öztürk", "Kaya", "Öztürk"),
    "units": Edit("Unit_Credit", "30", "credit", "30", "15", "30"),
    "classes": Edit(
        "End_Date", "2026-01-09", "end_date", dt.date(2026, 1, 9), "2025-12-22", "2026-01-09"
    ),
    "enrollments": Edit(
        "Enrollment_Type", "Self-Study", "enrollment_type", "Self-Study", "Normal", "Self-Study"
    ),
    "registrations": Edit(
        "Registration_Status", "Withdraw", "status", "Withdraw", "Active", "Withdraw"
    ),
    "payments": Edit("Installment_No", 2, "installment_no", 2, 1, 2),
    "grades": Edit("Grade", "D", "grade", "D", "M", "D"),
}

#: entity -> (the column naming the record, the Zoho field it comes from)
IDENTITY: dict[str, tuple[str, str]] = {
    "programs": ("name", "Product_Name"),
    "teachers": ("name", "Name"),
    "students": ("student_number", "Name"),
    "units": ("name", "Name"),
    "classes": ("class_name", "Class_Name"),
    "enrollments": ("student_zoho_id", "Enrolled_Students"),
    "registrations": ("student_zoho_id", "Student_ID"),
    "payments": ("registration_zoho_id", "Registration_ID"),
    "grades": ("class_zoho_id", "Class"),
}

#: entity -> (changes that make a record invalid, the Zoho field blamed, words of the message)
BREAKAGES: dict[str, tuple[dict[str, Any], str, str]] = {
    "programs": ({"Product_Name": None}, "Product_Name", "required, but empty"),
    "teachers": ({"Name": None}, "Name", "required, but empty"),
    "students": ({"First_Name": 42}, "First_Name", "expected text"),
    "units": ({"Name": "   "}, "Name", "required, but empty"),
    "classes": ({"Teacher": "Mr Smith"}, "Teacher", "expected a Zoho record id"),
    "enrollments": ({"Enrolled_Students": None}, "Enrolled_Students", "required, but empty"),
    "registrations": (
        {"Student_ID": {"name": "A2025MS0PSZ-0003", "id": "A2025MS0PSZ-0003"}},
        "Student_ID",
        "expected a Zoho record id",
    ),
    "payments": ({"Registration_ID": None}, "Registration_ID", "required, but empty"),
    "grades": ({"Student": {"name": "Ali"}}, "Student", "required, but empty"),
}

#: (dependent entity, its lookup field, the entity that must be stored first)
DEPENDENCIES = [
    ("units", "Program", "programs"),
    ("classes", "BTEC_Program", "programs"),
    ("classes", "Teacher", "teachers"),
    ("classes", "Unit", "units"),
    ("enrollments", "Enrolled_Students", "students"),
    ("enrollments", "Classes", "classes"),
    ("registrations", "Student_ID", "students"),
    ("registrations", "Program", "programs"),
    ("payments", "Registration_ID", "registrations"),
    ("grades", "Student", "students"),
    ("grades", "Class", "classes"),
]
DEPENDENCY_IDS = [f"{d}-{field}" for d, field, _ in DEPENDENCIES]


def fresh(entity: str, college: dict[str, Record]) -> Record:
    """A new record of `entity`, not yet sent, whose own lookups point into `college`."""
    builders = {
        "programs": lambda: ProgramRecordFactory(major="Business"),
        "teachers": lambda: TeacherRecordFactory(locale="tr_TR"),
        "students": lambda: StudentRecordFactory(program=college["programs"]),
        "units": lambda: UnitRecordFactory(program=college["programs"], number=2),
        "classes": lambda: ClassRecordFactory(
            unit=college["units"], teacher=college["teachers"], term="T2"
        ),
        "registrations": lambda: RegistrationRecordFactory(student=college["students"]),
    }
    return builders[entity]()


def expected_row(entity: str, record: Record) -> dict[str, Any]:
    """The domain columns the record should be stored with."""
    mapped = map_record(DEFAULT_MAPPING.for_entity(ENTITY_BY_KEY[entity]), parse_record(record))
    assert isinstance(mapped, MappedRecord), mapped
    return mapped.record.model_dump()


def lookup_id(value: Any) -> Any:
    return value["id"] if isinstance(value, dict) else value


# --- every entity: NEW, UNCHANGED, UPDATED, STALE, INVALID, fingerprint -----------------------


@pytest.mark.parametrize("entity", ENTITY_KEYS)
def test_a_new_record_is_stored_and_an_identical_resend_writes_nothing(
    db: Database, tenant: TenantContext, entity: str
) -> None:
    college = family()
    send_before(db, tenant, college, entity)
    record = college[entity]

    first = send(db, tenant, entity, [record])

    assert outcomes(first.results) == ["NEW"]
    row = stored(db, tenant, entity, record["id"])
    assert row is not None
    column, field = IDENTITY[entity]
    assert row[column] == lookup_id(record[field])
    expected = expected_row(entity, record)
    assert {name: row[name] for name in expected} == expected
    assert row["raw"] == record
    assert row["fingerprint"] == fingerprint(row["data"])
    assert row["zoho_modified_time"] == utc(record["Modified_Time"])
    assert row["last_event_id"] == first.event_id
    assert row["created_at"] == row["updated_at"]
    assert history(db, tenant, entity, record["id"]) == ["NEW"]
    delivery = jobs(db, tenant)

    second = send(db, tenant, entity, [record])

    assert outcomes(second.results) == ["UNCHANGED"]
    again = stored(db, tenant, entity, record["id"])
    assert again == row
    assert history(db, tenant, entity, record["id"]) == ["NEW"]
    assert jobs(db, tenant) == delivery
    assert event(db, second.event_id).summary == {
        **dict.fromkeys(Outcome, 0),
        "total": 1,
        "UNCHANGED": 1,
        "released": 0,
    }


@pytest.mark.parametrize("entity", ENTITY_KEYS)
def test_an_edit_is_updated_with_its_changes_in_zoho_names(
    db: Database, tenant: TenantContext, entity: str
) -> None:
    college = family()
    send_before(db, tenant, college, entity)
    record = college[entity]
    first = send(db, tenant, entity, [record])
    before = stored(db, tenant, entity, record["id"])
    assert before is not None
    edit = EDITS[entity]
    edited = later(record, **{edit.field: edit.value})

    second = send(db, tenant, entity, [edited])

    [result] = second.results
    assert result.outcome is Outcome.UPDATED
    assert result.changes == {edit.field: [edit.before, edit.after]}
    after = stored(db, tenant, entity, record["id"])
    assert after is not None
    assert after[edit.column] == edit.stored
    assert after["data"][edit.column] == edit.after
    assert after["raw"] == edited
    assert after["fingerprint"] != before["fingerprint"]
    assert after["zoho_modified_time"] == utc(edited["Modified_Time"])
    assert after["last_event_id"] == second.event_id != first.event_id
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] > before["updated_at"]
    assert after["id"] == before["id"]
    view = describe(db, tenant, entity, record["id"])
    assert view is not None
    assert [h["outcome"] for h in view["history"]] == ["UPDATED", "NEW"]
    assert view["history"][0]["changes"] == {edit.field: [edit.before, edit.after]}
    assert view["history"][0]["event_id"] == second.event_id


@pytest.mark.parametrize("entity", ENTITY_KEYS)
def test_an_older_version_is_stale_and_leaves_the_stored_one_alone(
    db: Database, tenant: TenantContext, entity: str
) -> None:
    college = family()
    send_before(db, tenant, college, entity)
    record = college[entity]
    edit = EDITS[entity]
    newer = later(record, minutes=60)
    send(db, tenant, entity, [newer])
    before = stored(db, tenant, entity, record["id"])

    report = send(db, tenant, entity, [later(record, minutes=1, **{edit.field: edit.value})])

    [result] = report.results
    assert result.outcome is Outcome.STALE
    assert result.reason == "older_than_stored"
    assert result.message is not None
    assert "older than the version already received" in result.message
    assert stored(db, tenant, entity, record["id"]) == before
    assert history(db, tenant, entity, record["id"]) == ["NEW", "STALE"]


@pytest.mark.parametrize("entity", ENTITY_KEYS)
def test_an_invalid_record_names_the_zoho_field_and_is_not_stored(
    db: Database, tenant: TenantContext, entity: str
) -> None:
    record = family()[entity]
    changes, field, words = BREAKAGES[entity]

    report = send(db, tenant, entity, [{**record, **changes}])

    [result] = report.results
    assert result.outcome is Outcome.INVALID
    assert result.errors is not None
    assert [e["field"] for e in result.errors] == [field]
    assert words in result.errors[0]["message"]
    assert stored(db, tenant, entity, record["id"]) is None
    assert parked(db, tenant) == {}
    view = describe(db, tenant, entity, record["id"])
    assert view is not None
    assert view["state"] == "not_stored"
    assert view["history"][0]["outcome"] == "INVALID"
    assert view["history"][0]["errors"] == result.errors


@pytest.mark.parametrize("entity", ENTITY_KEYS)
def test_zoho_system_fields_do_not_change_the_fingerprint(
    db: Database, tenant: TenantContext, entity: str
) -> None:
    college = family()
    send_before(db, tenant, college, entity)
    record = college[entity]
    first = send(db, tenant, entity, [record])
    before = stored(db, tenant, entity, record["id"])
    assert before is not None
    touched = later(
        record,
        minutes=30,
        Modified_By=dict(USERS[2]),
        Owner=dict(USERS[1]),
        Tag=[{"name": "Follow-up", "id": "5725767141565100001"}],
        **{
            "$approval_state": "approval_process_pending",
            "$state": "draft",
            "$editable": False,
            "$locked_for_me": True,
            "$approval": {"delegate": True, "approve": True, "reject": True},
        },
    )

    report = send(db, tenant, entity, [touched])

    assert outcomes(report.results) == ["UNCHANGED"]
    after = stored(db, tenant, entity, record["id"])
    assert after is not None
    assert after["fingerprint"] == before["fingerprint"]
    assert after["data"] == before["data"]
    assert after["updated_at"] == before["updated_at"]
    assert after["last_event_id"] == first.event_id
    # The newer Modified_Time is remembered, so a version in between is now stale.
    assert after["zoho_modified_time"] == utc(touched["Modified_Time"])
    assert history(db, tenant, entity, record["id"]) == ["NEW"]
    in_between = later(record, minutes=10, **{EDITS[entity].field: EDITS[entity].value})
    assert outcomes(send(db, tenant, entity, [in_between]).results) == ["STALE"]


def test_modified_times_are_compared_as_instants_whatever_their_offset(
    db: Database, tenant: TenantContext
) -> None:
    student = StudentRecordFactory(Modified_Time="2025-05-10T10:00:00+03:00", Last_Name="Kaya")
    send(db, tenant, "students", [student])
    # 08:00 UTC is an hour after 10:00+03:00, though its clock reads earlier.
    newer = {**student, "Modified_Time": "2025-05-10T08:00:00Z", "Last_Name": "Demir"}
    # 09:30+02:00 is 07:30 UTC: before the newer one, though its clock reads later.
    older = {**student, "Modified_Time": "2025-05-10T09:30:00+02:00", "Last_Name": "Arslan"}

    assert outcomes(send(db, tenant, "students", [newer]).results) == ["UPDATED"]
    assert outcomes(send(db, tenant, "students", [older]).results) == ["STALE"]

    row = stored(db, tenant, "students", student["id"])
    assert row is not None
    assert row["last_name"] == "Demir"
    assert row["zoho_modified_time"] == dt.datetime(2025, 5, 10, 8, 0, tzinfo=dt.UTC)


# --- dependencies -----------------------------------------------------------------------------


@pytest.mark.parametrize(("entity", "field", "dependency"), DEPENDENCIES, ids=DEPENDENCY_IDS)
def test_a_record_waits_for_a_missing_dependency_then_completes_when_it_arrives(
    db: Database, tenant: TenantContext, entity: str, field: str, dependency: str
) -> None:
    college = family()
    send_before(db, tenant, college, entity)
    awaited = fresh(dependency, college)
    record = {**college[entity], field: lookup(awaited)}

    first = send(db, tenant, entity, [record])

    [result] = first.results
    label = ENTITY_BY_KEY[dependency].label
    waiting_for = [{"entity": dependency, "zoho_id": awaited["id"], "field": field}]
    assert result.outcome is Outcome.SKIPPED
    assert result.reason == f"{label}_not_synced_yet"
    assert result.waiting_for == waiting_for
    assert result.message is not None
    assert awaited["id"] in result.message
    assert stored(db, tenant, entity, record["id"]) is None
    view = describe(db, tenant, entity, record["id"])
    assert view is not None
    assert view["state"] == "parked"
    assert view["parked"]["reason"] == f"{label}_not_synced_yet"
    assert view["parked"]["waiting_for"] == waiting_for
    assert view["parked"]["event_id"] == first.event_id
    assert waits(db, tenant) == {(record["id"], dependency, awaited["id"])}

    second = send(db, tenant, dependency, [awaited])

    assert outcomes(second.results) == ["NEW"]
    assert released(second) == [(entity, record["id"], "NEW")]
    row = stored(db, tenant, entity, record["id"])
    assert row is not None
    [dep_column] = [f.name for f in ENTITY_BY_KEY[entity].fields if f.zoho == field]
    assert row[dep_column] == awaited["id"]
    assert row["raw"] == record
    assert row["last_event_id"] == second.event_id
    assert parked(db, tenant) == {}
    assert waits(db, tenant) == set()
    assert history(db, tenant, entity, record["id"]) == ["SKIPPED", "NEW"]
    assert event(db, second.event_id).summary == {
        **dict.fromkeys(Outcome, 0),
        "total": 1,
        "NEW": 1,
        "released": 1,
    }


@pytest.mark.parametrize("dependency_first", [True, False], ids=["before", "after"])
@pytest.mark.parametrize(("entity", "field", "dependency"), DEPENDENCIES, ids=DEPENDENCY_IDS)
def test_a_dependency_in_the_same_transaction_resolves_before_or_after(
    db: Database,
    tenant: TenantContext,
    entity: str,
    field: str,
    dependency: str,
    dependency_first: bool,
) -> None:
    college = family()
    send_before(db, tenant, college, entity)
    awaited = fresh(dependency, college)
    record = {**college[entity], field: lookup(awaited)}
    steps = [(dependency, awaited), (entity, record)]
    if not dependency_first:
        steps.reverse()

    seen: list[tuple[str, str | None, str]] = []
    with db.sessions.begin() as session:
        for key, raw in steps:
            results, freed = pipeline.process_records(
                session, tenant=tenant, entity=ENTITY_BY_KEY[key], raw_records=[raw], event_id=None
            )
            seen += [(r.entity, r.zoho_id, r.outcome.value) for r in results + freed]

    if dependency_first:
        assert seen == [(dependency, awaited["id"], "NEW"), (entity, record["id"], "NEW")]
    else:
        assert seen == [
            (entity, record["id"], "SKIPPED"),
            (dependency, awaited["id"], "NEW"),
            (entity, record["id"], "NEW"),
        ]
    assert stored(db, tenant, dependency, awaited["id"]) is not None
    assert stored(db, tenant, entity, record["id"]) is not None
    assert parked(db, tenant) == {}
    assert count(db, ParkedWait) == 0


def test_a_class_without_teacher_or_unit_waits_only_for_its_program(
    db: Database, tenant: TenantContext
) -> None:
    program = ProgramRecordFactory()
    loose = ClassRecordFactory(program=program, Teacher=None, Unit=None)
    send(db, tenant, "programs", [program])

    report = send(db, tenant, "classes", [loose])

    assert outcomes(report.results) == ["NEW"]
    row = stored(db, tenant, "classes", loose["id"])
    assert row is not None
    assert (row["program_zoho_id"], row["teacher_zoho_id"], row["unit_zoho_id"]) == (
        program["id"],
        None,
        None,
    )


def test_a_payment_waiting_on_a_registration_waiting_on_a_student_is_released_in_cascade(
    db: Database, tenant: TenantContext
) -> None:
    program = ProgramRecordFactory()
    student = StudentRecordFactory(program=program)
    registration = RegistrationRecordFactory(student=student)
    payment = PaymentRecordFactory(registration=registration)
    send(db, tenant, "programs", [program])

    skipped_payment = send(db, tenant, "payments", [payment])
    skipped_registration = send(db, tenant, "registrations", [registration])

    assert [r.reason for r in skipped_payment.results] == ["registration_not_synced_yet"]
    assert [r.reason for r in skipped_registration.results] == ["student_not_synced_yet"]
    assert set(parked(db, tenant)) == {
        ("payments", payment["id"]),
        ("registrations", registration["id"]),
    }

    report = send(db, tenant, "students", [student])

    assert outcomes(report.results) == ["NEW"]
    assert released(report) == [
        ("registrations", registration["id"], "NEW"),
        ("payments", payment["id"], "NEW"),
    ]
    assert stored_ids(db, tenant, "registrations") == {registration["id"]}
    assert stored_ids(db, tenant, "payments") == {payment["id"]}
    row = stored(db, tenant, "payments", payment["id"])
    assert row is not None
    assert row["registration_zoho_id"] == registration["id"]
    assert row["last_event_id"] == report.event_id
    assert parked(db, tenant) == {}
    assert count(db, ParkedWait) == 0


def test_a_record_waiting_for_two_dependencies_is_released_only_by_the_last(
    db: Database, tenant: TenantContext
) -> None:
    college = family()
    send_before(db, tenant, college, "enrollments")
    student = fresh("students", college)
    class_ = fresh("classes", college)
    enrollment = EnrollmentRecordFactory(student=student, class_=class_)

    first = send(db, tenant, "enrollments", [enrollment])

    [result] = first.results
    assert result.reason == "student_not_synced_yet"
    assert result.waiting_for == [
        {"entity": "students", "zoho_id": student["id"], "field": "Enrolled_Students"},
        {"entity": "classes", "zoho_id": class_["id"], "field": "Classes"},
    ]

    after_student = send(db, tenant, "students", [student])

    assert released(after_student) == []
    assert waits(db, tenant) == {(enrollment["id"], "classes", class_["id"])}
    assert stored(db, tenant, "enrollments", enrollment["id"]) is None

    after_class = send(db, tenant, "classes", [class_])

    assert released(after_class) == [("enrollments", enrollment["id"], "NEW")]
    row = stored(db, tenant, "enrollments", enrollment["id"])
    assert row is not None
    assert (row["student_zoho_id"], row["class_zoho_id"]) == (student["id"], class_["id"])
    assert parked(db, tenant) == {}


def test_a_parked_record_shows_only_what_it_still_waits_for(
    db: Database, tenant: TenantContext
) -> None:
    college = family()
    send_before(db, tenant, college, "enrollments")
    student = fresh("students", college)
    class_ = fresh("classes", college)
    enrollment = EnrollmentRecordFactory(student=student, class_=class_)
    send(db, tenant, "enrollments", [enrollment])

    send(db, tenant, "students", [student])

    view = describe(db, tenant, "enrollments", enrollment["id"])
    assert view is not None
    assert view["parked"]["waiting_for"] == [
        {"entity": "classes", "zoho_id": class_["id"], "field": "Classes"}
    ]
    assert view["parked"]["reason"] == "class_not_synced_yet"


def test_an_update_waiting_for_a_new_dependency_keeps_the_stored_version_until_it_arrives(
    db: Database, tenant: TenantContext
) -> None:
    college = family()
    send_before(db, tenant, college, "enrollments")
    enrollment = college["enrollments"]
    send(db, tenant, "enrollments", [enrollment])
    moved_to = fresh("classes", college)
    moved = later(enrollment, Classes=lookup(moved_to), Class_Name=moved_to["Class_Name"])

    skipped = send(db, tenant, "enrollments", [moved])

    assert [r.reason for r in skipped.results] == ["class_not_synced_yet"]
    view = describe(db, tenant, "enrollments", enrollment["id"])
    assert view is not None
    assert view["state"] == "stored"
    assert view["stored"]["data"]["class_zoho_id"] == college["classes"]["id"]
    assert view["parked"]["waiting_for"][0]["zoho_id"] == moved_to["id"]

    report = send(db, tenant, "classes", [moved_to])

    [freed] = report.released
    assert freed.outcome is Outcome.UPDATED
    assert freed.changes == {"Classes": [college["classes"]["id"], moved_to["id"]]}
    row = stored(db, tenant, "enrollments", enrollment["id"])
    assert row is not None
    assert row["class_zoho_id"] == moved_to["id"]
    assert parked(db, tenant) == {}


def test_a_newer_version_of_a_parked_record_replaces_the_older_one(
    db: Database, tenant: TenantContext
) -> None:
    college = family()
    send_before(db, tenant, college, "enrollments")
    first_student = fresh("students", college)
    second_student = fresh("students", college)
    enrollment = EnrollmentRecordFactory(student=first_student, class_=college["classes"])
    send(db, tenant, "enrollments", [enrollment])
    parked_at = parked(db, tenant)[("enrollments", enrollment["id"])].parked_at
    corrected = later(
        enrollment, Enrolled_Students=lookup(second_student), Enrollment_Type="Recording"
    )

    report = send(db, tenant, "enrollments", [corrected])

    assert [r.waiting_for for r in report.results] == [
        [{"entity": "students", "zoho_id": second_student["id"], "field": "Enrolled_Students"}]
    ]
    rows = parked(db, tenant)
    assert list(rows) == [("enrollments", enrollment["id"])]
    row = rows[("enrollments", enrollment["id"])]
    assert row.raw == corrected
    assert row.zoho_modified_time == utc(corrected["Modified_Time"])
    assert row.parked_at == parked_at
    assert row.inbound_event_id == report.event_id
    assert waits(db, tenant) == {(enrollment["id"], "students", second_student["id"])}

    assert released(send(db, tenant, "students", [first_student])) == []
    freed = send(db, tenant, "students", [second_student])

    assert released(freed) == [("enrollments", enrollment["id"], "NEW")]
    stored_row = stored(db, tenant, "enrollments", enrollment["id"])
    assert stored_row is not None
    assert stored_row["student_zoho_id"] == second_student["id"]
    assert stored_row["enrollment_type"] == "Recording"


def test_an_older_version_of_a_parked_record_is_stale_even_if_it_could_be_stored(
    db: Database, tenant: TenantContext
) -> None:
    college = family()
    send_before(db, tenant, college, "enrollments")
    awaited = fresh("students", college)
    # The older version points at a student that is stored; the newer one at one that is not.
    older = later(college["enrollments"], minutes=1)
    newer = later(college["enrollments"], minutes=20, Enrolled_Students=lookup(awaited))
    send(db, tenant, "enrollments", [newer])

    report = send(db, tenant, "enrollments", [older])

    assert outcomes(report.results) == ["STALE"]
    assert stored(db, tenant, "enrollments", older["id"]) is None
    assert parked(db, tenant)[("enrollments", older["id"])].raw == newer
    freed = send(db, tenant, "students", [awaited])
    assert released(freed) == [("enrollments", older["id"], "NEW")]
    row = stored(db, tenant, "enrollments", older["id"])
    assert row is not None
    assert row["student_zoho_id"] == awaited["id"]


def test_sweep_releases_records_whose_dependency_was_stored_without_releasing_them(
    db: Database, tenant: TenantContext
) -> None:
    college = family()
    send_before(db, tenant, college, "grades")
    student = fresh("students", college)
    grade = {**college["grades"], "Student": lookup(student)}
    send(db, tenant, "grades", [grade])
    # What a concurrent transaction leaves behind: the student stored, the grade still parked.
    mapping = tenant.mapping.for_entity(ENTITY_BY_KEY["students"])
    with db.sessions.begin() as session:
        batch = service.apply_batch(
            session=session,
            tenant_id=tenant.id,
            mapping=mapping,
            items=[(0, map_record(mapping, parse_record(student)))],
            event_id=None,
        )
    assert outcomes(batch.results) == ["NEW"]
    assert set(parked(db, tenant)) == {("grades", grade["id"])}

    results = pipeline.sweep_parked(db, tenant)

    assert [(r.entity, r.zoho_id, r.outcome.value) for r in results] == [
        ("grades", grade["id"], "NEW")
    ]
    row = stored(db, tenant, "grades", grade["id"])
    assert row is not None
    assert row["student_zoho_id"] == student["id"]
    assert parked(db, tenant) == {}
    assert pipeline.sweep_parked(db, tenant) == []


def test_a_parked_record_that_never_resolves_stays_visible(
    db: Database, tenant: TenantContext
) -> None:
    college = family()
    send_before(db, tenant, college, "payments")
    ghost = fresh("registrations", college)
    payment = PaymentRecordFactory(registration=ghost)
    first = send(db, tenant, "payments", [payment])
    for other in (StudentRecordFactory(program=college["programs"]) for _ in range(3)):
        send(db, tenant, "students", [other])

    assert pipeline.sweep_parked(db, tenant) == []
    assert pipeline.sweep_all_tenants(db) == 0

    view = describe(db, tenant, "payments", payment["id"])
    assert view is not None
    assert view["state"] == "parked"
    assert view["stored"] is None
    assert view["parked"]["reason"] == "registration_not_synced_yet"
    assert view["parked"]["waiting_for"] == [
        {"entity": "registrations", "zoho_id": ghost["id"], "field": "Registration_ID"}
    ]
    assert ghost["id"] in view["parked"]["message"]
    assert view["parked"]["event_id"] == first.event_id
    assert [(h["outcome"], h["reason"]) for h in view["history"]] == [
        ("SKIPPED", "registration_not_synced_yet")
    ]


# --- tenants ----------------------------------------------------------------------------------


def test_the_same_zoho_id_in_two_tenants_is_two_records(
    db: Database, tenant: TenantContext
) -> None:
    other = new_tenant(db, "riverside")
    student = StudentRecordFactory(Last_Name="Kaya")
    theirs = {**student, "Last_Name": "Demir"}

    mine = send(db, tenant, "students", [student])
    their_report = send(db, other, "students", [theirs])

    assert outcomes(mine.results) == outcomes(their_report.results) == ["NEW"]
    table = ENTITY_TABLES["students"]
    with db.sessions() as session:
        rows = session.execute(
            select(table.c.tenant_id, table.c.last_name).where(table.c.zoho_id == student["id"])
        ).all()
    assert sorted(rows) == sorted([(tenant.id, "Kaya"), (other.id, "Demir")])
    assert outcomes(send(db, other, "students", [theirs]).results) == ["UNCHANGED"]
    assert history(db, tenant, "students", student["id"]) == ["NEW"]


def test_a_tenants_dependency_does_not_satisfy_another_tenants_record(
    db: Database, tenant: TenantContext
) -> None:
    other = new_tenant(db, "riverside")
    college = family()
    for key in ENTITY_KEYS[: ENTITY_KEYS.index("enrollments")]:
        send(db, tenant, key, [college[key]])
        if key != "students":
            send(db, other, key, [college[key]])

    report = send(db, other, "enrollments", [college["enrollments"]])

    assert [r.reason for r in report.results] == ["student_not_synced_yet"]
    assert set(parked(db, other)) == {("enrollments", college["enrollments"]["id"])}
    assert outcomes(send(db, tenant, "students", [college["students"]]).results) == ["UNCHANGED"]
    assert pipeline.sweep_parked(db, other) == []
    assert stored(db, other, "enrollments", college["enrollments"]["id"]) is None
    assert describe(db, tenant, "enrollments", college["enrollments"]["id"]) is None

    freed = send(db, other, "students", [college["students"]])

    assert released(freed) == [("enrollments", college["enrollments"]["id"], "NEW")]
    assert stored_ids(db, other, "enrollments") == {college["enrollments"]["id"]}
    assert stored_ids(db, tenant, "enrollments") == set()


CONTACTS_MAPPING = {
    "entities": {
        "students": {
            "module": "Contacts",
            "fields": {
                "student_number": "Student_No",
                "academic_email": "Secondary_Email",
                "phone": "Mobile",
            },
            "status_values": {"Enrolled": "Active", "Withdrawn": "Withdraw"},
        }
    }
}


def as_contact(student: Record) -> Record:
    """The student as a Contacts record of an org that keeps its students there."""
    renamed = {"Name": "Student_No", "Academic_Email": "Secondary_Email", "Phone_Number": "Mobile"}
    contact = {renamed.get(k, k): v for k, v in student.items()}
    contact["Full_Name"] = f"{student['First_Name']} {student['Last_Name']}"
    return contact


def test_a_tenant_with_students_in_contacts_is_synced_with_its_own_field_names(
    db: Database, tenant: TenantContext
) -> None:
    with db.sessions.begin() as session:
        row = create(session, slug="contacts-college")
        set_mapping(session, row, CONTACTS_MAPPING)
        contacts = context_of(row)
    assert contacts.mapping.module_for(ENTITY_BY_KEY["students"]) == "Contacts"
    college = family()
    for key in ("programs", "teachers", "units", "classes"):
        send(db, contacts, key, [college[key]])
    student = college["students"]
    contact = as_contact({**student, "Status": "Enrolled"})
    waiting = send(db, contacts, "enrollments", [college["enrollments"]])
    assert [r.reason for r in waiting.results] == ["student_not_synced_yet"]

    report = send(db, contacts, "students", [contact])

    assert outcomes(report.results) == ["NEW"]
    assert released(report) == [("enrollments", college["enrollments"]["id"], "NEW")]
    stored_row = stored(db, contacts, "students", student["id"])
    assert stored_row is not None
    assert stored_row["student_number"] == student["Name"]
    assert stored_row["academic_email"] == student["Academic_Email"]
    assert stored_row["phone"] == student["Phone_Number"]
    assert stored_row["status"] == "Active"

    withdrawn = send(db, contacts, "students", [later(contact, Status="Withdrawn")])

    [result] = withdrawn.results
    assert result.outcome is Outcome.UPDATED
    assert result.changes == {"Status": ["Active", "Withdraw"]}
    updated = stored(db, contacts, "students", student["id"])
    assert updated is not None
    assert updated["status"] == "Withdraw"

    unnumbered = {k: v for k, v in as_contact(StudentRecordFactory()).items() if k != "Student_No"}
    [invalid] = send(db, contacts, "students", [unnumbered]).results
    assert invalid.outcome is Outcome.INVALID
    assert invalid.errors == [{"field": "Student_No", "message": "required, but missing"}]

    # The default tenant keeps the BTEC names: the same Contacts record is not a student there.
    [elsewhere] = send(db, tenant, "students", [contact]).results
    assert elsewhere.outcome is Outcome.INVALID
    assert elsewhere.errors == [{"field": "Name", "message": "required, but missing"}]
    assert stored(db, tenant, "students", student["id"]) is None


# --- batches and data -------------------------------------------------------------------------


def test_one_bad_record_in_a_batch_does_not_fail_the_others(
    db: Database, tenant: TenantContext
) -> None:
    college = family()
    send_before(db, tenant, college, "enrollments")
    good = college["enrollments"]
    also_good = EnrollmentRecordFactory(student=college["students"], class_=college["classes"])
    backwards = EnrollmentRecordFactory(
        student=college["students"],
        class_=college["classes"],
        Start_Date="2025-12-22",
        End_Date="2025-09-15",
    )
    without_id = {**EnrollmentRecordFactory(student=college["students"]), "id": None}
    stranger = EnrollmentRecordFactory(class_=college["classes"])
    bad_time = EnrollmentRecordFactory(
        student=college["students"], class_=college["classes"], Modified_Time="yesterday"
    )
    batch = [good, backwards, "not a record", without_id, stranger, bad_time, also_good]

    report = send(db, tenant, "enrollments", batch)

    assert outcomes(report.results) == [
        "NEW",
        "NEW",
        "INVALID",
        "INVALID",
        "SKIPPED",
        "INVALID",
        "NEW",
    ]
    assert [r.index for r in report.results] == list(range(7))
    errors = [[e["field"] for e in r.errors or []] for r in report.results]
    assert errors == [[], [], ["(record)"], ["id"], [], ["Modified_Time"], []]
    assert [[w["code"] for w in r.warnings or []] for r in report.results] == [
        [],
        ["end_before_start"],
        [],
        [],
        [],
        [],
        [],
    ]
    assert stored_ids(db, tenant, "enrollments") == {good["id"], backwards["id"], also_good["id"]}
    assert set(parked(db, tenant)) == {("enrollments", stranger["id"])}
    assert history(db, tenant, "enrollments", backwards["id"]) == ["NEW"]
    assert history(db, tenant, "enrollments", bad_time["id"]) == ["INVALID"]
    stored_event = event(db, report.event_id)
    assert stored_event.status == "processed"
    assert stored_event.summary == {
        **dict.fromkeys(Outcome, 0),
        "total": 7,
        "NEW": 3,
        "INVALID": 3,
        "SKIPPED": 1,
        "released": 0,
    }


NAMES = [
    ("Şükrü", "Öztürk"),
    ("عبد الرحمن", "العتيبي"),
    ("Nguyễn Thị", "Zoë O'Brien-Ångström 🎓"),
]


def test_names_in_any_script_round_trip_unchanged(db: Database, tenant: TenantContext) -> None:
    students = [
        StudentRecordFactory(
            First_Name=first,
            Last_Name=last,
            Display_Name=f"{first} {last}",
            locale="ar_SA" if n == 1 else "tr_TR",
        )
        for n, (first, last) in enumerate(NAMES)
    ]

    assert outcomes(send(db, tenant, "students", students).results) == ["NEW"] * 3

    for student, (first, last) in zip(students, NAMES, strict=True):
        row = stored(db, tenant, "students", student["id"])
        assert row is not None
        assert (row["first_name"], row["last_name"]) == (first, last)
        assert (row["data"]["first_name"], row["data"]["last_name"]) == (first, last)
        assert row["raw"] == student
    table = ENTITY_TABLES["students"]
    with db.sessions() as session:
        found = session.scalar(select(table.c.zoho_id).where(table.c.last_name == "العتيبي"))
    assert found == students[1]["id"]
    assert outcomes(send(db, tenant, "students", students).results) == ["UNCHANGED"] * 3


BAD_VALUES = [
    pytest.param("teachers", "Name", "Ayşe\x00Kaya", "INVALID", id="nul-in-text"),
    pytest.param("programs", "Program_Price", 1e16, "NEW", id="amount-too-large"),
    pytest.param("payments", "Installment_No", 2**31, "NEW", id="integer-too-large"),
]


@pytest.mark.parametrize(("entity", "field", "value", "outcome"), BAD_VALUES)
def test_a_value_the_database_cannot_hold_is_refused_or_left_out_and_the_batch_stored(
    db: Database, tenant: TenantContext, entity: str, field: str, value: Any, outcome: str
) -> None:
    college = family()
    send_before(db, tenant, college, entity)
    good = college[entity]
    factory_of = {
        "teachers": lambda: TeacherRecordFactory(),
        "programs": lambda: ProgramRecordFactory(),
        "payments": lambda: PaymentRecordFactory(registration=college["registrations"]),
    }
    bad = {**factory_of[entity](), field: value}

    report = send(db, tenant, entity, [good, bad])

    assert outcomes(report.results) == ["NEW", outcome]
    result = report.results[1]
    if outcome == "INVALID":
        assert [e["field"] for e in result.errors or []] == [field]
        assert stored_ids(db, tenant, entity) == {good["id"]}
    else:
        assert [w["field"] for w in result.warnings or []] == [field]
        assert stored_ids(db, tenant, entity) == {good["id"], bad["id"]}
        row = stored(db, tenant, entity, bad["id"])
        assert row is not None
        assert row["warnings"] == result.warnings


def test_amounts_keep_their_four_decimal_places_and_more_is_left_out(
    db: Database, tenant: TenantContext
) -> None:
    exact = ProgramRecordFactory(Program_Price=4800.1234)
    finer = ProgramRecordFactory(Program_Price=4800.12345)

    report = send(db, tenant, "programs", [exact, finer])

    assert outcomes(report.results) == ["NEW", "NEW"]
    assert [(w["field"], w["code"], w["message"]) for w in report.results[1].warnings or []] == [
        (
            "Program_Price",
            "invalid_value",
            "more than 4 decimal places: 4800.12345; the value is left out until it is "
            "corrected in Zoho",
        )
    ]
    row = stored(db, tenant, "programs", exact["id"])
    assert row is not None
    assert row["data"]["price"] == "4800.1234"
    assert row["price"] == Decimal("4800.1234")


# --- a whole college, in any order ------------------------------------------------------------


def college_in_random_order(
    college: dict[str, list[Record]], rng: random.Random, requests: int
) -> list[tuple[str, list[Record]]]:
    """Every record shuffled across modules, cut into `requests` slices, each slice sent as one
    request per entity (in a random entity order)."""
    everything = [(module, record) for module, rows in college.items() for record in rows]
    rng.shuffle(everything)
    size = -(-len(everything) // requests)
    plan: list[tuple[str, list[Record]]] = []
    for start in range(0, len(everything), size):
        by_entity: dict[str, list[Record]] = {}
        for module, record in everything[start : start + size]:
            entity = DEFAULT_MAPPING.entity_for_module(module)
            assert entity is not None
            by_entity.setdefault(entity.key, []).append(record)
        keys = list(by_entity)
        rng.shuffle(keys)
        plan += [(key, by_entity[key]) for key in keys]
    return plan


def flawed(college: dict[str, list[Record]]) -> set[tuple[str, str]]:
    """Records Zoho allowed but the service must refuse: a student with no e-mail at all (Moodle
    needs one). A class or enrollment that ends before it starts is stored, with a warning."""
    return {
        ("students", r["id"])
        for r in college.get("BTEC_Students", [])
        if not (r["Email"] or r["Academic_Email"])
    }


def waiting_on(
    college: dict[str, list[Record]], refused: set[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Records that look up a refused record (an enrolment of a student refused for having no
    e-mail): they stay parked until the refused record arrives corrected."""
    refused_ids = {zoho_id for _, zoho_id in refused}
    return {
        (_entity_of(module), r["id"])
        for module, rows in college.items()
        for r in rows
        if any(isinstance(v, dict) and v.get("id") in refused_ids for v in r.values())
    }


@pytest.mark.parametrize(
    ("source", "seed"),
    [("built", 7), ("built", 20250510), ("sample", 3)],
    ids=["built-7", "built-20250510", "sample-3"],
)
def test_a_whole_college_sent_in_random_order_ends_fully_stored(
    db: Database, tenant: TenantContext, source: str, seed: int
) -> None:
    college = (
        build_college(students=10, classes=6, seed=seed)
        if source == "built"
        else load_sample_college()
    )
    refused = flawed(college)
    assert bool(refused) == (source == "sample")
    plan = college_in_random_order(college, random.Random(seed), requests=6)
    assert len({key for key, _ in plan[:3]}) > 1

    seen: list[tuple[str, str | None, str]] = []
    for key, records in plan:
        report = send(db, tenant, key, records)
        seen += [(r.entity, r.zoho_id, r.outcome.value) for r in report.results + report.released]

    everyone = {(_entity_of(m), r["id"]) for m, rows in college.items() for r in rows}
    new = [(e, i) for e, i, outcome in seen if outcome == "NEW"]
    # Each valid record is stored exactly once, some after waiting; only the flawed are refused,
    # and what depends on a refused record waits for its correction.
    waiting = waiting_on(college, refused)
    assert bool(waiting) == (source == "sample")
    assert sorted(new) == sorted(everyone - refused - waiting)
    assert {(e, i) for e, i, outcome in seen if outcome == "INVALID"} == refused
    assert {outcome for _, _, outcome in seen} <= {"NEW", "SKIPPED", "INVALID"}
    assert "SKIPPED" in {outcome for _, _, outcome in seen}
    for module, rows in college.items():
        entity = _entity_of(module)
        expected = {r["id"] for r in rows} - {i for e, i in refused | waiting if e == entity}
        assert stored_ids(db, tenant, entity) == expected, entity
    assert set(parked(db, tenant)) == waiting
    assert count(db, ParkedRecord) == count(db, ParkedWait) == len(waiting)
    assert count(db, RecordOutcome) == len(seen)
    for enrollment in college["BTEC_Enrollments"]:
        if ("enrollments", enrollment["id"]) in refused | waiting:
            continue
        row = stored(db, tenant, "enrollments", enrollment["id"])
        assert row is not None
        assert row["student_zoho_id"] == enrollment["Enrolled_Students"]["id"]
        assert row["class_zoho_id"] == enrollment["Classes"]["id"]


def _entity_of(module: str) -> str:
    entity = DEFAULT_MAPPING.entity_for_module(module)
    assert entity is not None
    return entity.key
