"""`ZohoRecord` → typed domain record, through a tenant's field mapping.

Every validation failure becomes an `InvalidRecord` naming the Zoho field that is wrong, in the
org's own field names; nothing here raises for bad data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from zoho_moodle_sync.domain import DomainRecord, RuleViolation
from zoho_moodle_sync.mapping import EntityMapping
from zoho_moodle_sync.parser import FieldError, ZohoRecord

_RECORD = "(record)"


@dataclass(frozen=True, slots=True)
class MappedRecord:
    zoho_id: str
    modified_time: datetime | None
    record: DomainRecord
    data: dict[str, Any]
    """The domain fields in JSON form: what is fingerprinted, compared and shown."""
    raw: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class InvalidRecord:
    zoho_id: str | None
    errors: tuple[FieldError, ...]


def map_record(mapping: EntityMapping, record: ZohoRecord) -> MappedRecord | InvalidRecord:
    spec = mapping.spec
    fields = record.fields
    values = {name: fields[zoho] for name, zoho in mapping.zoho_names if zoho in fields}
    status_field = spec.status_field
    if status_field and mapping.status_values:
        status = values.get(status_field)
        if isinstance(status, str):
            values[status_field] = mapping.status_values.get(status.strip(), status)
    try:
        domain = spec.model.model_validate(values)
    except ValidationError as exc:
        return InvalidRecord(record.zoho_id, tuple(_field_errors(mapping, exc)))
    data = domain.model_dump(mode="json")
    too_long = [
        FieldError(mapping.zoho_name(f.name), f"longer than {f.max_length} characters")
        for f in spec.text_fields
        if isinstance(value := data[f.name], str) and len(value) > f.max_length
    ]
    if too_long:
        return InvalidRecord(record.zoho_id, tuple(too_long))
    return MappedRecord(
        zoho_id=record.zoho_id,
        modified_time=record.modified_time,
        record=domain,
        data=data,
        raw=record.fields,
    )


def _field_errors(mapping: EntityMapping, exc: ValidationError) -> list[FieldError]:
    errors = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, RuleViolation):
            field = mapping.zoho_name(cause.field)
        else:
            field = mapping.zoho_name(str(loc[0])) if loc else _RECORD
        errors.append(FieldError(field, _message(error)))
    return errors


_EXPECTED = {
    "string_type": "text",
    "int_type": "a whole number",
    "bool_type": "true or false",
    "decimal_type": "a number",
    "date_type": "a date as YYYY-MM-DD",
    "datetime_type": "an ISO 8601 date-time",
}


def _message(error: Any) -> str:
    kind = error["type"]
    given = error.get("input")
    if kind == "missing":
        return "required, but missing"
    if given is None and kind in _EXPECTED:
        return "required, but empty"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_describe(given)}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value[:60]!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
