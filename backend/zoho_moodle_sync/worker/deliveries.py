"""Moodle delivery as the queue's handler: per tenant with a Moodle, claim due delivery jobs,
deliver them entity by entity in batches (students and teachers together, as users), and settle
each batch's verdicts with its links and calls. A tenant whose Moodle refused the token is
paused, probed now and then, and resumed by itself.

Stopping (SIGTERM, or the end of `serve`) finishes the batch in flight and hands the rest of the
claim back to the queue. A worker killed outright leaves its jobs claimed until their lease ends;
then another worker delivers them again, which is safe because delivery is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from zoho_moodle_sync import tenants
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import JobKind
from zoho_moodle_sync.db.models import Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.delivery import DELIVERY_BY_KIND, Batch, LeaseLost, TenantPaused, store
from zoho_moodle_sync.delivery.base import MoodleDown
from zoho_moodle_sync.delivery.store import Job, Settlement
from zoho_moodle_sync.delivery.users import USER_ENTITIES
from zoho_moodle_sync.entities import DELIVERED, MOODLE_SIDES
from zoho_moodle_sync.errors import ConfigurationError, MoodleAccessDenied, MoodleUnavailable
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.jobs.lease import Lease, settle_surely
from zoho_moodle_sync.jobs.queue import RELEASE, Verdict
from zoho_moodle_sync.moodle import MoodleClient
from zoho_moodle_sync.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _TenantRow:
    tenant: Tenant
    connection: tenants.MoodleConnection


class Deliveries:
    """The delivery jobs of every tenant, one worker's share of them."""

    def __init__(
        self, db: Database, settings: Settings, *, worker_id: str, stopping: asyncio.Event
    ) -> None:
        self.db = db
        self.settings = settings
        self.worker_id = worker_id
        self._stopping = stopping
        self._misconfigured: set[str] = set()

    async def run_due(self, http: httpx.AsyncClient, *, coalesce: bool = True) -> int:
        """Deliver what is due now, once; returns how many jobs were settled. With `coalesce`,
        a tenant whose changes are still arriving one by one waits for the lull."""
        settled = 0
        for row in await asyncio.to_thread(self._tenants):
            if self._stopping.is_set():
                break
            client = MoodleClient(
                base_url=row.connection.base_url,
                token=row.connection.token.get_secret_value(),
                http=http,
                timeout=self.settings.moodle_timeout_seconds,
                max_input_vars=self.settings.moodle_max_input_vars,
            )
            if not await self._may_deliver(row.tenant, client):
                continue
            if coalesce and await asyncio.to_thread(self._still_arriving, row.tenant):
                continue  # delivered at the lull, together
            settled += await self._deliver_tenant(row.tenant, client)
        return settled

    def _still_arriving(self, tenant: Tenant) -> bool:
        return queue.still_arriving(
            self.db,
            tenant_id=tenant.id,
            quiet_seconds=self.settings.delivery_coalesce_seconds,
            max_seconds=self.settings.delivery_coalesce_max_seconds,
        )

    def _tenants(self) -> list[_TenantRow]:
        rows = []
        with self.db.sessions() as session:
            for tenant in tenants.list_all(session):
                if tenant.disabled_at is not None:
                    continue
                try:
                    connection = tenants.moodle_connection(tenant, self.settings)
                except ConfigurationError as error:
                    if tenant.slug not in self._misconfigured:
                        log.error("tenant %s: Moodle is misconfigured: %s", tenant.slug, error)
                        self._misconfigured.add(tenant.slug)
                    continue
                if connection is not None:
                    rows.append(_TenantRow(tenant, connection))
        return rows

    async def _may_deliver(self, tenant: Tenant, client: MoodleClient) -> bool:
        """False while the tenant is paused. A paused tenant's Moodle is probed (site info) when
        its probe is due: access refused keeps it paused (probed every PAUSE_PROBE_SECONDS);
        unreachable puts the next probe off a little longer (the breaker stays open); an answer
        resumes delivery at once, with every job that was held back. Past the outage grace,
        jobs are delivered (and spend their attempts) even while Moodle is unreachable."""
        pause = await asyncio.to_thread(store.pause_of, self.db, tenant.id)
        if pause is None:
            return True
        old = store.outage_is_old(pause, self.settings)
        if pause.probe_at > utcnow():
            return old
        try:
            await client.get_site_info()
        except MoodleAccessDenied as error:
            await self._pause(tenant, error)
            return False
        except MoodleUnavailable as error:
            await self._trip(tenant, error)
            return old
        await asyncio.to_thread(store.resume, self.db, tenant_id=tenant.id)
        log.warning("tenant %s: Moodle answers again; delivery resumed", tenant.slug)
        return True

    async def _pause(self, tenant: Tenant, error: MoodleAccessDenied) -> None:
        reason = f"{error.function}: {error.errorcode}: {error.message}"
        await asyncio.to_thread(
            lambda: store.pause(
                self.db,
                tenant_id=tenant.id,
                errorcode=error.errorcode,
                reason=reason,
                probe_seconds=self.settings.pause_probe_seconds,
            )
        )
        log.error(
            "tenant %s: delivery paused, Moodle refused access (%s). Fix the token or the "
            "service user's capabilities; delivery resumes by itself within %g s",
            tenant.slug,
            reason,
            self.settings.pause_probe_seconds,
        )

    async def _trip(self, tenant: Tenant, error: MoodleUnavailable) -> bool:
        """Open the tenant's breaker; whether the outage is past its grace."""
        row = await asyncio.to_thread(
            lambda: store.trip(
                self.db, tenant_id=tenant.id, reason=str(error), settings=self.settings
            )
        )
        if row.failures == 1:
            log.warning("tenant %s: Moodle is unreachable (%s); delivery waits", tenant.slug, error)
        return store.outage_is_old(row, self.settings)

    async def _deliver_tenant(self, tenant: Tenant, client: MoodleClient) -> int:
        claimed = await asyncio.to_thread(
            lambda: queue.claim(
                self.db,
                kind=JobKind.DELIVER,
                tenant_id=tenant.id,
                worker_id=self.worker_id,
                limit=self.settings.worker_claim_size,
                lease_seconds=self.settings.worker_lease_seconds,
            )
        )
        if not claimed:
            return 0
        lease = Lease(
            self.db,
            worker_id=self.worker_id,
            jobs=claimed,
            lease_seconds=self.settings.worker_lease_seconds,
        )
        async with lease:
            return await self._deliver_claim(tenant, client, lease)

    async def _deliver_claim(self, tenant: Tenant, client: MoodleClient, lease: Lease) -> int:
        jobs = [Job.of(job) for job in lease.held.values()]
        try:
            policy = tenants.delivery_policy(tenant)
        except ConfigurationError as error:
            log.error("tenant %s: %s", tenant.slug, error)
            await self._settle(tenant, lease, jobs, Settlement())
            return 0
        in_flight = asyncio.Semaphore(self.settings.moodle_concurrency)
        deliveries = {
            spec.key: DELIVERY_BY_KIND[side.kind](
                db=self.db,
                tenant_id=tenant.id,
                policy=policy,
                client=client,
                settings=self.settings,
                lease=lease,
                in_flight=in_flight,
            )
            for spec, side in MOODLE_SIDES
        }
        groups: dict[str, list[Job]] = {}
        for spec in DELIVERED:
            # Students and teachers are users alike: delivered together, looked up together.
            key = USER_ENTITIES[0] if spec.key in USER_ENTITIES else spec.key
            groups.setdefault(key, []).extend(job for job in jobs if job.entity == spec.key)
        batches = [
            Batch(key, chunk, Settlement())
            for key, group in groups.items()
            for chunk in _chunks(group, self.settings)
        ]
        settled = 0
        for index, batch in enumerate(batches):
            if self._stopping.is_set():
                await self._hand_back(tenant, lease, batches[index:])
                break
            batch.jobs = [job for job in batch.jobs if job.id not in lease.lost]
            if not batch.jobs:
                continue
            try:
                await deliveries[batch.entity].deliver(batch)
            except LeaseLost:
                # What this worker still holds goes back; the changes it made are found again
                # in Moodle (by idnumber) by whoever delivers these jobs.
                log.warning("tenant %s: leases of a %s batch ran out", tenant.slug, batch.entity)
                await self._settle(tenant, lease, batch.jobs, Settlement())
                continue
            except TenantPaused as paused:
                for job in batch.jobs:
                    batch.decide(job, RELEASE)
                await self._settle(tenant, lease, batch.jobs, batch.settlement)
                await self._hand_back(tenant, lease, batches[index + 1 :])
                await self._pause(tenant, paused.error)
                break
            except MoodleDown as down:
                # One outage, not thousands of failures: what the batch did not decide waits,
                # without spending attempts (until the outage outlasts its grace).
                old = await self._trip(tenant, down.error)
                waiting = (
                    Verdict("retry", str(down.error), "unavailable")
                    if old
                    else Verdict("release", f"waiting for Moodle: {down.error}")
                )
                for job in batch.jobs:
                    batch.decide(job, waiting)
                await self._settle(tenant, lease, batch.jobs, batch.settlement)
                await self._hand_back(tenant, lease, batches[index + 1 :])
                settled += len(batch.jobs)
                break
            except Exception as error:  # a defect: retried, and shown on the jobs, not hidden
                log.exception("tenant %s: delivering %s failed", tenant.slug, batch.entity)
                reason = f"internal error: {type(error).__name__}: {error}"
                for job in batch.jobs:
                    batch.decide(job, Verdict("retry", reason, "internal_error"))
            await self._settle(tenant, lease, batch.jobs, batch.settlement)
            settled += len(batch.jobs)
        return settled

    async def _hand_back(self, tenant: Tenant, lease: Lease, batches: Sequence[Batch]) -> None:
        for batch in batches:
            await self._settle(tenant, lease, batch.jobs, Settlement())

    async def _settle(
        self, tenant: Tenant, lease: Lease, jobs: Sequence[Job], settlement: Settlement
    ) -> None:
        claimed = [lease.held[job.id] for job in jobs if job.id in lease.held]
        await settle_surely(
            self.db,
            worker_id=self.worker_id,
            jobs=claimed,
            verdicts=settlement.verdicts,
            settings=self.settings,
            hook=store.settlement_hook(tenant.id, settlement),
        )
        lease.release([job.id for job in claimed])


def _chunks(jobs: list[Job], settings: Settings) -> list[list[Job]]:
    """An entity's jobs of one claim are delivered (and committed) together: lookups then cover
    them all in one call, while creates and enrolments go out WORKER_BATCH_SIZE per call."""
    size = settings.worker_claim_size
    return [jobs[start : start + size] for start in range(0, len(jobs), size)]
