"""The registry of entities: one `EntitySpec` per Zoho module drives every pipeline stage.

Parser, mapper, service, tables, routes and Moodle delivery are written once; what differs per
entity (module, fields, domain model, dependencies, what it becomes in Moodle) is declared here
and in `domain` (fields) and `projection` (the Moodle shape of a record).
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


class MoodleKind(StrEnum):
    """What a record becomes in Moodle; the delivery code is written once per kind."""

    USER = "user"
    CATEGORY = "category"
    COURSE = "course"
    ENROLMENT = "enrolment"


@dataclass(frozen=True)
class MoodleSide:
    """An entity's Moodle projection: what its records become, and which of its lookups must be
    in Moodle first, each with the key under which its delivered link records that Moodle id
    (None when the link does not; then a new Moodle id there re-queues nothing)."""

    kind: MoodleKind
    needs: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class Dependent:
    """A record whose delivered Moodle side names another record's Moodle id."""

    entity: str
    lookup: str
    """Its field holding the other record's Zoho id."""
    link_key: str
    """The key under which its link's detail holds that Moodle id."""


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
    moodle: MoodleSide | None = None
    """What the entity becomes in Moodle; None for entities kept for reporting only."""

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
    EntitySpec(
        "programs",
        "program",
        "Products",
        domain.ProgramRecord,
        ("name",),
        "status",
        moodle=MoodleSide(MoodleKind.CATEGORY),
    ),
    EntitySpec(
        "teachers",
        "teacher",
        "BTEC_Teachers",
        domain.TeacherRecord,
        ("name",),
        moodle=MoodleSide(MoodleKind.USER),
    ),
    EntitySpec(
        "students",
        "student",
        "BTEC_Students",
        domain.StudentRecord,
        ("student_number", "first_name", "last_name"),
        "status",
        moodle=MoodleSide(MoodleKind.USER),
    ),
    EntitySpec("units", "unit", "BTEC", domain.UnitRecord, ("name",)),
    EntitySpec(
        "classes",
        "class",
        "BTEC_Classes",
        domain.ClassRecord,
        ("class_name",),
        "status",
        moodle=MoodleSide(
            MoodleKind.COURSE,
            needs=(("program_zoho_id", None), ("teacher_zoho_id", "teacher_userid")),
        ),
    ),
    EntitySpec(
        "enrollments",
        "enrollment",
        "BTEC_Enrollments",
        domain.EnrollmentRecord,
        ("enrollment_code",),
        moodle=MoodleSide(
            MoodleKind.ENROLMENT,
            needs=(("student_zoho_id", "userid"), ("class_zoho_id", "courseid")),
        ),
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


MOODLE_SIDES: tuple[tuple[EntitySpec, MoodleSide], ...] = tuple(
    (spec, spec.moodle) for spec in ENTITIES if spec.moodle is not None
)
DELIVERED: tuple[EntitySpec, ...] = tuple(spec for spec, _ in MOODLE_SIDES)
"""Entities with a Moodle counterpart, in the order they must reach Moodle."""
DELIVERED_KEYS = frozenset(spec.key for spec in DELIVERED)


def moodle_prerequisites() -> frozenset[str]:
    """Entities whose delivery can let a waiting delivery go on."""
    return frozenset(
        target
        for spec, side in MOODLE_SIDES
        for name, _ in side.needs
        if (target := spec.field_by_name[name].lookup) is not None
    )


def moodle_dependents(entity: str) -> tuple[Dependent, ...]:
    """Records delivered against a Moodle id of `entity`: queued again when it gets a new one
    (a user created again after an administrator deleted it)."""
    return tuple(
        Dependent(spec.key, name, link_key)
        for spec, side in MOODLE_SIDES
        for name, link_key in side.needs
        if link_key is not None and spec.field_by_name[name].lookup == entity
    )


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
