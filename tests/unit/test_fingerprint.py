"""Fingerprints: same domain content, same SHA256; volatile Zoho fields do not count."""

from __future__ import annotations

import hashlib

from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.field_mapping import DEFAULT_MAPPING
from zoho_moodle_sync.fingerprint import fingerprint
from zoho_moodle_sync.mapper import map_record
from zoho_moodle_sync.parser import parse_record
from zoho_moodle_sync.stages import MappedRecord, ZohoRecord

TEACHER = {
    "id": "5725767141565000010",
    "Name": "Ahmad Khalil",
    "Email": "ahmad.khalil@mail.example.com",
    "Academic_Email": "ahmad.khalil@staff.example.edu",
    "Modified_Time": "2025-05-10T02:20:59+03:00",
    "Last_Activity_Time": "2025-05-10T02:20:59+03:00",
    "Modified_By": {"name": "Bilal", "id": "5725767141565000003", "email": "b@college.example"},
    "$editable": True,
}


def _fingerprint(raw: dict[str, object]) -> str:
    record = parse_record(raw)
    assert isinstance(record, ZohoRecord)
    mapped = map_record(DEFAULT_MAPPING.for_entity(ENTITY_BY_KEY["teachers"]), record)
    assert isinstance(mapped, MappedRecord)
    return fingerprint(mapped.data)


def test_fingerprint_is_sha256_of_sorted_canonical_json() -> None:
    expected = hashlib.sha256(b'{"a":1,"b":"x"}').hexdigest()
    assert fingerprint({"b": "x", "a": 1}) == expected


def test_volatile_zoho_fields_do_not_change_the_fingerprint() -> None:
    edited_elsewhere = {
        **TEACHER,
        "Modified_Time": "2025-06-01T10:00:00+03:00",
        "Last_Activity_Time": "2025-06-01T10:00:00+03:00",
        "Modified_By": {"name": "Reem", "id": "5725767141565000001", "email": "r@college.example"},
        "$editable": False,
        "Teacher_Moodle_ID": "77",
    }
    assert _fingerprint(edited_elsewhere) == _fingerprint(TEACHER)


def test_a_domain_change_changes_the_fingerprint() -> None:
    assert _fingerprint({**TEACHER, "Email": "new@mail.example.com"}) != _fingerprint(TEACHER)


def test_whitespace_around_values_does_not_change_the_fingerprint() -> None:
    assert _fingerprint({**TEACHER, "Name": " Ahmad Khalil  "}) == _fingerprint(TEACHER)
