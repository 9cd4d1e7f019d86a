"""Records as Zoho sent them (`raw`) are kept as JSON text on PostgreSQL instead of `jsonb`:
nothing queries inside them, and storing text skips parsing each 8 KB record into `jsonb`. SQLite
keeps them as JSON text already, so nothing changes there.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "programs",
    "teachers",
    "students",
    "units",
    "classes",
    "enrollments",
    "registrations",
    "payments",
    "grades",
    "parked_records",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN raw TYPE text USING raw::text")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN raw TYPE jsonb USING raw::jsonb")
