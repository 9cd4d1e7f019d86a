"""The worker: one loop that runs every kind of background work from the queue. Each round it
makes sure the periodic jobs are queued, completes accepted webhooks (which store records and
queue their delivery), runs due upkeep, delivers to Moodle, and runs the due catch-up from Zoho
and drift check of Moodle (upkeep and reconciliation are looked for at most once per poll
interval). Any number of workers may run against PostgreSQL; SQLite gets one, inside `serve`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager, suppress

import httpx

from zoho_moodle_sync.db.jobs import JobKind
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.worker import completion, reconciling, upkeep
from zoho_moodle_sync.worker.deliveries import Deliveries

log = logging.getLogger(__name__)

SCHEDULE_SECONDS = 30.0
"""How often a worker makes sure the periodic jobs are queued."""


class Worker:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        zoho_http: httpx.AsyncClient | None = None,
        worker_id: str | None = None,
        kinds: Collection[JobKind] | None = None,
    ) -> None:
        """`http` calls Moodle and `zoho_http` the Zoho API (each its own client by default);
        `kinds` limits the worker to some kinds of job (all by default)."""
        self.db = db
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.kinds = frozenset(kinds) if kinds is not None else frozenset(JobKind)
        self._http = http
        self._zoho_http = zoho_http
        self._stopping = asyncio.Event()
        self._scheduling = _AtMostEvery(SCHEDULE_SECONDS)
        # Upkeep and reconciliation jobs are due minutes apart, and a worker busy with a burst
        # of webhooks or deliveries runs rounds back to back, each of which would otherwise
        # look for every kind of them again.
        self._periodic = _AtMostEvery(settings.worker_poll_seconds)
        self._deliveries = Deliveries(
            db, settings, worker_id=self.worker_id, stopping=self._stopping
        )

    def stop(self) -> None:
        """Finish the batch in flight, hand back the rest, and return from `run`."""
        self._stopping.set()

    async def run(self) -> None:
        log.info("worker %s started", self.worker_id)
        idle = _IdleWait(self.settings.worker_poll_seconds)
        async with self._clients() as (http, zoho_http):
            while not self._stopping.is_set():
                try:
                    done = await self._run_once(http, zoho_http)
                except Exception:  # keep working on other jobs after a defect; it is logged
                    log.exception("worker %s: unexpected error", self.worker_id)
                    done = 0
                wait = idle.after(done)
                if wait:
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), timeout=wait)
        log.info("worker %s stopped", self.worker_id)

    async def drain(self, *, max_rounds: int = 100) -> int:
        """Run until nothing is due (or `max_rounds`); for tests, backfills and benchmarks.
        Nothing waits for a lull in arrivals: what is due is delivered."""
        total = 0
        async with self._clients() as (http, zoho_http):
            for _ in range(max_rounds):
                settled = await self._run_once(http, zoho_http, draining=True)
                total += settled
                if not settled:
                    break
        return total

    @asynccontextmanager
    async def _clients(self) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
        timeout = self.settings.moodle_timeout_seconds
        async with (
            httpx.AsyncClient(timeout=timeout) as own_moodle,
            httpx.AsyncClient(timeout=30) as own_zoho,
        ):
            yield self._http or own_moodle, self._zoho_http or own_zoho

    async def _run_once(
        self, http: httpx.AsyncClient, zoho_http: httpx.AsyncClient, *, draining: bool = False
    ) -> int:
        """One round; `draining` (`drain`): nothing waits, neither for a lull in arrivals nor
        for the next look at periodic jobs."""
        await self._schedule()
        settled = 0
        if JobKind.WEBHOOK in self.kinds and not self._stopping.is_set():
            settled += await completion.complete_due(
                self.db, self.settings, worker_id=self.worker_id, http=zoho_http
            )
        periodic = draining or self._periodic.due()
        if periodic and self.kinds & set(upkeep.UPKEEP_KINDS) and not self._stopping.is_set():
            settled += await upkeep.run_due(
                self.db, self.settings, worker_id=self.worker_id, kinds=self.kinds
            )
        if JobKind.DELIVER in self.kinds and not self._stopping.is_set():
            settled += await self._deliveries.run_due(http, coalesce=not draining)
        if (
            periodic
            and self.kinds & set(reconciling.RECONCILE_KINDS)
            and not self._stopping.is_set()
        ):
            settled += await reconciling.run_due(
                self.db,
                self.settings,
                worker_id=self.worker_id,
                kinds=self.kinds,
                zoho_http=zoho_http,
                moodle_http=http,
            )
        return settled

    async def _schedule(self) -> None:
        """Queue the periodic jobs, now and then (each is queued once, whoever does it)."""
        if not self.kinds & {*upkeep.UPKEEP_KINDS, *reconciling.RECONCILE_KINDS}:
            return
        if not self._scheduling.due():
            return
        await asyncio.to_thread(upkeep.schedule, self.db, self.settings, self.kinds)
        await asyncio.to_thread(reconciling.schedule, self.db, self.settings, self.kinds)


class _AtMostEvery:
    """Says yes at most once per `seconds` (the first time, and then once that long has passed
    since the last yes)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: float | None = None

    def due(self) -> bool:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.seconds:
            return False
        self._last = now
        return True


class _IdleWait:
    """How long to wait before the next round: none after a round that settled something;
    after an empty round, a quarter of the poll interval while work was recent (for a poll
    interval's worth of empty rounds), so that the tail of a burst is done within a fraction
    of the interval; then the whole poll interval."""

    BUSY_SHARE = 4

    def __init__(self, poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self._empty_rounds = self.BUSY_SHARE  # an idle start: the whole interval

    def after(self, settled: int) -> float:
        if settled:
            self._empty_rounds = 0
            return 0.0
        self._empty_rounds += 1
        if self._empty_rounds <= self.BUSY_SHARE:
            return self.poll_seconds / self.BUSY_SHARE
        return self.poll_seconds
