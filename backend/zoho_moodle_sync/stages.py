"""What passes between the pipeline's stages: a Zoho record as the parser read it (or why it
could not), and as the mapper made it a domain record (or why not). Ingress hands these from one
stage to the next; the stages never import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from zoho_moodle_sync.domain import DomainRecord


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass(frozen=True, slots=True)
class ZohoRecord:
    """One Zoho record as received: its id, every field as sent, and its Zoho modification time."""

    zoho_id: str
    fields: Mapping[str, Any]
    modified_time: datetime | None


@dataclass(frozen=True, slots=True)
class UnreadableRecord:
    """A record whose envelope is unusable (not an object, no id, bad Modified_Time)."""

    zoho_id: str | None
    errors: tuple[FieldError, ...]


@dataclass(frozen=True, slots=True)
class RecordWarning:
    """Something wrong in a record that does not keep it out of Moodle: it is stored and
    delivered without the faulty value, and the warning says what to correct in Zoho."""

    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class MappedRecord:
    zoho_id: str
    modified_time: datetime | None
    record: DomainRecord
    data: dict[str, Any]
    """The domain fields in JSON form: what is fingerprinted, compared and shown."""
    raw: Mapping[str, Any]
    warnings: tuple[RecordWarning, ...] = ()


@dataclass(frozen=True, slots=True)
class InvalidRecord:
    zoho_id: str | None
    errors: tuple[FieldError, ...]
