"""Initial schema: tenants, inbound events, parking, outcome history, the nine entities.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types are spelled out here rather than imported, so this revision never changes under us.
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
AMOUNT = sa.Numeric(18, 4).with_variant(sa.String(40), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("slug", name=op.f("uq_tenants_slug")),
    )
    op.create_table(
        "inbound_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("route", sa.String(length=300), nullable=False),
        sa.Column("entity", sa.String(length=30), nullable=True),
        sa.Column("content_type", sa.String(length=200), nullable=True),
        sa.Column("query", JSON, nullable=False),
        sa.Column("headers", JSON, nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("body_size", sa.BigInteger(), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("body_truncated", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("summary", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replay_of", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.ForeignKeyConstraint(
            ["replay_of"],
            ["inbound_events.id"],
            name=op.f("fk_inbound_events_replay_of_inbound_events"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_inbound_events_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_events")),
    )
    with op.batch_alter_table("inbound_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbound_events_status"), ["status"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_inbound_events_tenant_id"), ["tenant_id", "received_at"], unique=False
        )

    op.create_table(
        "parked_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=30), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("zoho_modified_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("raw", JSON, nullable=False),
        sa.Column("reason", sa.String(length=60), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("waiting_for", JSON, nullable=False),
        sa.Column(
            "inbound_event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbound_event_id"],
            ["inbound_events.id"],
            name=op.f("fk_parked_records_inbound_event_id_inbound_events"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_parked_records_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_parked_records")),
        sa.UniqueConstraint(
            "tenant_id",
            "entity",
            "zoho_id",
            name=op.f("uq_parked_records_tenant_id_entity_zoho_id"),
        ),
    )
    op.create_table(
        "programs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("program_code", sa.String(length=120), nullable=True),
        sa.Column("status", sa.String(length=120), nullable=True),
        sa.Column("major", sa.String(length=120), nullable=True),
        sa.Column("program_type", sa.String(length=120), nullable=True),
        sa.Column("price", AMOUNT, nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("zoho_modified_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("raw", JSON, nullable=False),
        sa.Column(
            "last_event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["last_event_id"],
            ["inbound_events.id"],
            name=op.f("fk_programs_last_event_id_inbound_events"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_programs_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_programs")),
        sa.UniqueConstraint("tenant_id", "zoho_id", name=op.f("uq_programs_tenant_id_zoho_id")),
    )
    op.create_table(
        "record_outcomes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=30), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column(
            "inbound_event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("detail", JSON, nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbound_event_id"],
            ["inbound_events.id"],
            name=op.f("fk_record_outcomes_inbound_event_id_inbound_events"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_record_outcomes_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_outcomes")),
    )
    with op.batch_alter_table("record_outcomes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_record_outcomes_tenant_id"),
            ["tenant_id", "entity", "zoho_id", "id"],
            unique=False,
        )

    op.create_table(
        "students",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("student_number", sa.String(length=120), nullable=False),
        sa.Column("first_name", sa.String(length=255), nullable=False),
        sa.Column("last_name", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=100), nullable=True),
        sa.Column("academic_email", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=120), nullable=True),
        sa.Column("phone", sa.String(length=50), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("registration_date", sa.Date(), nullable=True),
        sa.Column("academic_program", sa.String(length=120), nullable=True),
        sa.Column("major", sa.String(length=120), nullable=True),
        sa.Column("study_mode", sa.String(length=120), nullable=True),
        sa.Column("program_zoho_id", sa.String(length=32), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("zoho_modified_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("raw", JSON, nullable=False),
        sa.Column(
            "last_event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["last_event_id"],
            ["inbound_events.id"],
            name=op.f("fk_students_last_event_id_inbound_events"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_students_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_students")),
        sa.UniqueConstraint("tenant_id", "zoho_id", name=op.f("uq_students_tenant_id_zoho_id")),
    )
    op.create_table(
        "teachers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("email", sa.String(length=100), nullable=True),
        sa.Column("academic_email", sa.String(length=100), nullable=True),
        sa.Column("phone", sa.String(length=50), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("zoho_modified_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("raw", JSON, nullable=False),
        sa.Column(
            "last_event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["last_event_id"],
            ["inbound_events.id"],
            name=op.f("fk_teachers_last_event_id_inbound_events"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_teachers_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teachers")),
        sa.UniqueConstraint("tenant_id", "zoho_id", name=op.f("uq_teachers_tenant_id_zoho_id")),
    )
    op.create_table(
        "parked_waits",
        sa.Column(
            "parked_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=30), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["parked_id"],
            ["parked_records.id"],
            name=op.f("fk_parked_waits_parked_id_parked_records"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_parked_waits_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("parked_id", "entity", "zoho_id", name=op.f("pk_parked_waits")),
    )
    with op.batch_alter_table("parked_waits", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_parked_waits_tenant_id"),
            ["tenant_id", "entity", "zoho_id"],
            unique=False,
        )

    op.create_table(
        "registrations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("registration_code", sa.String(length=120), nullable=True),
        sa.Column("student_zoho_id", sa.String(length=32), nullable=False),
        sa.Column("program_zoho_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=120), nullable=True),
        sa.Column("registration_date", sa.Date(), nullable=True),
        sa.Column("study_mode", sa.String(length=120), nullable=True),
        sa.Column("intake", sa.String(length=120), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("zoho_modified_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("raw", JSON, nullable=False),
        sa.Column(
            "last_event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["last_event_id"],
            ["inbound_events.id"],
            name=op.f("fk_registrations_last_event_id_inbound_events"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "program_zoho_id"],
            ["programs.tenant_id", "programs.zoho_id"],
            name=op.f("fk_registrations_tenant_id_program_zoho_id_programs"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "student_zoho_id"],
            ["students.tenant_id", "students.zoho_id"],
            name=op.f("fk_registrations_tenant_id_student_zoho_id_students"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_registrations_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registrations")),
        sa.UniqueConstraint(
            "tenant_id", "zoho_id", name=op.f("uq_registrations_tenant_id_zoho_id")
        ),
    )
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_registrations_tenant_id"), ["tenant_id", "student_zoho_id"], unique=False
        )

    op.create_table(
        "units",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("unit_code", sa.String(length=120), nullable=True),
        sa.Column("unit_number", sa.String(length=120), nullable=True),
        sa.Column("level", sa.String(length=120), nullable=True),
        sa.Column("major", sa.String(length=120), nullable=True),
        sa.Column("credit", sa.String(length=120), nullable=True),
        sa.Column("program_zoho_id", sa.String(length=32), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("zoho_modified_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("raw", JSON, nullable=False),
        sa.Column(
            "last_event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["last_event_id"],
            ["inbound_events.id"],
            name=op.f("fk_units_last_event_id_inbound_events"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "program_zoho_id"],
            ["programs.tenant_id", "programs.zoho_id"],
            name=op.f("fk_units_tenant_id_program_zoho_id_programs"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_units_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_units")),
        sa.UniqueConstraint("tenant_id", "zoho_id", name=op.f("uq_units_tenant_id_zoho_id")),
    )
    with op.batch_alter_table("units", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_units_tenant_id"), ["tenant_id", "program_zoho_id"], unique=False
        )

    op.create_table(
        "classes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("class_code", sa.String(length=120), nullable=True),
        sa.Column("class_name", sa.String(length=255), nullable=False),
        sa.Column("short_name", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=120), nullable=True),
        sa.Column("term", sa.String(length=120), nullable=True),
        sa.Column("year", sa.String(length=20), nullable=True),
        sa.Column("study_mode", sa.String(length=120), nullable=True),
        sa.Column("start_date", sa.Date(), nullable=True),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("program_zoho_id", sa.String(length=32), nullable=True),
        sa.Column("teacher_zoho_id", sa.String(length=32), nullable=True),
        sa.Column("unit_zoho_id", sa.String(length=32), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("zoho_modified_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("raw", JSON, nullable=False),
        sa.Column(
            "last_event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["last_event_id"],
            ["inbound_events.id"],
            name=op.f("fk_classes_last_event_id_inbound_events"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "program_zoho_id"],
            ["programs.tenant_id", "programs.zoho_id"],
            name=op.f("fk_classes_tenant_id_program_zoho_id_programs"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "teacher_zoho_id"],
            ["teachers.tenant_id", "teachers.zoho_id"],
            name=op.f("fk_classes_tenant_id_teacher_zoho_id_teachers"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "unit_zoho_id"],
            ["units.tenant_id", "units.zoho_id"],
            name=op.f("fk_classes_tenant_id_unit_zoho_id_units"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_classes_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_classes")),
        sa.UniqueConstraint("tenant_id", "zoho_id", name=op.f("uq_classes_tenant_id_zoho_id")),
    )
    with op.batch_alter_table("classes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_classes_tenant_id"), ["tenant_id", "program_zoho_id"], unique=False
        )

    op.create_table(
        "payments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("payment_code", sa.String(length=120), nullable=True),
        sa.Column("registration_zoho_id", sa.String(length=32), nullable=False),
        sa.Column("student_zoho_id", sa.String(length=32), nullable=True),
        sa.Column("amount", AMOUNT, nullable=True),
        sa.Column("payment_date", sa.Date(), nullable=True),
        sa.Column("method", sa.String(length=120), nullable=True),
        sa.Column("payment_type", sa.String(length=120), nullable=True),
        sa.Column("installment_no", sa.Integer(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("zoho_modified_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("raw", JSON, nullable=False),
        sa.Column(
            "last_event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["last_event_id"],
            ["inbound_events.id"],
            name=op.f("fk_payments_last_event_id_inbound_events"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "registration_zoho_id"],
            ["registrations.tenant_id", "registrations.zoho_id"],
            name=op.f("fk_payments_tenant_id_registration_zoho_id_registrations"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_payments_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("tenant_id", "zoho_id", name=op.f("uq_payments_tenant_id_zoho_id")),
    )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payments_tenant_id"), ["tenant_id", "registration_zoho_id"], unique=False
        )

    op.create_table(
        "enrollments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("enrollment_code", sa.String(length=120), nullable=True),
        sa.Column("student_zoho_id", sa.String(length=32), nullable=False),
        sa.Column("class_zoho_id", sa.String(length=32), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=True),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("enrollment_type", sa.String(length=120), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("zoho_modified_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("raw", JSON, nullable=False),
        sa.Column(
            "last_event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["last_event_id"],
            ["inbound_events.id"],
            name=op.f("fk_enrollments_last_event_id_inbound_events"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "class_zoho_id"],
            ["classes.tenant_id", "classes.zoho_id"],
            name=op.f("fk_enrollments_tenant_id_class_zoho_id_classes"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "student_zoho_id"],
            ["students.tenant_id", "students.zoho_id"],
            name=op.f("fk_enrollments_tenant_id_student_zoho_id_students"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_enrollments_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollments")),
        sa.UniqueConstraint("tenant_id", "zoho_id", name=op.f("uq_enrollments_tenant_id_zoho_id")),
    )
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_enrollments_tenant_id"), ["tenant_id", "class_zoho_id"], unique=False
        )

    op.create_table(
        "grades",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("grade_code", sa.String(length=120), nullable=True),
        sa.Column("student_zoho_id", sa.String(length=32), nullable=False),
        sa.Column("class_zoho_id", sa.String(length=32), nullable=False),
        sa.Column("grade", sa.String(length=120), nullable=True),
        sa.Column("grade_status", sa.String(length=120), nullable=True),
        sa.Column("attempt_number", sa.Integer(), nullable=True),
        sa.Column("attempt_date", sa.Date(), nullable=True),
        sa.Column("unit_name", sa.String(length=255), nullable=True),
        sa.Column("feedback", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("zoho_modified_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("raw", JSON, nullable=False),
        sa.Column(
            "last_event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["last_event_id"],
            ["inbound_events.id"],
            name=op.f("fk_grades_last_event_id_inbound_events"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "class_zoho_id"],
            ["classes.tenant_id", "classes.zoho_id"],
            name=op.f("fk_grades_tenant_id_class_zoho_id_classes"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "student_zoho_id"],
            ["students.tenant_id", "students.zoho_id"],
            name=op.f("fk_grades_tenant_id_student_zoho_id_students"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_grades_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grades")),
        sa.UniqueConstraint("tenant_id", "zoho_id", name=op.f("uq_grades_tenant_id_zoho_id")),
    )
    with op.batch_alter_table("grades", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_grades_tenant_id"), ["tenant_id", "student_zoho_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("grades", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_grades_tenant_id"))

    op.drop_table("grades")
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrollments_tenant_id"))

    op.drop_table("enrollments")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payments_tenant_id"))

    op.drop_table("payments")
    with op.batch_alter_table("classes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_classes_tenant_id"))

    op.drop_table("classes")
    with op.batch_alter_table("units", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_units_tenant_id"))

    op.drop_table("units")
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_registrations_tenant_id"))

    op.drop_table("registrations")
    with op.batch_alter_table("parked_waits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_parked_waits_tenant_id"))

    op.drop_table("parked_waits")
    op.drop_table("teachers")
    op.drop_table("students")
    with op.batch_alter_table("record_outcomes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_record_outcomes_tenant_id"))

    op.drop_table("record_outcomes")
    op.drop_table("programs")
    op.drop_table("parked_records")
    with op.batch_alter_table("inbound_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_events_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_inbound_events_status"))

    op.drop_table("inbound_events")
    op.drop_table("tenants")
