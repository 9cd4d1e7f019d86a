"""Reconciliation as `/v1/status` and `/metrics` show it: per tenant and entity the last pull to
the end (import or catch-up), what it saw and its age; pulls under way or stopped; and each
tenant's last drift check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import select
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.models import Tenant
from zoho_moodle_sync.db.reconciliation import Pull
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.reconcile.drift import KINDS, last_checks
from zoho_moodle_sync.reconcile.history import last_pulls


def status_view(session: Session) -> dict[str, Any]:
    slugs = {tenant.id: tenant.slug for tenant in session.scalars(select(Tenant))}
    now = utcnow()
    pulls = [
        {"tenant": slugs.get(tenant_id), "entity": entity, **last.view(now)}
        for (tenant_id, entity), last in sorted(last_pulls(session).items())
    ]
    unfinished = session.scalars(
        select(Pull).where(Pull.state != "done").order_by(Pull.id.desc()).limit(20)
    )
    checks = {
        slugs.get(tenant_id): {
            "checked_at": check.checked_at.isoformat(),
            "age_seconds": round((now - check.checked_at).total_seconds()),
            "differences": check.findings,
            "repaired": check.repaired,
            "kinds": {kind: v["count"] for kind, v in check.summary.get("kinds", {}).items()},
            "notes": check.summary.get("notes", []),
        }
        for tenant_id, check in last_checks(session).items()
    }
    return {
        "last_pulls": pulls,
        "unfinished_pulls": [
            {
                "id": pull.id,
                "tenant": slugs.get(pull.tenant_id),
                "kind": pull.kind,
                "state": pull.state,
                "started_at": pull.started_at.isoformat(),
                "error": pull.error,
            }
            for pull in unfinished
        ],
        "drift": checks,
    }


class ReconcileCollector(Collector):
    """`/metrics`: when each tenant's entities were last pulled to the end, what the last pull
    caught, and what the last drift check found."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Any]:
        last = GaugeMetricFamily(
            "zms_last_reconcile_timestamp_seconds",
            "When the entity was last pulled from Zoho to the end (import or catch-up), as a "
            "Unix time.",
            labels=["tenant", "entity"],
        )
        caught = GaugeMetricFamily(
            "zms_reconcile_caught",
            "Changes the last catch-up found that no webhook had brought (webhooks are lost).",
            labels=["tenant", "entity"],
        )
        drift = GaugeMetricFamily(
            "zms_moodle_drift",
            "Differences between Moodle and what was delivered, by kind, at the last drift check.",
            labels=["tenant", "kind"],
        )
        with self.db.sessions() as session:
            slugs = {tenant.id: tenant.slug for tenant in session.scalars(select(Tenant))}
            for (tenant_id, entity), pull in sorted(last_pulls(session).items()):
                labels = [slugs.get(tenant_id, str(tenant_id)), entity]
                last.add_metric(labels, pull.finished_at.timestamp())
                caught.add_metric(labels, pull.caught)
            for tenant_id, check in sorted(last_checks(session).items()):
                kinds = check.summary.get("kinds", {})
                for kind in KINDS:
                    count = kinds.get(kind, {}).get("count", 0)
                    drift.add_metric([slugs.get(tenant_id, str(tenant_id)), kind], count)
        yield last
        yield caught
        yield drift
