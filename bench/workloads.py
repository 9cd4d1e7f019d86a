"""Realistic Zoho records for the benchmarks, from tests/factories.py: every field of the BTEC
org's modules as the Zoho API returns them (about 8 KB of JSON per student).

The benchmarks put the repository on `sys.path` before importing this (the factories live in
tests/).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import factory.random
import orjson
from tests import factories

from zoho_moodle_sync.entities import ENTITIES, ENTITY_BY_KEY
from zoho_moodle_sync.field_mapping import DEFAULT_MAPPING

Record = dict[str, Any]

SEED = 20250510
POOL_SIZE = 200
"""Records of each entity the benchmarked one refers to, stored before timing."""

RELATED: dict[str, dict[str, str]] = {
    "units": {"program": "programs"},
    "students": {"program": "programs"},
    "classes": {"unit": "units", "teacher": "teachers"},
    "enrollments": {"student": "students", "class_": "classes"},
    "registrations": {"student": "students"},
    "payments": {"registration": "registrations"},
    "grades": {"student": "students", "class_": "classes"},
}
"""Factory parameter -> the entity whose pool it is picked from, per entity."""

CHANGED_FIELD = {
    "programs": "Program_ID",
    "teachers": "Phone_Number",
    "students": "Phone_Number",
    "units": "Unit_Credit",
    "classes": "Class_Short_Name",
    "enrollments": "Name",
    "registrations": "Name",
    "payments": "Name",
    "grades": "Name",
}
"""The Zoho field an edit in Zoho changes, per entity (a text field of the domain record)."""


def reseed() -> None:
    """The same records on every run: factory-boy's random state and id sequence reset."""
    factory.random.reseed_random(SEED)
    factories.ZohoRecordFactory.reset_sequence(1)


def build(entity: str, count: int, pools: dict[str, list[Record]]) -> list[Record]:
    """`count` new records of `entity`, their lookups pointing at records of `pools`."""
    make = factories.FACTORIES[ENTITY_BY_KEY[entity].module]
    related = RELATED.get(entity, {})
    return [
        make(**{param: pools[key][i % len(pools[key])] for param, key in related.items()})
        for i in range(count)
    ]


def dependency_pools(entity: str) -> list[tuple[str, list[Record]]]:
    """`POOL_SIZE` records of every entity `entity` depends on, in dependency order: what must
    be stored first for its records to come out NEW rather than SKIPPED."""
    needed: set[str] = set()
    pending = list(RELATED.get(entity, {}).values())
    while pending:
        key = pending.pop()
        if key not in needed:
            needed.add(key)
            pending += RELATED.get(key, {}).values()
    pools: dict[str, list[Record]] = {}
    for spec in ENTITIES:
        if spec.key in needed:
            pools[spec.key] = build(spec.key, POOL_SIZE, pools)
    return list(pools.items())


def changed(record: Record, entity: str) -> Record:
    """The record after an edit in Zoho: one field changed, Modified_Time an hour later."""
    edited: Record = orjson.loads(orjson.dumps(record))
    name = CHANGED_FIELD[entity]
    edited[name] = f"{edited[name] or ''} (rev 2)".strip()
    modified = dt.datetime.fromisoformat(edited["Modified_Time"]) + dt.timedelta(hours=1)
    edited["Modified_Time"] = modified.isoformat()
    return edited


def mapped_fields_only(entity: str, records: list[Record]) -> list[Record]:
    """Records cut down to the fields the service maps (and `id`, `Modified_Time`), as a
    Zoho API call with `fields=...` or a workflow webhook with chosen merge fields sends them."""
    mapping = DEFAULT_MAPPING.for_entity(ENTITY_BY_KEY[entity])
    kept = {"id", "Modified_Time", *(zoho for _, zoho in mapping.zoho_names)}
    return [{k: v for k, v in record.items() if k in kept} for record in records]


def batches(values: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


# ---------------------------------------------------------------------------------------------
# Whole colleges, for delivery
# ---------------------------------------------------------------------------------------------

COLLEGE = {"students": 200, "classes": 20, "teachers": 10, "programs": 4, "units": 10}
"""The default college: 200 students, each enrolled in 4 of the 5 classes of its programme (800
enrolments), 20 classes taught by 10 teachers, 4 programmes of 10 units (classes need units)."""
ENROLMENTS_PER_STUDENT = 4

DELIVERED_MODULES = (
    ("programs", factories.PROGRAMS),
    ("units", factories.UNITS),
    ("teachers", factories.TEACHERS),
    ("classes", factories.CLASSES),
    ("students", factories.STUDENTS),
    ("enrollments", factories.ENROLLMENTS),
)
"""Entity key and Zoho module of what a college puts into Moodle (units only as the classes'
prerequisite), in the order an administrator enters them."""


def college(scale: int = 1) -> list[tuple[str, list[Record]]]:
    """The default college times `scale`, as (entity, records) in dependency order."""
    modules = factories.build_college(
        **{key: count * scale for key, count in COLLEGE.items()},
        enrollments_per_student=ENROLMENTS_PER_STUDENT,
        payments_per_student=0,
        seed=SEED + scale,
    )
    return [(entity, modules[module]) for entity, module in DELIVERED_MODULES]
