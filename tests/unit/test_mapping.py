"""Field-mapping configuration: refused early, with the reason, when it cannot work."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from zoho_moodle_sync.entities import ENTITIES, ENTITY_BY_KEY, dependents_of
from zoho_moodle_sync.field_mapping import DEFAULT_MAPPING, FieldMapping


@pytest.mark.parametrize(
    ("document", "text"),
    [
        ({"entities": {"pupils": {}}}, "unknown entity 'pupils'"),
        (
            {"entities": {"students": {"fields": {"nickname": "Nick"}}}},
            "unknown fields ['nickname']",
        ),
        ({"entities": {"teachers": {"status_values": {"A": "B"}}}}, "no status field"),
        ({"entities": {"teachers": {"module": "BTEC_Students"}}}, "same Zoho module"),
        ({"entity": {}}, "Extra inputs"),
    ],
)
def test_invalid_mappings_are_refused_with_the_reason(
    document: dict[str, object], text: str
) -> None:
    with pytest.raises(ValidationError, match=text.replace("[", r"\[").replace("]", r"\]")):
        FieldMapping.model_validate(document)


def test_default_mapping_uses_the_btec_module_names() -> None:
    modules = {spec.key: DEFAULT_MAPPING.module_for(spec) for spec in ENTITIES}
    assert modules == {
        "programs": "Products",
        "teachers": "BTEC_Teachers",
        "students": "BTEC_Students",
        "units": "BTEC",
        "classes": "BTEC_Classes",
        "enrollments": "BTEC_Enrollments",
        "registrations": "BTEC_Registrations",
        "payments": "BTEC_Payments",
        "grades": "BTEC_Grades",
    }


def test_dependencies_follow_the_product_rules() -> None:
    deps = {spec.key: sorted(str(d.lookup) for d in spec.dependencies) for spec in ENTITIES}
    assert deps == {
        "programs": [],
        "teachers": [],
        "students": [],
        "units": ["programs"],
        "classes": ["programs", "teachers", "units"],
        "enrollments": ["classes", "students"],
        "registrations": ["programs", "students"],
        "payments": ["registrations"],
        "grades": ["classes", "students"],
    }
    assert {s.key for s in dependents_of("students")} == {"enrollments", "registrations", "grades"}


def test_required_dependencies_are_required_fields() -> None:
    enrollment = ENTITY_BY_KEY["enrollments"]
    assert [f.zoho for f in enrollment.fields if f.required] == ["Enrolled_Students", "Classes"]
    klass = ENTITY_BY_KEY["classes"]
    assert not any(f.required for f in klass.dependencies)
