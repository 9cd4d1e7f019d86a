"""A worker's hold on the jobs it claimed: a heartbeat renews their lease while the work goes on
(so a lease can be short, and a crashed worker's jobs are taken over soon after), and what the
work decided is settled surely: a database that goes away for a moment (a restart, a failover)
is waited for, so what Moodle already did is recorded rather than lost or done again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import suppress
from types import TracebackType

from sqlalchemy.exc import InterfaceError, OperationalError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.jobs.queue import Claimed, SettleHook, Verdict
from zoho_moodle_sync.settings import Settings

log = logging.getLogger(__name__)

DATABASE_GONE = (OperationalError, InterfaceError)
"""What a lost connection raises: the database restarting, or unreachable for a moment."""


class Lease:
    """`async with Lease(...) as lease:` renews the jobs' lease every third of it until the block
    ends; `lease.lost` holds the ids another worker took over meanwhile (this worker was too
    slow, or the database was away for longer than the lease)."""

    def __init__(
        self, db: Database, *, worker_id: str, jobs: Sequence[Claimed], lease_seconds: float
    ) -> None:
        self.db = db
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.held = {job.id: job for job in jobs}
        self.lost: set[int] = set()
        self._beating: asyncio.Task[None] | None = None
        self._renewing = asyncio.Lock()

    async def __aenter__(self) -> Lease:
        self._beating = asyncio.create_task(self._beat())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._beating is not None:
            self._beating.cancel()
            with suppress(asyncio.CancelledError):
                await self._beating

    async def check(self, job_ids: Sequence[int]) -> set[int]:
        """Renew the lease on these jobs now; the ones another worker holds (now or before).
        A database that cannot answer right now tells nothing new: the heartbeat goes on."""
        jobs = [self.held[job_id] for job_id in job_ids if job_id in self.held]
        try:
            await self._renew(jobs)
        except DATABASE_GONE as error:
            log.warning("could not check the lease of %d job(s): %s", len(jobs), error)
        return self.lost & set(job_ids)

    async def _renew(self, jobs: Sequence[Claimed]) -> None:
        async with self._renewing:  # one renewal at a time (calls made at once check too)
            kept = await asyncio.to_thread(
                lambda: queue.renew(
                    self.db, worker_id=self.worker_id, jobs=jobs, lease_seconds=self.lease_seconds
                )
            )
        self.lost |= {job.id for job in jobs} - {job.id for job in kept}

    def release(self, job_ids: Sequence[int]) -> None:
        """Jobs settled: no longer this lease's to renew."""
        for job_id in job_ids:
            self.held.pop(job_id, None)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            jobs = [job for job_id, job in self.held.items() if job_id not in self.lost]
            if not jobs:
                continue
            try:
                await self._renew(jobs)
            except DATABASE_GONE as error:
                log.warning("could not renew the lease of %d job(s): %s", len(jobs), error)


async def settle_surely(
    db: Database,
    *,
    worker_id: str,
    jobs: Sequence[Claimed],
    verdicts: dict[int, Verdict],
    settings: Settings,
    hook: SettleHook | None = None,
) -> bool:
    """Settle, waiting out a database that went away (up to the lease's length, after which
    another worker may hold the jobs). False when it could not: the jobs then go back to the
    queue when their lease runs out, and whoever takes them finds in Moodle what this worker
    did (everything is looked up by idnumber before it is created)."""
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(DATABASE_GONE),
        stop=stop_after_delay(settings.worker_lease_seconds),
        wait=wait_exponential(multiplier=0.5, max=5),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                await asyncio.to_thread(
                    lambda: queue.settle(
                        db,
                        worker_id=worker_id,
                        jobs=jobs,
                        verdicts=verdicts,
                        settings=settings,
                        hook=hook,
                    )
                )
    except DATABASE_GONE as error:
        log.error("could not record the outcome of %d job(s): %s", len(jobs), error)
        return False
    return True
