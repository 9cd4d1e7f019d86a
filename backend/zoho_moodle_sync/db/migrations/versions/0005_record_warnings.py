"""Warnings of stored records: values left out, dates that contradict each other.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENTITY_TABLES = (
    "programs",
    "teachers",
    "students",
    "units",
    "classes",
    "enrollments",
    "registrations",
    "payments",
    "grades",
)
WITH_WARNINGS = "warnings IS NOT NULL"


def upgrade() -> None:
    document = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    for table in ENTITY_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("warnings", document, nullable=True))
        op.create_index(
            f"ix_{table}_with_warnings",
            table,
            ["tenant_id"],
            postgresql_where=sa.text(WITH_WARNINGS),
            sqlite_where=sa.text(WITH_WARNINGS),
        )


def downgrade() -> None:
    for table in ENTITY_TABLES:
        op.drop_index(f"ix_{table}_with_warnings", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("warnings")
