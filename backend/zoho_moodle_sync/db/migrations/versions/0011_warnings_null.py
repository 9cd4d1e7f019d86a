"""A record without warnings has SQL NULL `warnings`, not the JSON `null`: the partial index of
records with warnings (`warnings IS NOT NULL`) then holds only those, and listing them (the
warnings list, the metrics) no longer reads every record.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
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
)


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    json_null = "jsonb_typeof(warnings) = 'null'" if postgresql else "warnings = 'null'"
    for name in TABLES:
        records = sa.table(name, sa.column("warnings"))
        op.execute(records.update().where(sa.text(json_null)).values(warnings=sa.null()))


def downgrade() -> None:
    """Nothing to undo: SQL NULL reads back as None, as the JSON `null` did."""
