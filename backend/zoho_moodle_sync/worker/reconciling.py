"""Scheduled reconciliation, as jobs of the queue: the catch-up (per tenant with Zoho API
credentials, every RECONCILE_MINUTES: what changed in Zoho since the last pull, and the deleted
records) and the drift check (per tenant with a Moodle, every MOODLE_CHECK_HOURS: Moodle read
back and compared with what was delivered, report only).

Each is one periodic job per tenant: whichever worker claims it runs it, so one process at a
time per tenant across hosts, its lease renewed by a heartbeat while it runs; API processes never
run them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from datetime import timedelta

import httpx

from zoho_moodle_sync import tenants
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import JobKind
from zoho_moodle_sync.db.models import Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.errors import ConfigurationError
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.jobs.lease import Lease, settle_surely
from zoho_moodle_sync.jobs.queue import Claimed, Verdict
from zoho_moodle_sync.reconcile import drift, pull
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import TenantContext

log = logging.getLogger(__name__)

RECONCILE_KINDS = (JobKind.CATCH_UP, JobKind.MOODLE_CHECK)


def schedule(db: Database, settings: Settings, kinds: Collection[JobKind]) -> None:
    """Queue each enabled tenant's catch-up (when it has Zoho API credentials) and drift check
    (when it has a Moodle), unless the settings turn them off. A catch-up is due at once (a
    worker starting after an outage catches up first); a drift check after its interval."""
    now = utcnow()
    with db.sessions.begin() as session:
        for tenant in tenants.list_all(session):
            if tenant.disabled_at is not None:
                continue
            if JobKind.CATCH_UP in kinds and _catches_up(tenant, settings):
                queue.ensure_scheduled(
                    session, kind=JobKind.CATCH_UP, tenant_id=tenant.id, due_at=now
                )
            if JobKind.MOODLE_CHECK in kinds and _checks_moodle(tenant, settings):
                due = now + timedelta(hours=settings.moodle_check_hours)
                queue.ensure_scheduled(
                    session, kind=JobKind.MOODLE_CHECK, tenant_id=tenant.id, due_at=due
                )


def _catches_up(tenant: Tenant, settings: Settings) -> bool:
    if settings.reconcile_minutes <= 0:
        return False
    try:
        return tenants.zoho_credentials(tenant, settings) is not None
    except ConfigurationError:
        return False


def _checks_moodle(tenant: Tenant, settings: Settings) -> bool:
    if settings.moodle_check_hours <= 0:
        return False
    try:
        return tenants.moodle_connection(tenant, settings) is not None
    except ConfigurationError:
        return False


async def run_due(
    db: Database,
    settings: Settings,
    *,
    worker_id: str,
    kinds: Collection[JobKind],
    zoho_http: httpx.AsyncClient,
    moodle_http: httpx.AsyncClient,
) -> int:
    """Claim and run the due reconciliation jobs of `kinds`, one at a time; how many were
    settled."""
    settled = 0
    for kind in (kind for kind in RECONCILE_KINDS if kind in kinds):
        jobs = await asyncio.to_thread(
            lambda kind=kind: queue.claim(  # type: ignore[misc]
                db,
                kind=kind,
                worker_id=worker_id,
                limit=1,
                lease_seconds=settings.worker_lease_seconds,
            )
        )
        for job in jobs:
            async with Lease(
                db, worker_id=worker_id, jobs=[job], lease_seconds=settings.worker_lease_seconds
            ):
                if job.kind == JobKind.CATCH_UP:
                    verdict = await _catch_up(db, settings, job, zoho_http)
                else:
                    verdict = await _check(db, settings, job, moodle_http)
                await settle_surely(
                    db,
                    worker_id=worker_id,
                    jobs=[job],
                    verdicts={job.id: verdict},
                    settings=settings,
                )
            settled += 1
    return settled


def _tenant(db: Database, job: Claimed) -> tuple[Tenant, TenantContext] | None:
    with db.sessions() as session:
        row = session.get(Tenant, job.tenant_id) if job.tenant_id is not None else None
        if row is None or row.disabled_at is not None:
            return None
        session.expunge(row)
        return row, tenants.context_of(row)


async def _catch_up(
    db: Database, settings: Settings, job: Claimed, http: httpx.AsyncClient
) -> Verdict:
    found = await asyncio.to_thread(_tenant, db, job)
    if found is None or not _catches_up(found[0], settings):
        return Verdict("done", "no catch-up for this tenant (off, disabled or no Zoho credentials)")
    interval = settings.reconcile_minutes * 60
    _, context = found
    try:
        plan = await asyncio.to_thread(pull.catch_up_plan, db, settings, context)
        report = await pull.pull(db, settings, plan, http=http)
    except (pull.PullStopped, ConfigurationError) as error:
        log.warning("tenant %s: catch-up stopped: %s", context.slug, error)
        return Verdict("again", f"the last catch-up stopped: {error}", delay=interval)
    except Exception as error:  # a defect or the database going away: tried again next time
        log.exception("tenant %s: catch-up failed", context.slug)
        return Verdict("again", f"the last catch-up failed: {error}", delay=interval)
    records = sum(module.records for module in report.modules)
    caught = sum(module.caught for module in report.modules)
    if records:
        log.info("tenant %s: catch-up read %d record(s), %d caught", context.slug, records, caught)
    return Verdict("again", delay=interval)


async def _check(
    db: Database, settings: Settings, job: Claimed, http: httpx.AsyncClient
) -> Verdict:
    found = await asyncio.to_thread(_tenant, db, job)
    if found is None or not _checks_moodle(found[0], settings):
        return Verdict("done", "no drift check for this tenant (off, disabled or no Moodle)")
    interval = settings.moodle_check_hours * 3600
    _, context = found
    try:
        await drift.check(db, settings, context, http=http, repair=False)
    except Exception as error:  # Moodle unreachable, a defect: tried again next time
        log.warning("tenant %s: drift check failed: %s", context.slug, error)
        return Verdict("again", f"the last drift check failed: {error}", delay=interval)
    return Verdict("again", delay=interval)
