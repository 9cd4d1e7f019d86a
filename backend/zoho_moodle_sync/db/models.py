"""Every table: tenants, inbound events, parked records, outcome history, and one table per entity.

The entity tables are built from the entity registry, so a domain field is declared once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from zoho_moodle_sync.db.base import (
    Amount,
    Base,
    BigId,
    JSONDocument,
    OptionalDocument,
    RecordDocument,
    UTCDateTime,
    utcnow,
)
from zoho_moodle_sync.entities import ENTITIES, EntitySpec, FieldKind, FieldSpec


class Tenant(Base):
    """A school: its Zoho org, its Moodle, its field mapping and policies."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class InboundEvent(Base):
    """Every request body that reached us, stored before it is processed."""

    __tablename__ = "inbound_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(20))
    method: Mapped[str] = mapped_column(String(10))
    route: Mapped[str] = mapped_column(String(300))
    entity: Mapped[str | None] = mapped_column(String(30))
    content_type: Mapped[str | None] = mapped_column(String(200))
    query: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    body_size: Mapped[int] = mapped_column(BigInteger)
    body_sha256: Mapped[str] = mapped_column(String(64))
    body_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20))
    """received → processed | rejected | failed."""
    http_status: Mapped[int | None] = mapped_column(Integer)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    replay_of: Mapped[int | None] = mapped_column(ForeignKey("inbound_events.id"))

    __table_args__ = (Index(None, "tenant_id", "received_at"), Index(None, "status"))


class ParkedRecord(Base):
    """A record waiting for records it depends on; processed again when they arrive."""

    __tablename__ = "parked_records"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    entity: Mapped[str] = mapped_column(String(30))
    zoho_id: Mapped[str] = mapped_column(String(32))
    zoho_modified_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    raw: Mapped[dict[str, Any]] = mapped_column(RecordDocument)
    reason: Mapped[str] = mapped_column(String(60))
    message: Mapped[str] = mapped_column(Text)
    waiting_for: Mapped[list[dict[str, str]]] = mapped_column(JSONDocument)
    inbound_event_id: Mapped[int | None] = mapped_column(
        ForeignKey("inbound_events.id", ondelete="SET NULL")
    )
    parked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("tenant_id", "entity", "zoho_id"),)


class ParkedWait(Base):
    """One missing dependency of a parked record; deleted when the dependency is stored."""

    __tablename__ = "parked_waits"

    parked_id: Mapped[int] = mapped_column(
        ForeignKey("parked_records.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    entity: Mapped[str] = mapped_column(String(30), primary_key=True)
    zoho_id: Mapped[str] = mapped_column(String(32), primary_key=True)

    __table_args__ = (Index(None, "tenant_id", "entity", "zoho_id"),)


class RecordOutcome(Base):
    """What happened to a record each time it arrived (every outcome except UNCHANGED)."""

    __tablename__ = "record_outcomes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    entity: Mapped[str] = mapped_column(String(30))
    zoho_id: Mapped[str] = mapped_column(String(32))
    inbound_event_id: Mapped[int | None] = mapped_column(
        ForeignKey("inbound_events.id", ondelete="SET NULL")
    )
    outcome: Mapped[str] = mapped_column(String(10))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index(None, "tenant_id", "entity", "zoho_id", "id"),)


def _column_type(field: FieldSpec) -> TypeEngine[Any]:
    if field.kind in (FieldKind.TEXT, FieldKind.LOOKUP):
        return Text() if field.max_length > 4000 else String(field.max_length)
    types: dict[FieldKind, TypeEngine[Any]] = {
        FieldKind.DATE: Date(),
        FieldKind.DATETIME: UTCDateTime(),
        FieldKind.DECIMAL: Amount(),
        FieldKind.INTEGER: Integer(),
        FieldKind.BOOLEAN: Boolean(),
    }
    return types[field.kind]


WITH_WARNINGS = "warnings IS NOT NULL"
"""Rows whose stored version has warnings (few): what the warnings list reads."""


def _entity_table(spec: EntitySpec) -> Table:
    columns: list[Any] = [
        Column("id", BigId, primary_key=True),
        Column("tenant_id", ForeignKey("tenants.id"), nullable=False),
        Column("zoho_id", String(32), nullable=False),
    ]
    columns += [Column(f.name, _column_type(f), nullable=not f.required) for f in spec.fields]
    columns += [
        Column("fingerprint", String(64), nullable=False),
        Column("zoho_modified_time", UTCDateTime()),
        Column("data", JSONDocument, nullable=False),
        Column("raw", RecordDocument, nullable=False),
        Column("warnings", OptionalDocument),
        Column("last_event_id", ForeignKey("inbound_events.id", ondelete="SET NULL")),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
        Column("deleted_at", UTCDateTime()),
        UniqueConstraint("tenant_id", "zoho_id"),
        Index(
            f"ix_{spec.key}_with_warnings",
            "tenant_id",
            postgresql_where=text(WITH_WARNINGS),
            sqlite_where=text(WITH_WARNINGS),
        ),
    ]
    for dep in spec.dependencies:
        assert dep.lookup is not None
        columns.append(
            ForeignKeyConstraint(
                ["tenant_id", dep.name], [f"{dep.lookup}.tenant_id", f"{dep.lookup}.zoho_id"]
            )
        )
        columns.append(Index(None, "tenant_id", dep.name))
    return Table(spec.key, Base.metadata, *columns)


ENTITY_TABLES: dict[str, Table] = {spec.key: _entity_table(spec) for spec in ENTITIES}

# The delivery and security tables live in their own modules; importing them here means that
# whoever loads the models has the whole schema on `Base.metadata`.
from zoho_moodle_sync.db import jobs, metrics, reconciliation, security  # noqa: E402, F401
