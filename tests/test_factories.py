"""The record factories produce what Zoho CRM's API returns, following the org's metadata."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from typing import Any

import factory.random
import pytest

from tests import factories as f
from tests.factories import (
    FACTORIES,
    MODULES,
    ZOHO_FIELDS,
    ClassRecordFactory,
    EnrollmentRecordFactory,
    PaymentRecordFactory,
    ProgramRecordFactory,
    Record,
    RegistrationRecordFactory,
    StudentRecordFactory,
    ZohoRecordFactory,
    build_college,
    load_sample_college,
    lookup,
)

ZOHO_ID = re.compile(r"^[1-9][0-9]{18}$")
ZOHO_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+03:00$")
OWNER_KEYS = ("Owner", "Created_By", "Modified_By")


def fields_of(module: str, data_type: str) -> list[dict[str, Any]]:
    return [x for x in ZOHO_FIELDS[module] if x["data_type"] == data_type]


def all_records(college: dict[str, list[Record]]) -> Iterator[tuple[str, Record]]:
    for module, records in college.items():
        for record in records:
            yield module, record


@pytest.fixture(scope="module")
def college() -> dict[str, list[Record]]:
    return build_college(students=20, teachers=4, programs=2, units=6, classes=8, seed=11)


@pytest.fixture
def seeded() -> Iterator[None]:
    """Each test that builds records one by one starts from the same random state."""
    state = factory.random.get_random_state()
    factory.random.reseed_random(1234)
    yield
    factory.random.set_random_state(state)


# --- tests/data/zoho_fields.json ---------------------------------------------------------------


def test_zoho_fields_lists_the_modules_in_compact_form() -> None:
    assert set(MODULES) <= set(ZOHO_FIELDS)
    for module, module_fields in ZOHO_FIELDS.items():
        names = [x["api_name"] for x in module_fields]
        assert len(names) == len(set(names)), module
        for x in module_fields:
            expected = {"api_name", "data_type"}
            if x["data_type"] == "picklist":
                expected.add("picklist")
                assert x["picklist"], (module, x)
            if x["data_type"] == "lookup":
                expected.add("lookup_module")
                assert x["lookup_module"] in ZOHO_FIELDS, (module, x)
            assert set(x) == expected, (module, x)


# --- the shape of each factory's records ------------------------------------------------------


@pytest.mark.parametrize("module", MODULES)
def test_record_has_exactly_the_modules_fields_and_the_system_keys(
    module: str, seeded: None
) -> None:
    record = FACTORIES[module]()

    assert list(record) == f.field_names(module) + f.system_keys(module)
    system = set(record) - set(f.field_names(module))
    assert system == set(f.system_keys(module))
    assert {"id", *OWNER_KEYS, "Created_Time", "Modified_Time", "Last_Activity_Time"} <= set(record)
    assert {k for k in system if k.startswith("$")} >= set(f.META_KEYS)
    assert record["$approval"] == f.META_KEYS["$approval"]
    json.dumps(record)  # plain JSON values only, like the API's


@pytest.mark.parametrize("module", sorted(load_sample_college()))
def test_record_keys_are_those_of_the_sample_records_in_the_same_order(
    module: str, seeded: None
) -> None:
    sample = load_sample_college()[module][0]
    assert list(FACTORIES[module]()) == list(sample)


@pytest.mark.parametrize("module", MODULES)
def test_fields_nobody_filled_in_are_null_false_or_empty(module: str, seeded: None) -> None:
    record = FACTORIES[module]()
    for x in ZOHO_FIELDS[module]:
        value = record[x["api_name"]]
        if x["data_type"] == "boolean":
            assert isinstance(value, bool), x
        elif x["data_type"] in ("textarea", "subform", "multiselectlookup", "website"):
            assert value is None, x
    assert record["Tag"] == []


@pytest.mark.parametrize("module", MODULES)
def test_picklist_values_are_actual_values_from_the_metadata(module: str, seeded: None) -> None:
    for _ in range(15):
        record = FACTORIES[module]()
        for x in fields_of(module, "picklist"):
            value = record[x["api_name"]]
            assert value is None or value in x["picklist"], (x["api_name"], value)
            assert value != "-None-"


@pytest.mark.parametrize("module", MODULES)
def test_system_lookups_and_times(module: str, seeded: None) -> None:
    record = FACTORIES[module]()
    assert ZOHO_ID.match(record["id"])
    for key in OWNER_KEYS:
        assert set(record[key]) == {"name", "id", "email"}
        assert ZOHO_ID.match(record[key]["id"])
    created = dt.datetime.fromisoformat(record["Created_Time"])
    modified = dt.datetime.fromisoformat(record["Modified_Time"])
    assert created <= modified <= dt.datetime.fromisoformat(record["Last_Activity_Time"])


def test_records_do_not_share_mutable_values(seeded: None) -> None:
    first, second = StudentRecordFactory(), StudentRecordFactory()
    first["Owner"]["name"] = "changed"
    first["$approval"]["approve"] = True
    first["Tag"].append({"name": "x"})
    assert first["Created_By"]["name"] != "changed"
    assert second["$approval"]["approve"] is False
    assert second["Tag"] == []


# --- meaningful values -------------------------------------------------------------------------


def test_student_defaults(seeded: None) -> None:
    student = StudentRecordFactory()
    assert re.fullmatch(r"A2025MS0PSZ-\d{4,}", student["Name"])
    assert student["Status"] == "Active"
    assert student["Academic_Email"] == f"{student['Name'].lower()}@students.example.edu"
    assert student["Email"].isascii()
    assert "@" in student["Email"]
    assert student["Display_Name"] == f"{student['First_Name']} {student['Last_Name']}"
    assert student["Program"] is not None
    assert set(student["Program"]) == {"name", "id"}
    dt.date.fromisoformat(student["Birth_Date"])
    dt.date.fromisoformat(student["Registration_Date"])


def test_overrides_of_fields_params_and_meta_keys(seeded: None) -> None:
    student = StudentRecordFactory(
        Status="Freezed", program=None, **{"$state": "draft", "Unknown_Field": 1}
    )
    assert student["Status"] == "Freezed"
    assert student["Program"] is None
    assert student["Major"] is None
    assert student["$state"] == "draft"
    assert list(student)[-1] == "Unknown_Field"  # a field the metadata does not know

    program = ProgramRecordFactory(major="Business", Program_Price=5200.0)
    registration = RegistrationRecordFactory(program=program, Registration_Status="Freeze")
    assert registration["Program"] == lookup(program)
    assert registration["Program_Price"] == "5200"
    assert ClassRecordFactory(Teacher=None)["Teacher"] is None


def test_non_ascii_names_come_from_faker_locales(seeded: None) -> None:
    arabic = StudentRecordFactory(locale="ar_SA")
    turkish = StudentRecordFactory(locale="tr_TR", gender="Female")
    assert re.search(r"[\u0600-\u06ff]", arabic["First_Name"] + arabic["Last_Name"])
    assert arabic["Email"].isascii()
    assert turkish["Gender"] == "Female"
    assert turkish["Nationality"] == "Turkey"
    names = [StudentRecordFactory()["Last_Name"] for _ in range(60)]
    assert any(not name.isascii() for name in names)
    assert sum(name.isascii() for name in names) > len(names) / 2


def test_related_records_are_given_as_parameters(seeded: None) -> None:
    student = StudentRecordFactory()
    class_ = ClassRecordFactory()
    enrollment = EnrollmentRecordFactory(student=student, class_=class_)
    assert enrollment["Enrolled_Students"] == {"name": student["Name"], "id": student["id"]}
    assert enrollment["Classes"] == {"name": class_["Class_Name"], "id": class_["id"]}
    assert enrollment["Student_Name"] == student["Display_Name"]
    assert enrollment["Class_Name"] == class_["Class_Name"]
    assert enrollment["Class_Teacher"] == class_["Teacher"]["name"]
    assert (enrollment["Start_Date"], enrollment["End_Date"]) == (
        class_["Start_Date"],
        class_["End_Date"],
    )
    assert re.fullmatch(r"CLS-MS0PSZ-\d{4,}", class_["Name"])
    assert re.fullmatch(r"ENR-MS0PSZ-\d{6,}", enrollment["Name"])

    registration = RegistrationRecordFactory(student=student)
    payment = PaymentRecordFactory(registration=registration, Installment_No=0)
    assert registration["Program"] == student["Program"]
    assert payment["Registration_ID"] == lookup(registration)
    assert payment["Student_ID"] == lookup(student)
    assert payment["Payment_Type"] == "Registration Fees"
    assert isinstance(payment["Payment_Amount"], float)


def test_lookup_helper_uses_each_modules_display_field(seeded: None) -> None:
    assert lookup(None) is None
    program = ProgramRecordFactory()
    class_ = ClassRecordFactory()
    student = StudentRecordFactory()
    assert lookup(program) == {"name": program["Product_Name"], "id": program["id"]}
    assert lookup(class_) == {"name": class_["Class_Name"], "id": class_["id"]}
    assert lookup(student) == {"name": student["Name"], "id": student["id"]}
    assert lookup(student, "Email") == {"name": student["Email"], "id": student["id"]}


def test_same_seed_and_sequence_give_the_same_records(seeded: None) -> None:
    base = ZohoRecordFactory
    resume_at = base._meta.next_sequence()  # put the shared id sequence back afterwards
    try:
        factory.random.reseed_random(99)
        base.reset_sequence(900_000)
        first = [FACTORIES[m]() for m in MODULES]
        factory.random.reseed_random(99)
        base.reset_sequence(900_000)
        second = [FACTORIES[m]() for m in MODULES]
    finally:
        base.reset_sequence(resume_at)
    assert first == second
    third = [FACTORIES[m]() for m in MODULES]
    assert {r["id"] for r in first}.isdisjoint(r["id"] for r in third)


# --- build_college ------------------------------------------------------------------------------


def test_build_college_has_every_module_and_the_requested_counts(
    college: dict[str, list[Record]],
) -> None:
    assert set(college) == set(MODULES)
    counts = {m: len(records) for m, records in college.items()}
    assert counts[f.STUDENTS] == 20
    assert counts[f.TEACHERS] == 4
    assert counts[f.PROGRAMS] == 2
    assert counts[f.UNITS] == 6
    assert counts[f.CLASSES] == 8
    assert counts[f.ENROLLMENTS] == 40
    assert counts[f.GRADES] == 40
    assert counts[f.REGISTRATIONS] == 20
    assert counts[f.PAYMENTS] == 40


def test_build_college_records_have_the_modules_shape(college: dict[str, list[Record]]) -> None:
    for module, record in all_records(college):
        assert list(record) == f.record_keys(module)
        for x in fields_of(module, "picklist"):
            value = record[x["api_name"]]
            assert value is None or value in x["picklist"], (module, x["api_name"], value)


def test_build_college_lookups_resolve_within_it(college: dict[str, list[Record]]) -> None:
    by_id = {m: {r["id"]: r for r in records} for m, records in college.items()}
    resolved = 0
    for module, record in all_records(college):
        for x in fields_of(module, "lookup"):
            value = record[x["api_name"]]
            if value is None:
                continue
            assert set(value) == {"name", "id"}
            target = by_id.get(x["lookup_module"], {}).get(value["id"])
            assert target is not None, (module, x["api_name"], value)
            assert value == lookup(target)
            resolved += 1
    assert resolved > 0
    # the lookups the sync depends on are all filled in
    for module, key in [
        (f.STUDENTS, "Program"),
        (f.UNITS, "Program"),
        (f.CLASSES, "Unit"),
        (f.CLASSES, "BTEC_Program"),
        (f.CLASSES, "Teacher"),
        (f.ENROLLMENTS, "Enrolled_Students"),
        (f.ENROLLMENTS, "Classes"),
        (f.REGISTRATIONS, "Student_ID"),
        (f.REGISTRATIONS, "Program"),
        (f.PAYMENTS, "Registration_ID"),
        (f.PAYMENTS, "Student_ID"),
        (f.GRADES, "Student"),
        (f.GRADES, "Class"),
    ]:
        assert all(r[key] is not None for r in college[module]), (module, key)


def test_build_college_is_consistent(college: dict[str, list[Record]]) -> None:
    students = {s["id"]: s for s in college[f.STUDENTS]}
    classes = {c["id"]: c for c in college[f.CLASSES]}
    pairs = set()
    for enrollment in college[f.ENROLLMENTS]:
        student = students[enrollment["Enrolled_Students"]["id"]]
        class_ = classes[enrollment["Classes"]["id"]]
        assert class_["BTEC_Program"] == student["Program"]  # classes of the student's program
        pairs.add((student["id"], class_["id"]))
    assert len(pairs) == len(college[f.ENROLLMENTS])  # nobody is enrolled twice in a class
    for payment in college[f.PAYMENTS]:
        registration = next(
            r for r in college[f.REGISTRATIONS] if r["id"] == payment["Registration_ID"]["id"]
        )
        assert payment["Student_ID"] == registration["Student_ID"]
    for unit in college[f.UNITS]:
        assert re.fullmatch(r"Unit \d+: .+", unit["Name"])


def test_ids_are_unique_19_digit_strings(college: dict[str, list[Record]], seeded: None) -> None:
    more = [FACTORIES[m]() for m in MODULES for _ in range(3)]
    other = build_college(seed=12)
    ids = [r["id"] for _, r in all_records(college)] + [r["id"] for r in more]
    ids += [r["id"] for _, r in all_records(other)]
    assert all(isinstance(i, str) and ZOHO_ID.match(i) for i in ids)
    assert len(ids) == len(set(ids))


def test_datetimes_parse_with_the_orgs_offset(college: dict[str, list[Record]]) -> None:
    checked = 0
    for module, record in all_records(college):
        keys = {x["api_name"] for x in fields_of(module, "datetime")}
        keys |= {"Created_Time", "Modified_Time"}
        for key in keys:
            if record[key] is None:
                continue
            assert ZOHO_DATETIME.match(record[key]), (module, key, record[key])
            parsed = dt.datetime.fromisoformat(record[key])
            assert parsed.utcoffset() == dt.timedelta(hours=3)
            checked += 1
        for x in fields_of(module, "date"):
            if record[x["api_name"]] is not None:
                dt.date.fromisoformat(record[x["api_name"]])
    assert checked > 0


def test_build_college_has_some_non_ascii_names(college: dict[str, list[Record]]) -> None:
    people = college[f.STUDENTS] + college[f.TEACHERS]
    names = [p.get("Display_Name") or p["Name"] for p in people]
    assert any(re.search(r"[\u0600-\u06ff]", n) for n in names)  # Arabic script
    assert any(not n.isascii() for n in names if not re.search(r"[\u0600-\u06ff]", n))
    assert all(p["Email"].isascii() for p in people)
    assert len({p["Email"] for p in people}) == len(people)


def test_build_college_is_deterministic_and_leaves_the_random_state_alone() -> None:
    state = factory.random.get_random_state()
    first = build_college(seed=5)
    assert factory.random.get_random_state() == state
    assert build_college(seed=5) == first
    assert build_college(seed=6) != first


def test_build_college_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="at least one program"):
        build_college(programs=0)
    with pytest.raises(ValueError, match="at least one unit"):
        build_college(units=0)
    assert build_college(students=0, classes=0, units=0, programs=0, teachers=0) == {
        m: [] for m in MODULES
    }


# --- the sample college -------------------------------------------------------------------------


def test_load_sample_college_returns_a_fresh_copy_of_the_sample() -> None:
    sample = load_sample_college()
    assert set(sample) <= set(MODULES)
    assert sample[f.STUDENTS]
    sample[f.STUDENTS].clear()
    assert load_sample_college()[f.STUDENTS]


def test_sample_college_follows_the_metadata() -> None:
    sample = load_sample_college()
    by_id = {r["id"]: r for _, r in all_records(sample)}
    for module, record in all_records(sample):
        assert list(record) == f.record_keys(module)
        assert ZOHO_ID.match(record["id"])
        for x in fields_of(module, "picklist"):
            value = record[x["api_name"]]
            assert value is None or value in x["picklist"]
        for x in fields_of(module, "lookup"):
            value = record[x["api_name"]]
            if value is not None:
                assert value == lookup(by_id[value["id"]])
