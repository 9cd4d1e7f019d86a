"""`ZohoRecord` → typed domain record, through a tenant's field mapping.

A value that is wrong but not needed to put people into Moodle is left out with a warning; every
other validation failure becomes an `InvalidRecord` naming the Zoho field that is wrong, in the
org's own field names. Nothing here raises for bad data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from zoho_moodle_sync.domain import DomainRecord, RuleViolation
from zoho_moodle_sync.entities import EntitySpec
from zoho_moodle_sync.field_mapping import EntityMapping
from zoho_moodle_sync.stages import (
    FieldError,
    InvalidRecord,
    MappedRecord,
    RecordWarning,
    ZohoRecord,
)

_RECORD = "(record)"


@dataclass(frozen=True, slots=True)
class _Problem:
    field: str | None
    """The domain field at fault; None for a rule across fields."""
    error: FieldError


_LEFT_OUT = "; the value is left out until it is corrected in Zoho"


def map_record(mapping: EntityMapping, record: ZohoRecord) -> MappedRecord | InvalidRecord:
    """Degrade, don't drop: a wrong value in a field nobody needs to be put into Moodle (an
    optional, non-lookup field) is left out with a warning; anything else makes the record
    INVALID."""
    spec = mapping.spec
    fields = record.fields
    values = {name: fields[zoho] for name, zoho in mapping.zoho_names if zoho in fields}
    status_field = spec.status_field
    if status_field and mapping.status_values:
        status = values.get(status_field)
        if isinstance(status, str):
            values[status_field] = mapping.status_values.get(status.strip(), status)
    warnings: list[RecordWarning] = []
    domain, problems = _validate(mapping, values)
    if problems:
        if not all(_degradable(spec, p.field) for p in problems):
            return InvalidRecord(record.zoho_id, tuple(p.error for p in problems))
        for problem in problems:
            assert problem.field is not None
            values.pop(problem.field, None)
            warnings.append(
                RecordWarning(
                    problem.error.field, "invalid_value", problem.error.message + _LEFT_OUT
                )
            )
        domain, again = _validate(mapping, values)
        if again:
            return InvalidRecord(record.zoho_id, tuple(p.error for p in (*problems, *again)))
    assert domain is not None
    data = domain.model_dump(mode="json")
    too_long = [
        f for f in spec.text_fields if isinstance(v := data[f.name], str) and len(v) > f.max_length
    ]
    refused = [f for f in too_long if not _degradable(spec, f.name)]
    if refused:
        return InvalidRecord(
            record.zoho_id,
            tuple(
                FieldError(mapping.zoho_name(f.name), f"longer than {f.max_length} characters")
                for f in refused
            ),
        )
    if too_long:
        for f in too_long:
            warnings.append(
                RecordWarning(
                    mapping.zoho_name(f.name),
                    "too_long",
                    f"longer than {f.max_length} characters ({len(data[f.name])})" + _LEFT_OUT,
                )
            )
            data[f.name] = None
        domain = domain.model_copy(update={f.name: None for f in too_long})
    for start, end in spec.model.periods:
        if data[start] and data[end] and data[end] < data[start]:
            start_name, end_name = mapping.zoho_name(start), mapping.zoho_name(end)
            warnings.append(
                RecordWarning(
                    end_name,
                    "end_before_start",
                    f"{end_name} {data[end]} is before {start_name} {data[start]}; Moodle gets "
                    f"no end date until the dates are corrected in Zoho",
                )
            )
    return MappedRecord(
        zoho_id=record.zoho_id,
        modified_time=record.modified_time,
        record=domain,
        data=data,
        raw=record.fields,
        warnings=tuple(warnings),
    )


def _degradable(spec: EntitySpec, name: str | None) -> bool:
    """Whether a wrong value of field `name` can be left out: optional and not a reference
    (a rule across fields, a required value or a lookup is what the record is delivered by)."""
    if name is None:
        return False
    field = spec.field_by_name.get(name)
    return field is not None and not field.required and field.lookup is None


def _validate(
    mapping: EntityMapping, values: dict[str, Any]
) -> tuple[DomainRecord | None, list[_Problem]]:
    try:
        return mapping.spec.model.model_validate(values), []
    except ValidationError as exc:
        return None, _problems(mapping, exc)


def _problems(mapping: EntityMapping, exc: ValidationError) -> list[_Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, RuleViolation):
            name, field = None, mapping.zoho_name(cause.field)
        elif loc:
            name = str(loc[0])
            field = mapping.zoho_name(name)
        else:
            name, field = None, _RECORD
        problems.append(_Problem(name, FieldError(field, _message(error))))
    return problems


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
