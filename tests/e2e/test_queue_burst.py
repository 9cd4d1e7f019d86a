"""One queue for all background work, across processes: two API processes and two workers on
PostgreSQL take a burst of 500 id-only webhooks. The API processes only answer (202); the
workers complete every event exactly once, and ask Zoho for each record exactly once.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import TEST_SECRET
from tests.e2e.servers import free_port, process, wait_until_healthy
from tests.factories import STUDENTS, StudentRecordFactory
from tests.fakes.zoho import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
    FakeZoho,
)
from tests.security.conftest import serving
from zoho_moodle_sync.db.jobs import Job
from zoho_moodle_sync.db.models import InboundEvent, RecordOutcome
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings

pytestmark = pytest.mark.e2e

WEBHOOKS = 500
SETTLE_SECONDS = 120


def completed(db: Database) -> int:
    with db.sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(InboundEvent)
                .where(InboundEvent.status.in_(("processed", "failed")))
            )
            or 0
        )


def test_two_api_processes_and_two_workers_complete_each_webhook_once(
    backend: str, db: Database, tmp_path: Path
) -> None:
    if backend != "postgresql":
        pytest.skip("several processes share one database only on PostgreSQL")
    students = StudentRecordFactory.build_batch(WEBHOOKS, Program=None)
    fake = FakeZoho()
    fake.seed({STUDENTS: students})

    with serving(fake) as zoho_url, ExitStack() as stack:
        env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
        env |= {
            "DATABASE_URL": db.url,
            "AUTO_MIGRATE": "false",
            "WEBHOOK_SECRET": TEST_SECRET,
            "ZOHO_CLIENT_ID": DEFAULT_CLIENT_ID,
            "ZOHO_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
            "ZOHO_REFRESH_TOKEN": DEFAULT_REFRESH_TOKEN,
            "ZOHO_ACCOUNTS_URL": zoho_url,
            "WORKER_POLL_SECONDS": "0.2",
            "LOG_LEVEL": "WARNING",
        }
        apis = []
        for n in (1, 2):
            port = free_port()
            api_env = env | {"HOST": "127.0.0.1", "PORT": str(port), "RUN_WORKER": "false"}
            api = stack.enter_context(process(["serve"], api_env, tmp_path / f"api-{n}.log"))
            apis.append((api, f"http://127.0.0.1:{port}"))
        for api, url in apis:
            wait_until_healthy(api, url, tmp_path / "api-1.log")
        for n in (1, 2):
            stack.enter_context(process(["worker"], env, tmp_path / f"worker-{n}.log"))

        def send(index: int) -> httpx.Response:
            _, url = apis[index % 2]
            body = {"module": STUDENTS, "zoho_id": students[index]["id"]}
            return httpx.post(
                f"{url}/v1/webhooks/zoho",
                json=body,
                headers={"Authorization": f"Bearer {TEST_SECRET}"},
                timeout=60,
            )

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(send, range(WEBHOOKS)))
        assert [a.status_code for a in answers] == [202] * WEBHOOKS, answers[0].text

        deadline = time.monotonic() + SETTLE_SECONDS
        while completed(db) < WEBHOOKS and time.monotonic() < deadline:
            time.sleep(0.2)
        fetched = Counter(
            record_id
            for call in fake.api_calls
            if call.path.endswith(f"/{STUDENTS}") and call.status == 200
            for record_id in call.query.get("ids", "").split(",")
            if record_id
        )

    with db.sessions() as session:
        statuses = Counter(session.scalars(select(InboundEvent.status)))
        outcomes = Counter(
            (zoho_id, outcome)
            for zoho_id, outcome in session.execute(
                select(RecordOutcome.zoho_id, RecordOutcome.outcome)
            )
        )
        jobs = Counter(
            (kind, state, attempts)
            for kind, state, attempts in session.execute(
                select(Job.kind, Job.state, Job.attempts).where(Job.kind == "webhook")
            )
        )
    assert statuses == {"processed": WEBHOOKS}, [
        (path.name, path.read_text()[-2000:]) for path in tmp_path.glob("*.log")
    ]
    assert outcomes == {(s["id"], "NEW"): 1 for s in students}
    assert jobs == {("webhook", "done", 0): WEBHOOKS}
    assert fetched == {s["id"]: 1 for s in students}
