"""One queue for all background work: `moodle_jobs` becomes `jobs`, with a kind, a key that
at most one open job holds, and the inbound event a webhook job completes. Accepted webhook
events that no process completed yet get their job.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)
OPEN = sa.text("state IN ('pending', 'waiting', 'held')")
COMMON = (
    "state, attempts, due_at, confirmed, claimed_by, lease_until, wait_reason, last_errorcode, "
    "last_error, created_at, updated_at, finished_at"
)
# Built from the constants above only (no outside input), so plain string SQL is safe here.
COPY_UP = (
    f"INSERT INTO jobs (id, kind, tenant_id, key, entity, zoho_id, action, event_id, {COMMON}) "  # noqa: S608
    "SELECT id, 'deliver', tenant_id, 'deliver:' || tenant_id || ':' || entity || ':' || zoho_id, "
    f"entity, zoho_id, action, NULL, {COMMON} FROM moodle_jobs"
)
WEBHOOK_JOBS = (
    f"INSERT INTO jobs (kind, tenant_id, key, event_id, {COMMON}) "  # noqa: S608
    "SELECT 'webhook', tenant_id, NULL, id, 'pending', 0, received_at, false, NULL, NULL, "
    "NULL, NULL, NULL, received_at, received_at, NULL "
    "FROM inbound_events WHERE source = 'webhook' AND status = 'accepted'"
)
COPY_DOWN = (
    f"INSERT INTO moodle_jobs (id, tenant_id, entity, zoho_id, action, {COMMON}) "  # noqa: S608
    f"SELECT id, tenant_id, entity, zoho_id, action, {COMMON} FROM jobs WHERE kind = 'deliver'"
)
RESTART_IDS = "SELECT setval(pg_get_serial_sequence('{0}', 'id'), COALESCE(MAX(id), 1)) FROM {0}"


def _state_columns() -> list[sa.Column[object]]:
    return [
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
    ]


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=True),
        sa.Column("key", sa.String(length=200), nullable=True),
        sa.Column("entity", sa.String(length=30), nullable=True),
        sa.Column("zoho_id", sa.String(length=32), nullable=True),
        sa.Column("action", sa.String(length=10), nullable=True),
        sa.Column("event_id", BIG_ID, nullable=True),
        *_state_columns(),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_jobs_tenant_id_tenants")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["inbound_events.id"],
            name=op.f("fk_jobs_event_id_inbound_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index("ix_jobs_state_due_at", "jobs", ["state", "due_at"])
    op.create_index("ix_jobs_tenant_id_entity_zoho_id", "jobs", ["tenant_id", "entity", "zoho_id"])
    op.create_index("ix_jobs_event_id", "jobs", ["event_id"])
    op.create_index(
        "uq_jobs_open_key",
        "jobs",
        ["key"],
        unique=True,
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.execute(COPY_UP)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(RESTART_IDS.format("jobs"))
    # Webhooks answered 202 whose records no process completed: their jobs, due now.
    op.execute(WEBHOOK_JOBS)
    op.drop_table("moodle_jobs")


def downgrade() -> None:
    op.create_table(
        "moodle_jobs",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=30), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        *_state_columns(),
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
    op.execute(COPY_DOWN)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(RESTART_IDS.format("moodle_jobs"))
    op.drop_table("jobs")
