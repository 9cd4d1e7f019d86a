"""Moodle delivery: outbox jobs, links to Moodle objects, the call log, tenant pauses; and one
index per dependency lookup, named after all its columns (0001 named several alike).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types are spelled out here rather than imported, so this revision never changes under us.
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)
OPEN = sa.text("state IN ('pending', 'waiting', 'held')")

# (table, old single name, [(new name, columns), ...]) for the indexes of 0001 that shared a name.
RENAMED_INDEXES: list[tuple[str, str, list[tuple[str, list[str]]]]] = [
    (
        "classes",
        "ix_classes_tenant_id",
        [
            ("ix_classes_tenant_id_program_zoho_id", ["tenant_id", "program_zoho_id"]),
            ("ix_classes_tenant_id_teacher_zoho_id", ["tenant_id", "teacher_zoho_id"]),
            ("ix_classes_tenant_id_unit_zoho_id", ["tenant_id", "unit_zoho_id"]),
        ],
    ),
    (
        "enrollments",
        "ix_enrollments_tenant_id",
        [
            ("ix_enrollments_tenant_id_class_zoho_id", ["tenant_id", "class_zoho_id"]),
            ("ix_enrollments_tenant_id_student_zoho_id", ["tenant_id", "student_zoho_id"]),
        ],
    ),
    (
        "grades",
        "ix_grades_tenant_id",
        [
            ("ix_grades_tenant_id_class_zoho_id", ["tenant_id", "class_zoho_id"]),
            ("ix_grades_tenant_id_student_zoho_id", ["tenant_id", "student_zoho_id"]),
        ],
    ),
    (
        "inbound_events",
        "ix_inbound_events_tenant_id",
        [("ix_inbound_events_tenant_id_received_at", ["tenant_id", "received_at"])],
    ),
    (
        "parked_waits",
        "ix_parked_waits_tenant_id",
        [("ix_parked_waits_tenant_id_entity_zoho_id", ["tenant_id", "entity", "zoho_id"])],
    ),
    (
        "payments",
        "ix_payments_tenant_id",
        [("ix_payments_tenant_id_registration_zoho_id", ["tenant_id", "registration_zoho_id"])],
    ),
    (
        "record_outcomes",
        "ix_record_outcomes_tenant_id",
        [
            (
                "ix_record_outcomes_tenant_id_entity_zoho_id_id",
                ["tenant_id", "entity", "zoho_id", "id"],
            )
        ],
    ),
    (
        "registrations",
        "ix_registrations_tenant_id",
        [
            ("ix_registrations_tenant_id_program_zoho_id", ["tenant_id", "program_zoho_id"]),
            ("ix_registrations_tenant_id_student_zoho_id", ["tenant_id", "student_zoho_id"]),
        ],
    ),
    (
        "units",
        "ix_units_tenant_id",
        [("ix_units_tenant_id_program_zoho_id", ["tenant_id", "program_zoho_id"])],
    ),
]

# What 0001 had under the old names (for downgrade).
OLD_INDEX_COLUMNS: dict[str, list[str]] = {
    "ix_classes_tenant_id": ["tenant_id", "program_zoho_id"],
    "ix_enrollments_tenant_id": ["tenant_id", "class_zoho_id"],
    "ix_grades_tenant_id": ["tenant_id", "student_zoho_id"],
    "ix_inbound_events_tenant_id": ["tenant_id", "received_at"],
    "ix_parked_waits_tenant_id": ["tenant_id", "entity", "zoho_id"],
    "ix_payments_tenant_id": ["tenant_id", "registration_zoho_id"],
    "ix_record_outcomes_tenant_id": ["tenant_id", "entity", "zoho_id", "id"],
    "ix_registrations_tenant_id": ["tenant_id", "student_zoho_id"],
    "ix_units_tenant_id": ["tenant_id", "program_zoho_id"],
}


def upgrade() -> None:
    for table, old, new in RENAMED_INDEXES:
        op.drop_index(old, table_name=table)
        for name, columns in new:
            op.create_index(name, table, columns, unique=False)

    op.create_table(
        "moodle_jobs",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=30), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_at", TIME, nullable=False),
        sa.Column("confirmed", sa.Boolean(), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("lease_until", TIME, nullable=True),
        sa.Column("wait_reason", sa.Text(), nullable=True),
        sa.Column("last_errorcode", sa.String(length=100), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("finished_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_moodle_jobs_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moodle_jobs")),
    )
    op.create_index("ix_moodle_jobs_state_due_at", "moodle_jobs", ["state", "due_at"])
    op.create_index(
        "ix_moodle_jobs_tenant_id_entity_zoho_id", "moodle_jobs", ["tenant_id", "entity", "zoho_id"]
    )
    op.create_index(
        "uq_moodle_jobs_open_record",
        "moodle_jobs",
        ["tenant_id", "entity", "zoho_id"],
        unique=True,
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_table(
        "moodle_links",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=30), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("moodle_id", sa.Integer(), nullable=True),
        sa.Column("adopted", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("delivered_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("delivered_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_moodle_links_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moodle_links")),
        sa.UniqueConstraint(
            "tenant_id", "entity", "zoho_id", name=op.f("uq_moodle_links_tenant_id_entity_zoho_id")
        ),
    )
    op.create_table(
        "moodle_calls",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("function", sa.String(length=100), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("job_ids", JSON, nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("errorcode", sa.String(length=100), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_moodle_calls_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moodle_calls")),
    )
    op.create_index("ix_moodle_calls_tenant_id_at", "moodle_calls", ["tenant_id", "at"])
    op.create_table(
        "delivery_pauses",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("errorcode", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("paused_at", TIME, nullable=False),
        sa.Column("probe_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_delivery_pauses_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_delivery_pauses")),
    )


def downgrade() -> None:
    op.drop_table("delivery_pauses")
    op.drop_index("ix_moodle_calls_tenant_id_at", table_name="moodle_calls")
    op.drop_table("moodle_calls")
    op.drop_table("moodle_links")
    op.drop_index("uq_moodle_jobs_open_record", table_name="moodle_jobs")
    op.drop_index("ix_moodle_jobs_tenant_id_entity_zoho_id", table_name="moodle_jobs")
    op.drop_index("ix_moodle_jobs_state_due_at", table_name="moodle_jobs")
    op.drop_table("moodle_jobs")
    for table, old, new in RENAMED_INDEXES:
        for name, _columns in new:
            op.drop_index(name, table_name=table)
        op.create_index(old, table, OLD_INDEX_COLUMNS[old], unique=False)
