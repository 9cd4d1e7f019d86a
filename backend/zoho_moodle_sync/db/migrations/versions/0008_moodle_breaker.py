"""The Moodle circuit breaker: a tenant's delivery pause is of a kind (access refused, or Moodle
unreachable) and counts the probes that failed in a row.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("delivery_pauses") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=10), nullable=False, server_default="access")
        )
        batch.add_column(sa.Column("failures", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("delivery_pauses") as batch:
        batch.alter_column("kind", server_default=None)
        batch.alter_column("failures", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("delivery_pauses") as batch:
        batch.drop_column("failures")
        batch.drop_column("kind")
