"""The same batch sent at once to two API processes (a client's retry, a load balancer) is never
a 5xx: every record of the sample college, sent entity by entity in a shuffled order with each
batch posted to both processes at the same moment, is stored once (one NEW each) and parked
records are released once."""

from __future__ import annotations

import os
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import TEST_SECRET
from tests.e2e.servers import free_port, process, wait_until_healthy
from tests.factories import load_sample_college
from zoho_moodle_sync.db.models import ParkedRecord, RecordOutcome
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.field_mapping import DEFAULT_MAPPING
from zoho_moodle_sync.settings import Settings

pytestmark = pytest.mark.e2e

NO_EMAIL = "5725767141565000044"
"""The sample college's student refused for having no e-mail (its enrolment stays parked)."""


def test_every_batch_sent_twice_at_once_to_two_api_processes_is_stored_once(
    backend: str, db: Database, tmp_path: Path
) -> None:
    if backend != "postgresql":
        pytest.skip("several processes share one database only on PostgreSQL")
    college = load_sample_college()
    batches: list[tuple[str, list[dict[str, Any]]]] = []
    for module, records in college.items():
        spec = DEFAULT_MAPPING.entity_for_module(module)
        assert spec is not None
        batches += [(spec.key, records[i : i + 7]) for i in range(0, len(records), 7)]
    random.Random(13).shuffle(batches)

    with ExitStack() as stack:
        env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
        env |= {
            "DATABASE_URL": db.url,
            "AUTO_MIGRATE": "false",
            "WEBHOOK_SECRET": TEST_SECRET,
            "RUN_WORKER": "false",
            "LOG_LEVEL": "WARNING",
        }
        urls = []
        for n in (1, 2):
            port = free_port()
            log = tmp_path / f"api-{n}.log"
            api = stack.enter_context(
                process(["serve"], env | {"HOST": "127.0.0.1", "PORT": str(port)}, log)
            )
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(api, url, log)
            urls.append(url)

        auth = {"Authorization": f"Bearer {TEST_SECRET}"}
        statuses: list[int] = []
        with ThreadPoolExecutor(2) as pool:
            for entity, records in batches:
                answers = pool.map(
                    lambda url, entity=entity, records=records: httpx.post(  # type: ignore[misc]
                        f"{url}/v1/sync/{entity}", json={"data": records}, headers=auth, timeout=60
                    ),
                    urls,
                )
                statuses += [answer.status_code for answer in answers]

    assert set(statuses) == {200}, Counter(statuses)
    with db.sessions() as session:
        new = Counter(
            zoho_id
            for zoho_id, outcome in session.execute(
                select(RecordOutcome.zoho_id, RecordOutcome.outcome)
            )
            if outcome == "NEW"
        )
        parked = set(session.scalars(select(ParkedRecord.zoho_id)))
    everyone = {record["id"] for records in college.values() for record in records}
    waiting = {
        record["id"]
        for records in college.values()
        for record in records
        if any(isinstance(v, dict) and v.get("id") == NO_EMAIL for v in record.values())
    }
    assert new == dict.fromkeys(everyone - {NO_EMAIL} - waiting, 1)
    assert parked == waiting
