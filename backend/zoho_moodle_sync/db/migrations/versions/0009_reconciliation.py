"""Reconciliation: pulls from the Zoho API (imports and catch-ups) and how far each module has
got; checks of Moodle against what was delivered.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "zoho_pulls",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("since", TIME, nullable=True),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("finished_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_zoho_pulls_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_zoho_pulls")),
    )
    op.create_index("ix_zoho_pulls_tenant_id_kind_id", "zoho_pulls", ["tenant_id", "kind", "id"])
    op.create_table(
        "zoho_pull_modules",
        sa.Column("pull_id", BIG_ID, nullable=False),
        sa.Column("entity", sa.String(length=30), nullable=False),
        sa.Column("phase", sa.String(length=10), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False),
        sa.Column("page_token", sa.String(length=500), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("outcomes", JSON, nullable=False),
        sa.Column("caught", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Text(), nullable=True),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("finished_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["pull_id"],
            ["zoho_pulls.id"],
            name=op.f("fk_zoho_pull_modules_pull_id_zoho_pulls"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pull_id", "entity", name=op.f("pk_zoho_pull_modules")),
    )

    op.create_table(
        "moodle_checks",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("checked_at", TIME, nullable=False),
        sa.Column("findings", sa.Integer(), nullable=False),
        sa.Column("repaired", sa.Integer(), nullable=False),
        sa.Column("summary", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_moodle_checks_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moodle_checks")),
    )
    op.create_index("ix_moodle_checks_tenant_id_id", "moodle_checks", ["tenant_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_moodle_checks_tenant_id_id", table_name="moodle_checks")
    op.drop_table("moodle_checks")
    op.drop_table("zoho_pull_modules")
    op.drop_index("ix_zoho_pulls_tenant_id_kind_id", table_name="zoho_pulls")
    op.drop_table("zoho_pulls")
