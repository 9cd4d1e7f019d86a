"""Raw Zoho shapes → normalized `ZohoRecord`s: body decoding, record envelope checks.

Nothing here knows the web framework or the database: input is bytes and a content type, output
is records or precise errors (which field, what was wrong).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from zoho_moodle_sync.errors import MalformedBody, Unprocessable, UnsupportedMediaType
from zoho_moodle_sync.stages import FieldError, UnreadableRecord, ZohoRecord
from zoho_moodle_sync.zoho.ids import is_zoho_id


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode_json(body: bytes) -> Any:
    """Parse JSON, or raise MalformedBody saying where it breaks."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(
            f"Body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"(byte {exc.pos})",
            details={"line": exc.lineno, "column": exc.colno, "position": exc.pos},
        ) from None


def looks_like_json(body: bytes) -> bool:
    return body.lstrip()[:1] in (b"{", b"[")


def parse_sync_body(body: bytes, content_type: str | None, *, max_records: int) -> list[Any]:
    """The `data` array of a `{"data": [record, ...]}` body.

    JSON is accepted under `application/json`, and also when the body plainly is JSON but came
    with curl's default form content type or none at all.
    """
    if not body.strip():
        raise MalformedBody('Body is empty: send {"data": [record, ...]}')
    kind = media_type(content_type)
    is_json_type = kind == "application/json" or kind.endswith("+json")
    if not is_json_type and not (
        kind in ("", "text/plain", "application/x-www-form-urlencoded") and looks_like_json(body)
    ):
        raise UnsupportedMediaType(
            f"Content-Type {kind or '(none)'} is not supported here: send application/json "
            'with a body like {"data": [record, ...]}'
        )
    document = decode_json(body)
    if not isinstance(document, dict) or "data" not in document:
        raise Unprocessable(
            'Body must be a JSON object with a "data" array of Zoho records',
            details=[{"field": "data", "message": "missing"}],
        )
    records = document["data"]
    if not isinstance(records, list):
        raise Unprocessable(
            f'"data" must be an array of Zoho records, got {type(records).__name__}',
            details=[{"field": "data", "message": "not an array"}],
        )
    if len(records) > max_records:
        raise Unprocessable(
            f"Too many records in one request: {len(records)}; the limit is {max_records}. "
            "Split the batch.",
            details=[{"field": "data", "message": f"more than {max_records} records"}],
        )
    return records


def may_hold_nul(body: bytes) -> bool:
    """Whether a JSON text can hold U+0000 anywhere: JSON can only write it as \\u0000."""
    return b"\\u0000" in body


def parse_record(raw: Any, *, nul_free: bool = False) -> ZohoRecord | UnreadableRecord:
    """Check a record's envelope: an object, a Zoho id, no NUL character anywhere, and a valid
    Modified_Time if present. `nul_free`: the caller knows the record holds no NUL (it comes
    from a JSON body that `may_hold_nul` cleared), which spares looking for one."""
    if not isinstance(raw, dict):
        return UnreadableRecord(
            None, (FieldError("(record)", f"expected a JSON object, got {_json_type(raw)}"),)
        )
    zoho_id = raw.get("id")
    if isinstance(zoho_id, int) and not isinstance(zoho_id, bool):
        zoho_id = str(zoho_id)
    if zoho_id is None or zoho_id == "":
        return UnreadableRecord(
            None, (FieldError("id", "missing: every record needs its Zoho id"),)
        )
    if not is_zoho_id(zoho_id):
        return UnreadableRecord(
            None, (FieldError("id", f"not a Zoho record id (up to 32 digits): {zoho_id!r}"),)
        )
    with_nul = [] if nul_free else _fields_with_nul(raw)
    if with_nul:
        message = "contains a NUL character, which no database column can hold"
        return UnreadableRecord(zoho_id, tuple(FieldError(name, message) for name in with_nul))
    modified = raw.get("Modified_Time")
    modified_time: datetime | None = None
    if modified is not None:
        modified_time = _parse_modified_time(modified)
        if modified_time is None:
            return UnreadableRecord(
                zoho_id,
                (
                    FieldError(
                        "Modified_Time",
                        f"not an ISO 8601 date-time with offset: {str(modified)[:60]!r}",
                    ),
                ),
            )
    return ZohoRecord(zoho_id=zoho_id, fields=raw, modified_time=modified_time)


def _fields_with_nul(record: dict[Any, Any]) -> list[str]:
    """The fields whose name or value holds U+0000 anywhere."""
    try:
        # JSON writes U+0000 as \u0000: without that text there is no NUL, and no need to walk
        # every value of the record (a text holding a literal "\u0000" only costs the walk).
        clean = b"\\u0000" not in orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        clean = False
    if clean:
        return []
    return [
        str(key).replace("\x00", "\\u0000")
        for key, value in record.items()
        if _has_nul(key) or _has_nul(value)
    ]


def _has_nul(value: Any) -> bool:
    """No database text or JSON column can hold U+0000."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _parse_modified_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
        # Stored in UTC: a time that has no UTC equivalent (year 1 east of Greenwich,
        # year 9999 west of it) cannot be a real Modified_Time.
        parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
