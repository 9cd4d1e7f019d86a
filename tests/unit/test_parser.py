"""Parser: body decoding and record envelopes, with the position or field of every error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from zoho_moodle_sync.errors import MalformedBody, Unprocessable, UnsupportedMediaType
from zoho_moodle_sync.parser import parse_record, parse_sync_body, read_workflow
from zoho_moodle_sync.stages import UnreadableRecord, ZohoRecord


def test_sync_body_yields_the_data_array() -> None:
    records = parse_sync_body(
        b'{"data": [{"id": "1"}, {"id": "2"}]}', "application/json", max_records=10
    )
    assert records == [{"id": "1"}, {"id": "2"}]


def test_malformed_json_is_refused_with_line_column_and_byte() -> None:
    with pytest.raises(MalformedBody) as caught:
        parse_sync_body(b'{"data": [\n  {"id": "1",}]}', "application/json", max_records=10)
    assert "line 2" in caught.value.message
    assert caught.value.details["line"] == 2
    assert caught.value.details["position"] > 0


def test_empty_body_is_malformed() -> None:
    with pytest.raises(MalformedBody, match="empty"):
        parse_sync_body(b"   ", "application/json", max_records=10)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[]", "JSON object"),
        (b'{"records": []}', "JSON object"),
        (b'{"data": {"id": "1"}}', "must be an array"),
        (b'{"data": "x"}', "must be an array"),
    ],
)
def test_body_without_a_data_array_is_unprocessable(body: bytes, expected: str) -> None:
    with pytest.raises(Unprocessable, match=expected):
        parse_sync_body(body, "application/json", max_records=10)


def test_batch_over_the_limit_names_the_limit() -> None:
    with pytest.raises(Unprocessable, match="limit is 2"):
        parse_sync_body(b'{"data": [{}, {}, {}]}', "application/json", max_records=2)


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-8"],
)
def test_json_is_accepted_when_it_plainly_is_json(content_type: str | None) -> None:
    assert parse_sync_body(b' {"data": []}', content_type, max_records=1) == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/xml", b"<data/>"),
        ("multipart/form-data; boundary=x", b"--x"),
        ("text/plain", b"id=1"),
    ],
)
def test_other_content_types_are_unsupported(content_type: str, body: bytes) -> None:
    with pytest.raises(UnsupportedMediaType, match="application/json"):
        parse_sync_body(body, content_type, max_records=1)


def test_record_keeps_every_field_and_reads_modified_time_with_its_offset() -> None:
    raw = {
        "id": "5725767141565000085",
        "Modified_Time": "2025-05-10T08:12:01+03:00",
        "$editable": True,
    }
    record = parse_record(raw)
    assert isinstance(record, ZohoRecord)
    assert record.zoho_id == "5725767141565000085"
    assert record.fields is raw
    assert record.modified_time == datetime(
        2025, 5, 10, 8, 12, 1, tzinfo=timezone(timedelta(hours=3))
    )
    assert record.modified_time == datetime(2025, 5, 10, 5, 12, 1, tzinfo=UTC)


def test_numeric_id_is_read_as_its_digits() -> None:
    record = parse_record({"id": 5725767141565000085})
    assert isinstance(record, ZohoRecord)
    assert record.zoho_id == "5725767141565000085"


@pytest.mark.parametrize(
    ("raw", "field", "text"),
    [
        ("not an object", "(record)", "a string"),
        (None, "(record)", "null"),
        ([1], "(record)", "an array"),
        ({}, "id", "missing"),
        ({"id": ""}, "id", "missing"),
        ({"id": "12a"}, "id", "not a Zoho record id"),
        ({"id": True}, "id", "not a Zoho record id"),
        ({"id": "1" * 33}, "id", "not a Zoho record id"),
        ({"id": "1", "Modified_Time": "yesterday"}, "Modified_Time", "ISO 8601"),
        ({"id": "1", "Modified_Time": "2025-05-10T08:12:01"}, "Modified_Time", "offset"),
        ({"id": "1", "Modified_Time": 1700000000}, "Modified_Time", "ISO 8601"),
    ],
)
def test_unreadable_records_say_which_field_is_wrong(raw: object, field: str, text: str) -> None:
    record = parse_record(raw)
    assert isinstance(record, UnreadableRecord)
    assert record.errors[0].field == field
    assert text in record.errors[0].message


@pytest.mark.parametrize(
    "value",
    [
        b'"${BTEC_Students.Id}"',
        b'"\\u0024{BTEC_Students.Id}"',
        b'"$\\u007bBTEC_Students.Id}"',
        b'"\\u0024\\u007BBTEC_Students.Id}"',
    ],
)
def test_an_unfilled_merge_field_is_found_however_its_json_is_escaped(value: bytes) -> None:
    body = b'{"module": "BTEC_Students", "zoho_id": "5725767141565000085", "Email": ' + value + b"}"

    with pytest.raises(Unprocessable) as refused:
        read_workflow(body, "application/json", module=None, query={})

    assert refused.value.details == [{"field": "Email", "message": "literal ${...} placeholder"}]


def test_a_full_record_without_merge_fields_is_read_with_its_dollar_keys() -> None:
    record = {"id": "5725767141565000085", "$state": "save", "$approval": {"delegate": False}}
    body = orjson.dumps({"module": "BTEC_Students", "data": [record]})

    event = read_workflow(body, "application/json", module=None, query={})

    assert (event.ids, event.records) == (["5725767141565000085"], [record])
