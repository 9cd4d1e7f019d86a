"""Several workers on one queue: each job is claimed by one of them, so every Moodle user is
created exactly once (PostgreSQL skips rows another worker has locked; SQLite has one writer
at a time)."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from tests.factories import StudentRecordFactory
from tests.fakes.moodle import FakeMoodle
from tests.worker.conftest import (
    DELIVERY,
    MoodleSync,
    created_items,
    moodle_settings,
    people,
)
from zoho_moodle_sync.db.jobs import JobKind
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.worker.runner import Worker


def test_two_workers_never_deliver_one_job_twice(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    students = StudentRecordFactory.build_batch(300, program=None)
    moodle_sync.post("students", students)
    # Small claims, so that the two workers take turns on the queue.
    settings = moodle_settings(moodle_sync.settings, worker_claim_size=30, worker_batch_size=15)

    async def two_workers() -> list[int]:
        async with httpx.AsyncClient(transport=fake_moodle.transport()) as http:
            workers = [
                Worker(moodle_sync.db, settings, http=http, worker_id=f"worker-{n}", kinds=DELIVERY)
                for n in (1, 2)
            ]
            return await asyncio.gather(*(worker.drain() for worker in workers))

    settled = asyncio.run(two_workers())

    assert sum(settled) == 300
    assert all(count > 0 for count in settled), settled
    assert created_items(fake_moodle, "core_user_create_users") == 300
    idnumbers = Counter(user.idnumber for user in people(fake_moodle))
    assert idnumbers == Counter(student["id"] for student in students)
    assert moodle_sync.states() == {"done": 300}
    assert all(job.attempts == 0 for job in moodle_sync.jobs())


class LeasesRunOut(httpx.AsyncBaseTransport):
    """The fake's transport; the first core_user_create_users call is so slow that the
    worker's leases run out, and another worker claims the expired jobs meanwhile."""

    def __init__(self, moodle_sync: MoodleSync, fake: FakeMoodle) -> None:
        self.inner = fake.transport()
        self.moodle_sync = moodle_sync
        self.fake = fake
        self.taken_over = 0
        self.calls_when_taken_over = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        function = request.url.params.get("wsfunction")
        if function == "core_user_create_users" and not self.taken_over:
            self.moodle_sync.expire_leases()
            taken = queue.claim(
                self.moodle_sync.db,
                kind=JobKind.DELIVER,
                tenant_id=self.moodle_sync.tenant.id,
                worker_id="second-worker",
                limit=1000,
                lease_seconds=300,
            )
            self.taken_over = len(taken)
            self.calls_when_taken_over = len(self.fake.calls)
        return response


def test_a_worker_whose_leases_ran_out_leaves_the_rest_of_its_claim_alone(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    students = StudentRecordFactory.build_batch(30, program=None)
    moodle_sync.post("students", students)
    settings = moodle_settings(moodle_sync.settings, worker_batch_size=10)
    slow = LeasesRunOut(moodle_sync, fake_moodle)

    moodle_sync.drain(fake_moodle, settings=settings, transport=slow)

    # The first worker finished the call in flight, then touched neither Moodle nor the
    # jobs the second one holds now.
    assert slow.taken_over == 30
    assert len(fake_moodle.calls) == slow.calls_when_taken_over
    assert moodle_sync.states() == {"running": 30}
    assert all(job.claimed_by == "second-worker" for job in moodle_sync.jobs())
    assert moodle_sync.link("students", students[0]["id"]) is None

    # The second worker dies too; a third delivers everything, the first ten included.
    moodle_sync.expire_leases()
    moodle_sync.drain(fake_moodle)

    assert created_items(fake_moodle, "core_user_create_users") == 30
    assert Counter(u.idnumber for u in people(fake_moodle)) == Counter(s["id"] for s in students)
    assert moodle_sync.states() == {"done": 30}
