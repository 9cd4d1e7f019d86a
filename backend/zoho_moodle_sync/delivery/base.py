"""What every kind of delivery shares: a batch of one entity's claimed jobs and the verdicts on
them, batched Moodle calls that stay within max_input_vars, the split of an all-or-nothing call
Moodle refused, lease renewal between calls, the mass-change guard, and the enrolment calls that
courses (their teacher) and enrolments both make.

Every step is idempotent against Moodle (existing objects are found by idnumber before anything
is created, enrolling twice is harmless), so a batch that is delivered again after a crash
neither duplicates nor loses a change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.delivery import store
from zoho_moodle_sync.delivery.store import CallRecord, Job, Link, LinkWrite, Settlement
from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.errors import MoodleAccessDenied, MoodleRejected, MoodleUnavailable
from zoho_moodle_sync.fingerprint import fingerprint
from zoho_moodle_sync.jobs.lease import Lease
from zoho_moodle_sync.jobs.queue import Verdict
from zoho_moodle_sync.moodle import (
    Enrolment,
    MoodleClient,
    Unenrolment,
    encode_moodle_params,
)
from zoho_moodle_sync.projection import DeliveryPolicy
from zoho_moodle_sync.settings import Settings

log = logging.getLogger(__name__)

Removal = tuple[Job, int, int, int, int | None, int | None]
"""An enrolment the service made, for the removal policy: job, user, course, role, and its
start and end times when it has them."""
_T = TypeVar("_T")
_P = TypeVar("_P")


def shape_fingerprint(shape: Any) -> str:
    """What was last sent to Moodle for a record, so an unchanged record costs no call."""
    return fingerprint(shape)


class TenantPaused(Exception):
    """Moodle refused the token or a capability: stop the tenant's delivery."""

    def __init__(self, error: MoodleAccessDenied) -> None:
        super().__init__(str(error))
        self.error = error


class MoodleDown(Exception):
    """Moodle could not be reached (network, timeout, 5xx): the jobs the batch did not decide
    wait for it, and the tenant's circuit breaker opens."""

    def __init__(self, error: MoodleUnavailable) -> None:
        super().__init__(str(error))
        self.error = error


class LeaseLost(Exception):
    """Another worker holds some of the batch's jobs now (this one was too slow): stop before
    the next call, so that Moodle gets each change from one worker only."""


@dataclass
class Batch:
    """The jobs of one entity delivered together, and what was decided about them. `entity`
    names the delivery that takes the batch: a user batch holds students and teachers alike,
    each job keeping its own entity."""

    entity: str
    jobs: list[Job]
    settlement: Settlement

    def decide(self, job: Job, verdict: Verdict) -> None:
        self.settlement.verdicts.setdefault(job.id, verdict)

    def decided(self, job: Job) -> bool:
        return job.id in self.settlement.verdicts

    def link(self, write: LinkWrite) -> None:
        self.settlement.links.append(write)


class Delivery(ABC):
    """Delivers one tenant's claimed jobs of one Moodle kind; `_deliver` is the kind's own part."""

    def __init__(
        self,
        *,
        db: Database,
        tenant_id: int,
        policy: DeliveryPolicy,
        client: MoodleClient,
        settings: Settings,
        lease: Lease | None = None,
        in_flight: asyncio.Semaphore | None = None,
    ) -> None:
        """`in_flight` bounds the Moodle calls made at once for the tenant (shared by the
        deliveries of one claim; MOODLE_CONCURRENCY by default)."""
        self.db = db
        self.tenant_id = tenant_id
        self.policy = policy
        self.client = client
        self.settings = settings
        self.lease = lease
        self.in_flight = in_flight or asyncio.Semaphore(settings.moodle_concurrency)

    # ---- database reads, off the event loop -------------------------------------------------

    async def _records(self, entity: str, ids: Sequence[str]) -> dict[str, store.StoredRecord]:
        def read() -> dict[str, store.StoredRecord]:
            with self.db.sessions() as session:
                return store.load_records(
                    session, tenant_id=self.tenant_id, entity=entity, zoho_ids=ids
                )

        return await asyncio.to_thread(read)

    async def _links(self, entity: str, ids: Sequence[str]) -> dict[str, Link]:
        def read() -> dict[str, Link]:
            with self.db.sessions() as session:
                return store.load_links(
                    session, tenant_id=self.tenant_id, entity=entity, zoho_ids=ids
                )

        return await asyncio.to_thread(read) if ids else {}

    async def _guard_allows(self, entity: str, removals: int) -> bool:
        """The mass-change guard: may this many removals of `entity` go ahead unconfirmed?

        The wave is judged against the tenant's whole population of `entity` as Zoho has it
        (its stored records, those deleted within the window included), not against what has
        reached Moodle so far: ordinary withdrawals pass while delivery still lags. Removals
        made within the policy's window count too, so a mass removal arriving one record at a
        time (one webhook each) is held as surely as one arriving in a batch."""
        since = utcnow() - timedelta(minutes=self.policy.mass_change_window_minutes)

        def read() -> tuple[int, int]:
            with self.db.sessions() as session:
                return (
                    store.population(session, tenant_id=self.tenant_id, entity=entity, since=since),
                    store.removed_links(
                        session, tenant_id=self.tenant_id, entity=entity, since=since
                    ),
                )

        population, recent = await asyncio.to_thread(read)
        limit = max(self.policy.mass_change_min, int(population * self.policy.mass_change_share))
        return removals + recent <= limit

    # ---- calls ------------------------------------------------------------------------------

    async def _call(
        self, batch: Batch, function: str, jobs: Sequence[Job], send: Callable[[], Awaitable[_T]]
    ) -> _T:
        """Make one Moodle call for `jobs`, log it, and turn access refusals into a pause."""
        async with self.in_flight:
            return await self._call_now(batch, function, jobs, send)

    async def _call_now(
        self, batch: Batch, function: str, jobs: Sequence[Job], send: Callable[[], Awaitable[_T]]
    ) -> _T:
        started = time.monotonic()
        try:
            result = await send()
        except MoodleRejected as error:
            self._log_call(batch, function, jobs, started, error.errorcode, error.message)
            if isinstance(error, MoodleAccessDenied):
                raise TenantPaused(error) from None
            raise
        except MoodleUnavailable as error:
            self._log_call(batch, function, jobs, started, "unavailable", str(error))
            raise
        self._log_call(batch, function, jobs, started, None, None)
        return result

    def _log_call(
        self,
        batch: Batch,
        function: str,
        jobs: Sequence[Job],
        started: float,
        errorcode: str | None,
        message: str | None,
    ) -> None:
        batch.settlement.calls.append(
            CallRecord(
                function=function,
                items=len(jobs),
                job_ids=[job.id for job in jobs],
                ok=errorcode is None,
                errorcode=errorcode,
                message=message,
                duration_ms=int((time.monotonic() - started) * 1000),
            )
        )

    async def _each_or_split(
        self,
        batch: Batch,
        function: str,
        items: Sequence[tuple[Job, _P]],
        send: Callable[[list[_P]], Awaitable[list[Any]]],
    ) -> list[tuple[Job, Any]]:
        """Send `items` in calls of at most the batch size that stay within max_input_vars, up
        to MOODLE_CONCURRENCY of them at once (they are independent: items of one function); a
        call Moodle refuses as a whole is split in halves until the refused items are alone, so
        good items still go through. Moodle being unreachable stops the calls not yet made."""
        chunks = self._calls_of(items)
        if len(chunks) <= 1:
            return await self._split(batch, function, chunks[0], send) if chunks else []

        async def one(index: int, chunk: list[tuple[Job, _P]]) -> list[tuple[Job, Any]]:
            if index:
                await self._keep_lease(batch)
            return await self._split(batch, function, chunk, send)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(i, chunk)) for i, chunk in enumerate(chunks)]
        except BaseExceptionGroup as failed:
            raise _weightiest(failed) from None
        return [result for task in tasks for result in task.result()]

    async def _keep_lease(self, batch: Batch) -> None:
        """Between the calls of a long batch: make sure no other worker took some of its jobs
        over meanwhile, or stop before the next call, so that Moodle gets each change from one
        worker only (the lease's heartbeat keeps the jobs while a call takes long)."""
        if self.lease is None:
            return
        lost = await self.lease.check([job.id for job in batch.jobs])
        if lost:
            raise LeaseLost(f"{len(lost)} job(s) of the batch were taken over")

    def _calls_of(self, items: Sequence[tuple[Job, _P]]) -> list[list[tuple[Job, _P]]]:
        """`items` cut into calls of at most the batch size whose form fields fit in
        max_input_vars: PHP silently drops the variables past it."""
        calls: list[list[tuple[Job, _P]]] = []
        fields = 0
        for item in items:
            size = len(encode_moodle_params({"item": item[1]}))
            if not calls or (
                len(calls[-1]) == self.settings.worker_batch_size
                or fields + size > self.settings.moodle_max_input_vars
            ):
                calls.append([])
                fields = 0
            calls[-1].append(item)
            fields += size
        return calls

    async def _split(
        self,
        batch: Batch,
        function: str,
        items: list[tuple[Job, _P]],
        send: Callable[[list[_P]], Awaitable[list[Any]]],
    ) -> list[tuple[Job, Any]]:
        """Each item's answer, or the MoodleRejected that refused it alone."""
        if not items:
            return []
        jobs = [job for job, _ in items]
        try:
            answers = await self._call(batch, function, jobs, lambda: send([p for _, p in items]))
        except MoodleRejected as error:
            if len(items) == 1:
                return [(items[0][0], error)]
            middle = len(items) // 2
            return await self._split(batch, function, items[:middle], send) + await self._split(
                batch, function, items[middle:], send
            )
        return list(zip(jobs, answers, strict=True))

    @staticmethod
    def target(entity: str, lookup: str) -> str:
        """The entity a lookup field of `entity` points to."""
        target = ENTITY_BY_KEY[entity].field_by_name[lookup].lookup
        assert target is not None, f"{entity}.{lookup} is not a lookup"
        return target

    # ---- the run ----------------------------------------------------------------------------

    async def deliver(self, batch: Batch) -> None:
        """Decide every job of the batch; Moodle being unreachable stops it (`MoodleDown`)."""
        try:
            await self._deliver(batch)
        except MoodleUnavailable as error:
            raise MoodleDown(error) from None
        for job in batch.jobs:
            batch.decide(job, Verdict("done"))

    @abstractmethod
    async def _deliver(self, batch: Batch) -> None:
        """The kind's own part: decide what it can; jobs left undecided are done."""

    # ---- enrolment calls, shared by courses (their teacher) and enrolments --------------

    async def _enrol(self, enrolments: list[Enrolment]) -> list[None]:
        await self.client.enrol_users(enrolments)
        return [None] * len(enrolments)

    async def _remove_enrolments(self, batch: Batch, removals: Sequence[Removal]) -> dict[Job, str]:
        """Apply the removal policy to enrolments the service made; returns the new link state
        per job that succeeded. A suspended enrolment keeps its dates: Moodle resets the ones
        a re-enrolment leaves out."""
        policy = self.policy.removal_policy
        if policy == "keep" or not removals:
            return {job: "active" for job, *_ in removals}
        results: dict[Job, str] = {}
        if policy == "suspend":
            items = [
                (
                    job,
                    Enrolment(
                        roleid=role,
                        userid=user,
                        courseid=course,
                        timestart=start,
                        timeend=end,
                        suspend=True,
                    ),
                )
                for job, user, course, role, start, end in removals
            ]
            answers = await self._each_or_split(
                batch, "enrol_manual_enrol_users", items, self._enrol
            )
            state = "suspended"
        else:
            unenrol_items = [
                (job, Unenrolment(userid=user, courseid=course))
                for job, user, course, *_ in removals
            ]
            answers = await self._each_or_split(
                batch, "enrol_manual_unenrol_users", unenrol_items, self._unenrol
            )
            state = "removed"
        for job, answer in answers:
            if isinstance(answer, MoodleRejected):
                batch.decide(job, refused(answer, f"applying the removal policy ({policy})"))
            else:
                results[job] = state
        return results

    async def _unenrol(self, unenrolments: list[Unenrolment]) -> list[None]:
        await self.client.unenrol_users(unenrolments)
        return [None] * len(unenrolments)


FAILURE_WEIGHT = (TenantPaused, MoodleUnavailable, LeaseLost)
"""Of the failures of calls made at once, the one that decides what becomes of the batch: a
refused access pauses the tenant, an outage holds the jobs back, a lost lease hands them back."""


def _weightiest(failed: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves = list(_leaves(failed))
    for kind in FAILURE_WEIGHT:
        for error in leaves:
            if isinstance(error, kind):
                return error
    return leaves[0]


def _leaves(failed: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for error in failed.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error)
        else:
            yield error


def removal(job: Job, made: dict[str, Any]) -> Removal:
    """The enrolment a job's record made (as its link holds it), for the removal policy."""
    return (
        job,
        made["userid"],
        made["courseid"],
        made["roleid"],
        made.get("timestart"),
        made.get("timeend"),
    )


def held_message(count: int, entity: str) -> str:
    return (
        f"held by the mass-change guard: {count} {entity} would be suspended or removed at once; "
        "confirm with `zoho-moodle-sync jobs confirm-held` if this is intended"
    )


def refused(error: MoodleRejected, doing: str) -> Verdict:
    """A Moodle refusal of one item, in plain words; it will not pass by retrying."""
    message = error.message
    if error.errorcode == "invalidparameter":
        message += (
            " (Moodle does not say which value; check the e-mail address, the username's "
            "characters, and that names are not empty)"
        )
    if error.debuginfo:
        message += f" [{error.debuginfo}]"
    return Verdict("dead", f"{doing}: Moodle refused: {message}", error.errorcode)
