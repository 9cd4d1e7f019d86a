"""Mapper: Zoho record → domain record through a tenant's mapping; every failure names its field,
and a wrong value nobody needs to reach Moodle is left out with a warning instead."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.field_mapping import DEFAULT_MAPPING, FieldMapping
from zoho_moodle_sync.mapper import map_record
from zoho_moodle_sync.parser import parse_record
from zoho_moodle_sync.stages import InvalidRecord, MappedRecord, ZohoRecord


def _map(
    entity: str, raw: dict[str, Any], mapping: FieldMapping = DEFAULT_MAPPING
) -> MappedRecord | InvalidRecord:
    record = parse_record(raw)
    assert isinstance(record, ZohoRecord)
    return map_record(mapping.for_entity(ENTITY_BY_KEY[entity]), record)


def _errors(result: MappedRecord | InvalidRecord) -> dict[str, str]:
    assert isinstance(result, InvalidRecord), result
    return {e.field: e.message for e in result.errors}


def _warnings(result: MappedRecord | InvalidRecord) -> dict[str, tuple[str, str]]:
    """Zoho field → (code, message) of a record mapped with warnings."""
    assert isinstance(result, MappedRecord), result
    return {w.field: (w.code, w.message) for w in result.warnings}


STUDENT = {
    "id": "5725767141565000016",
    "Name": "A2025MS0PSZ-0003",
    "First_Name": "  Hana ",
    "Last_Name": "Yousef",
    "Email": "hana.yousef.3@mail.example.com",
    "Academic_Email": "a2025ms0psz-0003@students.example.edu",
    "Status": "Active",
    "Birth_Date": "2001-02-12",
    "Program": {"name": "BTEC Level 5 HND in Computing", "id": "5725767141565000004"},
    "Nationality": "Syria",
    "$editable": True,
    "Owner": {"name": "Reem", "id": "5725767141565000001", "email": "r@college.example"},
}


def test_student_is_mapped_from_the_btec_field_names() -> None:
    result = _map("students", STUDENT)
    assert isinstance(result, MappedRecord)
    assert result.data == {
        "student_number": "A2025MS0PSZ-0003",
        "first_name": "Hana",
        "last_name": "Yousef",
        "email": "hana.yousef.3@mail.example.com",
        "academic_email": "a2025ms0psz-0003@students.example.edu",
        "status": "Active",
        "phone": None,
        "birth_date": "2001-02-12",
        "registration_date": None,
        "academic_program": None,
        "major": None,
        "study_mode": None,
        "program_zoho_id": "5725767141565000004",
    }
    assert result.record.birth_date == date(2001, 2, 12)  # type: ignore[attr-defined]


def test_unicode_names_survive_unchanged() -> None:
    result = _map("students", {**STUDENT, "First_Name": "Çağrı", "Last_Name": "عبد الله"})  # noqa: RUF001
    assert isinstance(result, MappedRecord)
    assert (result.data["first_name"], result.data["last_name"]) == ("Çağrı", "عبد الله")  # noqa: RUF001


@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        ({"Name": None}, "Name", "required"),
        ({"First_Name": "   "}, "First_Name", "required"),
        ({"Last_Name": 42}, "Last_Name", "expected text, got the number 42"),
        ({"Program": {"name": "x", "id": "abc"}}, "Program", "Zoho record id"),
        ({"Program": ["5725767141565000004"]}, "Program", "Zoho record id"),
        (
            {"Email": None, "Academic_Email": None},
            "Academic_Email",
            "needs Academic_Email or Email",
        ),
        ({"Name": "x" * 121}, "Name", "longer than 120"),
        (
            {"Email": "not-an-email", "Academic_Email": None},
            "Email",
            "not an e-mail address",
        ),
    ],
)
def test_invalid_student_fields_are_named_in_zoho_terms(
    changes: dict[str, Any], field: str, text: str
) -> None:
    errors = _errors(_map("students", {**STUDENT, **changes}))
    assert field in errors, errors
    assert text in errors[field]


def test_missing_required_lookup_on_an_enrollment_is_invalid() -> None:
    errors = _errors(_map("enrollments", {"id": "9", "Classes": {"name": "c", "id": "5"}}))
    assert errors == {"Enrolled_Students": "required, but missing"}


@pytest.mark.parametrize(
    ("changes", "field", "code", "text"),
    [
        ({"Birth_Date": "2001-02-30"}, "Birth_Date", "invalid_value", "not a calendar date"),
        ({"Birth_Date": "12/02/2001"}, "Birth_Date", "invalid_value", "YYYY-MM-DD"),
        ({"Email": "not-an-email"}, "Email", "invalid_value", "not an e-mail address"),
        ({"Status": ["Active"]}, "Status", "invalid_value", "expected text, got an array"),
        ({"Phone_Number": "0" * 51}, "Phone_Number", "too_long", "longer than 50 characters"),
    ],
)
def test_a_wrong_value_in_an_optional_field_is_left_out_with_a_warning(
    changes: dict[str, Any], field: str, code: str, text: str
) -> None:
    result = _map("students", {**STUDENT, **changes})

    warnings = _warnings(result)
    assert list(warnings) == [field]
    assert warnings[field][0] == code
    assert text in warnings[field][1]
    assert warnings[field][1].endswith("left out until it is corrected in Zoho")
    assert isinstance(result, MappedRecord)
    name = next(f.name for f in ENTITY_BY_KEY["students"].fields if f.zoho == field)
    assert result.data[name] is None
    assert getattr(result.record, name) is None


def test_a_student_keeps_the_valid_one_of_two_e_mail_addresses() -> None:
    result = _map("students", {**STUDENT, "Academic_Email": "nope@"})
    assert list(_warnings(result)) == ["Academic_Email"]
    assert isinstance(result, MappedRecord)
    assert (result.data["academic_email"], result.data["email"]) == (
        None,
        "hana.yousef.3@mail.example.com",
    )


def test_an_invalid_record_lists_its_optional_faults_too() -> None:
    errors = _errors(_map("students", {**STUDENT, "First_Name": None, "Birth_Date": "soon"}))
    assert set(errors) == {"First_Name", "Birth_Date"}


def test_enrollment_ending_before_it_starts_is_stored_with_a_warning_naming_both_dates() -> None:
    raw = {
        "id": "9",
        "Enrolled_Students": {"name": "s", "id": "1"},
        "Classes": {"name": "c", "id": "2"},
        "Start_Date": "2025-09-29",
        "End_Date": "2025-09-26",
    }
    result = _map("enrollments", raw)

    assert _warnings(result) == {
        "End_Date": (
            "end_before_start",
            "End_Date 2025-09-26 is before Start_Date 2025-09-29; Moodle gets no end date until "
            "the dates are corrected in Zoho",
        )
    }
    assert isinstance(result, MappedRecord)
    assert (result.data["start_date"], result.data["end_date"]) == ("2025-09-29", "2025-09-26")


def test_dates_in_order_or_missing_give_no_warning() -> None:
    base = {"id": "9", "Enrolled_Students": "1", "Classes": "2"}
    for dates in (
        {"Start_Date": "2025-09-26", "End_Date": "2025-09-26"},
        {"Start_Date": "2025-09-26"},
        {"End_Date": "2025-09-26"},
    ):
        assert _warnings(_map("enrollments", {**base, **dates})) == {}


def test_picklist_none_placeholder_reads_as_empty() -> None:
    result = _map("students", {**STUDENT, "Status": "-None-"})
    assert isinstance(result, MappedRecord)
    assert result.data["status"] is None


def test_amounts_are_exact_and_spelled_one_way() -> None:
    first = _map("programs", {"id": "4", "Product_Name": "HND", "Program_Price": 4800.0})
    second = _map("programs", {"id": "4", "Product_Name": "HND", "Program_Price": 4800})
    assert isinstance(first, MappedRecord)
    assert isinstance(second, MappedRecord)
    assert first.record.price == Decimal("4800")  # type: ignore[attr-defined]
    assert first.data == second.data


@pytest.mark.parametrize("price", [True, "lots", [1], float("nan")])
def test_non_numbers_in_amount_fields_are_left_out(price: object) -> None:
    result = _map("programs", {"id": "4", "Product_Name": "HND", "Program_Price": price})
    assert list(_warnings(result)) == ["Program_Price"]


def test_integer_fields_refuse_text_and_booleans() -> None:
    raw = {"id": "7", "Registration_ID": {"name": "r", "id": "3"}, "Installment_No": "2"}
    assert list(_warnings(_map("payments", raw))) == ["Installment_No"]
    assert list(_warnings(_map("payments", {**raw, "Installment_No": True}))) == ["Installment_No"]


def test_tenant_mapping_reads_students_from_other_field_names() -> None:
    mapping = FieldMapping.model_validate(
        {
            "entities": {
                "students": {
                    "module": "Contacts",
                    "fields": {"student_number": "Student_No", "academic_email": "School_Email"},
                    "status_values": {"Withdrawn": "Withdraw"},
                }
            }
        }
    )
    raw = {
        "id": "77",
        "Student_No": "S-1",
        "First_Name": "Ana",
        "Last_Name": "Lima",
        "School_Email": "s-1@school.example",
        "Status": "Withdrawn",
        "Name": "ignored, not mapped any more",
    }
    result = _map("students", raw, mapping)
    assert isinstance(result, MappedRecord)
    assert result.data["student_number"] == "S-1"
    assert result.data["academic_email"] == "s-1@school.example"
    assert result.data["status"] == "Withdraw"
    assert mapping.entity_for_module("Contacts") is ENTITY_BY_KEY["students"]
    assert mapping.entity_for_module("BTEC_Students") is None


def test_errors_use_the_tenants_field_names() -> None:
    mapping = FieldMapping.model_validate(
        {"entities": {"students": {"fields": {"student_number": "Student_No"}}}}
    )
    errors = _errors(_map("students", {**STUDENT, "Student_No": None}, mapping))
    assert "Student_No" in errors
