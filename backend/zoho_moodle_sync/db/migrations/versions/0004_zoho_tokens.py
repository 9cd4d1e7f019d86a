"""Zoho access tokens shared between processes.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "zoho_tokens",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("sealed_token", sa.String(length=1000), nullable=False),
        sa.Column("api_domain", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_zoho_tokens")),
    )


def downgrade() -> None:
    op.drop_table("zoho_tokens")
