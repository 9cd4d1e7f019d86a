"""What earlier pulls established: per tenant and entity the last module pulled to the end (by an
import or a catch-up), from which the next catch-up starts, and which `/v1/status` and `/metrics`
show."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.reconciliation import Pull, PullModule

FIRST_LOOK_BACK = timedelta(days=1)
"""How far the first catch-up of an entity never pulled looks back; the history before that is
brought in by an import (`zoho-moodle-sync pull`)."""


@dataclass(frozen=True)
class LastPull:
    """An entity's last module pulled to the end."""

    tenant_id: int
    entity: str
    kind: str
    started_at: datetime
    finished_at: datetime
    records: int
    outcomes: dict[str, Any]
    caught: int
    skipped: str | None

    def view(self, now: datetime) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "finished_at": self.finished_at.isoformat(),
            "age_seconds": round((now - self.finished_at).total_seconds()),
            "records": self.records,
            "outcomes": self.outcomes,
            "caught": self.caught,
            "skipped": self.skipped,
        }


def last_pulls(
    session: Session, *, tenant_id: int | None = None
) -> dict[tuple[int, str], LastPull]:
    """(tenant id, entity) → its last module pulled to the end."""
    latest = (
        select(Pull.tenant_id, PullModule.entity, func.max(PullModule.finished_at).label("at"))
        .join(Pull, Pull.id == PullModule.pull_id)
        .where(PullModule.phase == "done")
        .group_by(Pull.tenant_id, PullModule.entity)
    )
    if tenant_id is not None:
        latest = latest.where(Pull.tenant_id == tenant_id)
    newest = latest.subquery()
    rows = session.execute(
        select(Pull.tenant_id, Pull.kind, PullModule)
        .join(Pull, Pull.id == PullModule.pull_id)
        .join(
            newest,
            (newest.c.tenant_id == Pull.tenant_id)
            & (newest.c.entity == PullModule.entity)
            & (newest.c.at == PullModule.finished_at),
        )
        .where(PullModule.phase == "done")
    )
    found: dict[tuple[int, str], LastPull] = {}
    for row_tenant, kind, module in rows:
        assert module.finished_at is not None
        found[(row_tenant, module.entity)] = LastPull(
            row_tenant,
            module.entity,
            kind,
            module.started_at,
            module.finished_at,
            module.records,
            dict(module.outcomes),
            module.caught,
            module.skipped,
        )
    return found


def catch_up_since(
    session: Session,
    *,
    tenant_id: int,
    entities: list[str],
    now: datetime,
    overlap: timedelta,
) -> dict[str, datetime]:
    """Per entity, from when the next catch-up reads: when its last pull to the end started,
    less `overlap` (records saved while that pull ran, clocks apart); FIRST_LOOK_BACK for an
    entity never pulled."""
    last = last_pulls(session, tenant_id=tenant_id)
    since = {}
    for entity in entities:
        done = last.get((tenant_id, entity))
        since[entity] = done.started_at - overlap if done else now - FIRST_LOOK_BACK
    return since
