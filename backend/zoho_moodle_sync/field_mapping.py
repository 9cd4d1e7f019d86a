"""A tenant's field mapping: which Zoho module and field feed each domain field.

The default is the BTEC org's names (declared on the domain models). A tenant overrides only what
differs in its org, for example students kept in `Contacts` with the number in `Student_No`:

    {"entities": {"students": {"module": "Contacts",
                               "fields": {"student_number": "Student_No"},
                               "status_values": {"Withdrawn": "Withdraw"}}}}

`status_values` translates the org's picklist values into the ones the service's rules use.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from zoho_moodle_sync.entities import ENTITIES, ENTITY_BY_KEY, EntitySpec


class EntityOverride(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    module: str | None = Field(default=None, min_length=1, max_length=100)
    fields: dict[str, str] = Field(default_factory=dict)
    """Domain field name → the org's Zoho field api name."""
    status_values: dict[str, str] = Field(default_factory=dict)
    """The org's status picklist value → the value the service's rules know."""


class FieldMapping(BaseModel):
    """A tenant's overrides; empty means the BTEC org's names throughout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entities: dict[str, EntityOverride] = Field(default_factory=dict)
    _compiled: dict[str, EntityMapping] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _known_names(self) -> FieldMapping:
        for key, override in self.entities.items():
            spec = ENTITY_BY_KEY.get(key)
            if spec is None:
                raise ValueError(f"unknown entity {key!r}; known: {', '.join(ENTITY_BY_KEY)}")
            unknown = sorted(set(override.fields) - set(spec.field_by_name))
            if unknown:
                raise ValueError(
                    f"{key}: unknown fields {unknown}; known: {', '.join(spec.field_by_name)}"
                )
            if override.status_values and spec.status_field is None:
                raise ValueError(f"{key}: has no status field to translate")
        modules = [self.module_for(spec) for spec in ENTITIES]
        if len(set(modules)) != len(modules):
            raise ValueError("two entities are mapped to the same Zoho module")
        return self

    def module_for(self, spec: EntitySpec) -> str:
        override = self.entities.get(spec.key)
        return override.module if override and override.module else spec.module

    def for_entity(self, spec: EntitySpec) -> EntityMapping:
        compiled = self._compiled.get(spec.key)
        if compiled is None:
            override = self.entities.get(spec.key) or EntityOverride()
            compiled = EntityMapping(
                spec=spec,
                module=self.module_for(spec),
                zoho_names=tuple(
                    (f.name, override.fields.get(f.name, f.zoho)) for f in spec.fields
                ),
                status_values=dict(override.status_values),
            )
            self._compiled[spec.key] = compiled
        return compiled

    def entity_for_module(self, module: str) -> EntitySpec | None:
        """The entity a Zoho module feeds in this tenant's org (module names match exactly)."""
        return next((spec for spec in ENTITIES if self.module_for(spec) == module), None)


@dataclass(frozen=True)
class EntityMapping:
    """The mapping of one entity, resolved: what the mapper walks for every record."""

    spec: EntitySpec
    module: str
    zoho_names: tuple[tuple[str, str], ...]
    """(domain field, Zoho api name) for every domain field."""
    status_values: dict[str, str]

    def zoho_name(self, field: str) -> str:
        return dict(self.zoho_names).get(field, field)


DEFAULT_MAPPING = FieldMapping()
