"""The registry of entities: one `EntitySpec` per Zoho module drives every pipeline stage.

Parser, mapper, service, tables and routes are written once; what differs per entity (module,
fields, domain model, dependencies) is declared here and in `domain`.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import cached_property

from zoho_moodle_sync import domain
from zoho_moodle_sync.domain import DomainRecord, Zoho


class FieldKind(StrEnum):
    TEXT = "text"
    DATE = "date"
    DATETIME = "datetime"
    DECIMAL = "decimal"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    LOOKUP = "lookup"


_KIND_BY_TYPE: dict[type, FieldKind] = {
    str: FieldKind.TEXT,
    date: FieldKind.DATE,
    datetime: FieldKind.DATETIME,
    Decimal: FieldKind.DECIMAL,
    int: FieldKind.INTEGER,
    bool: FieldKind.BOOLEAN,
}


@dataclass(frozen=True)
class FieldSpec:
    """One domain field: its column name, default Zoho api name, kind and references."""

    name: str
    zoho: str
    kind: FieldKind
    required: bool
    max_length: int
    lookup: str | None
    required_first: bool


@dataclass(frozen=True)
class EntitySpec:
    key: str
    """URL and table name: `students`, `classes`, ..."""
    label: str
    """One record in words: `student`, `class`, ..."""
    module: str
    """Default Zoho module api name (the BTEC org's)."""
    model: type[DomainRecord]
    name_fields: tuple[str, ...]
    """Fields that name a record to a person (a student's number and name)."""
    status_field: str | None = None

    def name_of(self, data: dict[str, object]) -> str:
        return " ".join(str(data[f]) for f in self.name_fields if data.get(f)).strip()

    @cached_property
    def fields(self) -> tuple[FieldSpec, ...]:
        return tuple(_field_specs(self.model))

    @cached_property
    def field_by_name(self) -> dict[str, FieldSpec]:
        return {f.name: f for f in self.fields}

    @cached_property
    def dependencies(self) -> tuple[FieldSpec, ...]:
        """Lookups whose target must be stored before a record of this entity (when set)."""
        return tuple(f for f in self.fields if f.required_first)

    @cached_property
    def text_fields(self) -> tuple[FieldSpec, ...]:
        """Text and lookup fields: those whose length is limited (`max_length`)."""
        return tuple(f for f in self.fields if f.kind in (FieldKind.TEXT, FieldKind.LOOKUP))


def _field_specs(model: type[DomainRecord]) -> list[FieldSpec]:
    hints = typing.get_type_hints(model, include_extras=True)
    specs = []
    for name, info in model.model_fields.items():
        marker = next((m for m in info.metadata if isinstance(m, Zoho)), None)
        if marker is None:
            raise TypeError(f"{model.__name__}.{name} has no Zoho(...) annotation")
        base = _base_type(hints[name])
        kind = FieldKind.LOOKUP if marker.lookup else _KIND_BY_TYPE[base]
        specs.append(
            FieldSpec(
                name=name,
                zoho=marker.api_name,
                kind=kind,
                required=info.is_required(),
                max_length=marker.max_length,
                lookup=marker.lookup,
                required_first=marker.required_first,
            )
        )
    return specs


def _base_type(hint: object) -> type:
    """The non-None type inside `Annotated[X | None, ...]`."""
    while typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        return _base_type(hint)
    assert isinstance(hint, type)
    return hint


ENTITIES: tuple[EntitySpec, ...] = (
    EntitySpec("programs", "program", "Products", domain.ProgramRecord, ("name",), "status"),
    EntitySpec("teachers", "teacher", "BTEC_Teachers", domain.TeacherRecord, ("name",)),
    EntitySpec(
        "students",
        "student",
        "BTEC_Students",
        domain.StudentRecord,
        ("student_number", "first_name", "last_name"),
        "status",
    ),
    EntitySpec("units", "unit", "BTEC", domain.UnitRecord, ("name",)),
    EntitySpec("classes", "class", "BTEC_Classes", domain.ClassRecord, ("class_name",), "status"),
    EntitySpec(
        "enrollments",
        "enrollment",
        "BTEC_Enrollments",
        domain.EnrollmentRecord,
        ("enrollment_code",),
    ),
    EntitySpec(
        "registrations",
        "registration",
        "BTEC_Registrations",
        domain.RegistrationRecord,
        ("registration_code",),
        "status",
    ),
    EntitySpec("payments", "payment", "BTEC_Payments", domain.PaymentRecord, ("payment_code",)),
    EntitySpec(
        "grades", "grade", "BTEC_Grades", domain.GradeRecord, ("grade_code",), "grade_status"
    ),
)
"""In dependency order: every entity comes after the entities it depends on."""

ENTITY_BY_KEY: dict[str, EntitySpec] = {spec.key: spec for spec in ENTITIES}


def dependents_of(entity: str) -> tuple[EntitySpec, ...]:
    """Entities that have a dependency on `entity`."""
    return tuple(
        spec for spec in ENTITIES if any(dep.lookup == entity for dep in spec.dependencies)
    )


def _check_order() -> None:
    seen: set[str] = set()
    for spec in ENTITIES:
        for dep in spec.dependencies:
            if dep.lookup not in seen:
                raise RuntimeError(f"{spec.key} depends on {dep.lookup}, which comes later")
        seen.add(spec.key)


_check_order()
