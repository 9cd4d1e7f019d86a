"""Idempotency: an `Idempotency-Key` replays the first answer; webhooks without a key are
recognised by their body; a burst of identical requests at the same moment is processed once.

Bursts go through a real uvicorn server with twenty callers at once, on SQLite and PostgreSQL.
Expiry is reached by moving `expires_at` in the database, never by sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from tests.conftest import AUTH, sync, tenant_with_secret
from tests.factories import (
    ENROLLMENTS,
    EnrollmentRecordFactory,
    Record,
    StudentRecordFactory,
    TeacherRecordFactory,
    zoho_datetime,
)
from tests.fakes.zoho import FakeZoho
from tests.security.conftest import (
    OTHER_TENANT,
    enrollment_of,
    event,
    events,
    expire_every_key,
    record_view,
    serving,
    store_prerequisites,
)
from zoho_moodle_sync import tenants
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import Job
from zoho_moodle_sync.db.models import InboundEvent, ParkedRecord, ParkedWait, RecordOutcome
from zoho_moodle_sync.db.security import IdempotentRequest
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.ingress import idempotency, pipeline
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import TenantContext

BURST = 20
REPLAYED = "Idempotent-Replayed"


def outcomes(db: Database) -> list[tuple[str, str, str]]:
    """Every stored outcome: (entity, zoho_id, outcome), oldest first."""
    with db.sessions() as session:
        rows = session.execute(
            select(RecordOutcome.entity, RecordOutcome.zoho_id, RecordOutcome.outcome).order_by(
                RecordOutcome.id
            )
        )
        return [(e, z, o) for e, z, o in rows]


def later_version(record: Record, **changes: Any) -> Record:
    """The record as Zoho holds it after an edit: changed fields, a later Modified_Time."""
    modified = zoho_datetime(utcnow())
    return {**record, **changes, "Modified_Time": modified}


# ---------------------------------------------------------------------------------------------
# Idempotency-Key on /v1/sync
# ---------------------------------------------------------------------------------------------


def test_a_repeated_idempotency_key_gets_the_first_answer_and_nothing_is_processed_again(
    client: TestClient, db: Database
) -> None:
    teacher = TeacherRecordFactory(Name="Sarah O'Neill")
    key = {"Idempotency-Key": "nightly-import-2025-05-10"}
    first = client.post("/v1/sync/teachers", json={"data": [teacher]}, headers=key)
    sync(client, "teachers", [later_version(teacher, Name="Sarah O'Neill-Brady")])
    history_before = outcomes(db)

    again = client.post("/v1/sync/teachers", json={"data": [teacher]}, headers=key)

    assert first.status_code == again.status_code == 200
    assert REPLAYED not in first.headers
    assert again.headers[REPLAYED] == "true"
    assert again.content == first.content
    assert outcomes(db) == history_before
    view = record_view(client, "teachers", teacher["id"])
    assert view["stored"]["data"]["name"] == "Sarah O'Neill-Brady"
    replay_event = events(db)[-1]
    assert (replay_event.status, replay_event.body) == ("duplicate", first.request.content)


def test_the_same_key_with_another_body_is_a_422_and_is_not_processed(
    client: TestClient, db: Database
) -> None:
    teacher, other = TeacherRecordFactory(), TeacherRecordFactory()
    key = {"Idempotency-Key": "k-1"}
    client.post("/v1/sync/teachers", json={"data": [teacher]}, headers=key)

    reused = client.post("/v1/sync/teachers", json={"data": [other]}, headers=key)
    other_route = client.post("/v1/sync/students", json={"data": [teacher]}, headers=key)

    for response in (reused, other_route):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["details"] == [
            {"field": "Idempotency-Key", "message": "reused with another body"}
        ]
        assert event(db, error["event_id"]).status == "rejected"
    assert client.get(f"/v1/records/teachers/{other['id']}").status_code == 404


def test_a_repeat_while_the_first_is_still_running_is_a_409(
    client: TestClient, db: Database
) -> None:
    teacher = TeacherRecordFactory()
    body = httpx.Request("POST", "http://x", json={"data": [teacher]}).content
    with db.sessions() as session:
        default = tenants.get_by_slug(session, "default")
        assert default is not None
    claim = idempotency.begin(
        db,
        tenant_id=default.id,
        key="in-flight",
        fingerprint=idempotency.request_digest("POST", "/v1/sync/teachers", body),
        ttl_seconds=60,
    )
    assert isinstance(claim, int)

    response = client.post(
        "/v1/sync/teachers",
        content=body,
        headers={"Idempotency-Key": "in-flight", "Content-Type": "application/json"},
    )

    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "conflict"
    assert client.get(f"/v1/records/teachers/{teacher['id']}").status_code == 404


def test_after_its_ttl_a_key_is_new_again(settings: Settings, db: Database) -> None:
    app = create_app(settings.model_copy(update={"idempotency_ttl_seconds": 3600}), db)
    teacher = TeacherRecordFactory()
    key = {"Idempotency-Key": "weekly"}

    with TestClient(app, raise_server_exceptions=False, headers=AUTH) as client:
        client.post("/v1/sync/teachers", json={"data": [teacher]}, headers=key)
        with db.sessions() as session:
            row = session.scalars(select(IdempotentRequest)).one()
            assert timedelta(minutes=59) < row.expires_at - row.created_at <= timedelta(hours=1)
        expire_every_key(db)
        changed = later_version(teacher, Name="Renamed After Expiry")
        after_expiry = client.post("/v1/sync/teachers", json={"data": [changed]}, headers=key)
        expire_every_key(db)
        same_again = client.post("/v1/sync/teachers", json={"data": [changed]}, headers=key)

    assert after_expiry.status_code == 200
    assert REPLAYED not in after_expiry.headers
    assert after_expiry.json()["results"][0]["outcome"] == "UPDATED"
    assert REPLAYED not in same_again.headers
    assert same_again.json()["results"][0]["outcome"] == "UNCHANGED"
    assert [o for _, _, o in outcomes(db)] == ["NEW", "UPDATED"]


def test_an_idempotency_key_over_255_characters_is_a_422(client: TestClient) -> None:
    response = client.post(
        "/v1/sync/teachers", json={"data": []}, headers={"Idempotency-Key": "k" * 256}
    )

    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "Idempotency-Key"


# ---------------------------------------------------------------------------------------------
# Webhooks: with a key, and by their body without one
# ---------------------------------------------------------------------------------------------


def merge_fields(student: Record) -> dict[str, Any]:
    """A merge-field webhook body of a student (no Zoho credentials needed)."""
    return {
        "module": "BTEC_Students",
        "zoho_id": student["id"],
        "Name": student["Name"],
        "First_Name": student["First_Name"],
        "Last_Name": student["Last_Name"],
        "Academic_Email": student["Academic_Email"],
        "Modified_Time": student["Modified_Time"],
    }


def test_a_webhook_idempotency_key_replays_the_first_answer_and_refuses_another_body(
    client: TestClient, db: Database
) -> None:
    student = StudentRecordFactory(Program=None)
    key = {"Idempotency-Key": "zoho-rule-17-run-4"}

    first = client.post("/v1/webhooks/zoho", json=merge_fields(student), headers=key)
    again = client.post("/v1/webhooks/zoho", json=merge_fields(student), headers=key)
    other = client.post(
        "/v1/webhooks/zoho", json=merge_fields(StudentRecordFactory(Program=None)), headers=key
    )

    assert first.status_code == again.status_code == 202
    assert again.headers[REPLAYED] == "true"
    assert again.content == first.content
    assert other.status_code == 422
    assert [e.status for e in events(db)] == ["processed", "duplicate", "rejected"]
    assert outcomes(db) == [("students", student["id"], "NEW")]


def test_a_webhook_key_remembers_the_answer_given_and_once_expired_is_new_again(
    client: TestClient, db: Database
) -> None:
    student = StudentRecordFactory(Program=None)
    key = {"Idempotency-Key": "zoho-rule-17-run-5"}

    first = client.post("/v1/webhooks/zoho", json=merge_fields(student), headers=key)
    with db.sessions() as session:
        remembered = session.scalars(select(IdempotentRequest)).one()
        assert (remembered.status_code, remembered.body) == (202, first.content)
    expire_every_key(db)
    edited = later_version(student, First_Name="Renamed")
    after_expiry = client.post("/v1/webhooks/zoho", json=merge_fields(edited), headers=key)

    assert first.json()["status"] == after_expiry.json()["status"] == "accepted"
    assert REPLAYED not in after_expiry.headers
    assert after_expiry.json()["event_id"] > first.json()["event_id"]
    assert [e.status for e in events(db)] == ["processed", "processed"]
    assert [o for _, _, o in outcomes(db)] == ["NEW", "UPDATED"]


def test_a_webhook_idempotency_key_over_255_characters_is_a_422_and_the_webhook_is_kept(
    client: TestClient, db: Database
) -> None:
    student = StudentRecordFactory(Program=None)

    response = client.post(
        "/v1/webhooks/zoho", json=merge_fields(student), headers={"Idempotency-Key": "k" * 256}
    )

    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "Idempotency-Key"
    assert [(e.status, e.http_status) for e in events(db)] == [("rejected", 422)]
    assert outcomes(db) == []


def test_the_same_webhook_body_without_a_key_is_processed_once_per_tenant(
    client: TestClient, db: Database
) -> None:
    beta = tenant_with_secret(db, OTHER_TENANT)
    student = StudentRecordFactory(Program=None)

    first = client.post("/v1/webhooks/zoho", json=merge_fields(student))
    again = client.post("/v1/webhooks/zoho", json=merge_fields(student))
    by_beta = client.post("/v1/webhooks/zoho", json=merge_fields(student), headers=beta)
    as_form = client.post("/v1/webhooks/zoho", data=merge_fields(student))

    assert [r.status_code for r in (first, again, by_beta, as_form)] == [202] * 4
    assert again.json()["event_id"] == first.json()["event_id"]
    assert again.headers[REPLAYED] == "true"
    assert REPLAYED not in by_beta.headers
    assert by_beta.json()["event_id"] != first.json()["event_id"]
    assert [e.status for e in events(db)] == ["processed", "duplicate", "processed", "processed"]
    assert [o for _, _, o in outcomes(db)] == ["NEW", "NEW"]


def test_a_refused_webhook_body_sent_again_is_refused_again_without_new_work(
    client: TestClient, db: Database
) -> None:
    body = {"module": "BTEC_Students", "zoho_id": "${!BTEC_Students.Id}"}

    first = client.post("/v1/webhooks/zoho", json=body)
    again = client.post("/v1/webhooks/zoho", json=body)

    assert first.status_code == again.status_code == 422
    assert again.json()["error"]["message"] == first.json()["error"]["message"]
    assert [e.status for e in events(db)] == ["rejected", "rejected"]


def test_a_delete_webhook_is_not_a_repeat_of_the_upsert_webhook_with_the_same_body(
    client: TestClient,
) -> None:
    """Zoho workflow rules for create/edit and for delete may share a body and differ only in
    their URL (`?operation=delete`)."""
    student = StudentRecordFactory(Program=None)
    body = merge_fields(student)

    upserted = client.post("/v1/webhooks/zoho", json=body)
    deleted = client.post("/v1/webhooks/zoho", json=body, params={"operation": "delete"})
    with_key = client.post(
        "/v1/webhooks/zoho",
        json=body,
        params={"operation": "edit"},
        headers={"Idempotency-Key": "a"},
    )
    same_key_other_query = client.post(
        "/v1/webhooks/zoho",
        json=body,
        params={"operation": "delete"},
        headers={"Idempotency-Key": "a"},
    )

    assert upserted.json()["operation"] == "upsert"
    assert REPLAYED not in deleted.headers
    assert deleted.json()["operation"] == "delete"
    view = record_view(client, "students", student["id"])
    assert [h["outcome"] for h in view["history"]][-2:] == ["DELETED", "NEW"]
    assert with_key.status_code == 202
    assert same_key_other_query.status_code == 422


def test_the_same_webhook_with_its_secret_sent_another_way_is_still_a_repeat(
    client: TestClient,
) -> None:
    student = StudentRecordFactory(Program=None)
    old = client.post("/v1/webhooks/zoho", json=merge_fields(student))
    secret = client.headers["Authorization"].removeprefix("Bearer ")
    assert secret

    again = client.post(
        "/v1/webhooks/zoho",
        json=merge_fields(student),
        params={"token": secret},
        headers={"Authorization": ""},
    )

    assert again.headers.get(REPLAYED) == "true"
    assert again.json()["event_id"] == old.json()["event_id"]


def test_an_id_only_webhook_after_an_edit_in_zoho_stores_the_edit(
    zoho_client: TestClient, fake_zoho: FakeZoho, college: dict[str, list[Record]]
) -> None:
    store_prerequisites(zoho_client, college)
    enrollment = enrollment_of(college)
    body = {"module": ENROLLMENTS, "zoho_id": enrollment["id"]}
    created = zoho_client.post("/v1/webhooks/zoho", json=body)
    assert created.status_code == 202
    fake_zoho.update_record(ENROLLMENTS, enrollment["id"], {"Enrollment_Type": "Repeat"})

    edited = zoho_client.post("/v1/webhooks/zoho", json=body)

    assert edited.status_code == 202
    view = record_view(zoho_client, "enrollments", enrollment["id"])
    assert [h["outcome"] for h in view["history"]] == ["UPDATED", "NEW"]


# ---------------------------------------------------------------------------------------------
# Bursts: twenty identical requests at the same moment, through a real server
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def server(settings: Settings, db: Database) -> Iterator[str]:
    """The service over HTTP with its worker in the same process, as the embedded install."""
    working = settings.model_copy(update={"run_worker": True, "worker_poll_seconds": 0.05})
    with serving(create_app(working, db)) as base_url:
        yield base_url


def burst(url: str, **request: Any) -> list[httpx.Response]:
    """BURST identical POSTs, all sent at once."""
    with httpx.Client(timeout=30, headers=AUTH) as http, ThreadPoolExecutor(BURST) as pool:
        return list(pool.map(lambda _: http.post(url, **request), range(BURST)))


def settled_events(db: Database, count: int) -> list[InboundEvent]:
    """The stored events once `count` have arrived and none is still being completed."""
    deadline = time.monotonic() + 15
    while True:
        stored = events(db)
        pending = [e for e in stored if e.status in ("received", "accepted")]
        if len(stored) >= count and not pending:
            return stored
        if time.monotonic() > deadline:
            pytest.fail(f"events still pending: {[(e.id, e.status) for e in stored]}")
        time.sleep(0.05)


def test_a_burst_of_the_same_webhook_body_is_processed_once(server: str, db: Database) -> None:
    student = StudentRecordFactory(Program=None)

    answers = burst(f"{server}/v1/webhooks/zoho", json=merge_fields(student))

    assert [a.status_code for a in answers] == [202] * BURST, [a.text for a in answers]
    stored = settled_events(db, BURST)
    assert len(stored) == BURST
    assert sorted(e.status for e in stored) == ["duplicate"] * (BURST - 1) + ["processed"]
    processed = next(e for e in stored if e.status == "processed")
    for answer in answers:
        body = answer.json()
        assert body["event_id"] == processed.id or body == {
            "event_id": body["event_id"],
            "status": "duplicate",
        }
    assert outcomes(db) == [("students", student["id"], "NEW")]


def test_a_burst_after_the_key_expired_is_processed_once_again(server: str, db: Database) -> None:
    student = StudentRecordFactory(Program=None)
    url = f"{server}/v1/webhooks/zoho"
    with httpx.Client(headers=AUTH) as http:
        assert http.post(url, json=merge_fields(student)).status_code == 202
    settled_events(db, 1)
    expire_every_key(db)
    edited = later_version(student, First_Name="Renamed")

    answers = burst(url, json=merge_fields(edited))

    assert [a.status_code for a in answers] == [202] * BURST, [a.text for a in answers]
    stored = settled_events(db, BURST + 1)
    assert sorted(e.status for e in stored[1:]) == ["duplicate"] * (BURST - 1) + ["processed"]
    assert [o for _, _, o in outcomes(db)] == ["NEW", "UPDATED"]


def test_a_burst_with_one_idempotency_key_is_processed_once(server: str, db: Database) -> None:
    teacher = TeacherRecordFactory()

    answers = burst(
        f"{server}/v1/sync/teachers",
        json={"data": [teacher]},
        headers={"Idempotency-Key": "burst-1"},
    )

    first = [a for a in answers if a.status_code == 200 and REPLAYED not in a.headers]
    replayed = [a for a in answers if a.headers.get(REPLAYED) == "true"]
    running = [a for a in answers if a.status_code == 409]
    assert len(first) == 1, [(a.status_code, a.text) for a in answers]
    assert len(first) + len(replayed) + len(running) == BURST
    assert all(a.content == first[0].content for a in replayed)
    assert outcomes(db) == [("teachers", teacher["id"], "NEW")]
    with db.sessions() as session:
        counted = session.scalar(
            select(func.count()).select_from(InboundEvent).where(InboundEvent.status == "processed")
        )
    assert counted == 1


# ---------------------------------------------------------------------------------------------
# Two first arrivals of one record at once (different requests, so no key makes them one)
# ---------------------------------------------------------------------------------------------


def wait_for_a_blocked_transaction(db: Database, backend: str) -> None:
    """Return once another transaction waits for a lock (PostgreSQL), or after a moment on
    SQLite, where the second transaction waits at BEGIN IMMEDIATE and reads only afterwards."""
    if backend == "sqlite":
        time.sleep(0.2)
        return
    deadline = time.monotonic() + 10
    with db.engine.connect() as probe:
        while probe.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")) == 0:
            if time.monotonic() > deadline:
                pytest.fail("the second transaction never waited for the first")
            time.sleep(0.02)
            probe.rollback()


def test_two_first_arrivals_of_a_record_at_once_are_one_new_and_one_unchanged(
    db: Database, tenant: TenantContext, backend: str
) -> None:
    teacher = TeacherRecordFactory()
    spec = ENTITY_BY_KEY["teachers"]
    seen: dict[str, str] = {}

    def store(name: str) -> None:
        with db.sessions.begin() as session:
            results, _ = pipeline.process_records(
                session, tenant=tenant, entity=spec, raw_records=[teacher], event_id=None
            )
            seen[name] = results[0].outcome.value

    with db.sessions.begin() as session:
        results, _ = pipeline.process_records(
            session, tenant=tenant, entity=spec, raw_records=[teacher], event_id=None
        )
        seen["first"] = results[0].outcome.value
        second = threading.Thread(target=store, args=("second",))
        second.start()
        wait_for_a_blocked_transaction(db, backend)
    second.join(timeout=30)

    assert seen == {"first": "NEW", "second": "UNCHANGED"}
    assert outcomes(db) == [("teachers", teacher["id"], "NEW")]


def test_two_first_arrivals_that_differ_are_one_new_and_one_updated(
    db: Database, tenant: TenantContext, backend: str
) -> None:
    teacher = TeacherRecordFactory(Name="Ayşe Kaya")
    renamed = {**teacher, "Name": "Ayşe Kaya-Demir"}
    spec = ENTITY_BY_KEY["teachers"]
    seen: dict[str, list[Any]] = {}

    def store(name: str, record: dict[str, Any]) -> None:
        with db.sessions.begin() as session:
            results, _ = pipeline.process_records(
                session, tenant=tenant, entity=spec, raw_records=[record], event_id=None
            )
            seen[name] = [results[0].outcome.value, results[0].changes]

    with db.sessions.begin() as session:
        results, _ = pipeline.process_records(
            session, tenant=tenant, entity=spec, raw_records=[teacher], event_id=None
        )
        seen["first"] = [results[0].outcome.value, results[0].changes]
        second = threading.Thread(target=store, args=("second", renamed))
        second.start()
        wait_for_a_blocked_transaction(db, backend)
    second.join(timeout=30)

    assert seen == {
        "first": ["NEW", None],
        "second": ["UPDATED", {"Name": ["Ayşe Kaya", "Ayşe Kaya-Demir"]}],
    }
    assert [o for _, _, o in outcomes(db)] == ["NEW", "UPDATED"]
    with db.sessions() as session:
        jobs = session.scalars(select(Job.zoho_id).where(Job.kind == "deliver")).all()
    assert jobs == [teacher["id"]]


def test_the_same_waiting_record_parked_twice_at_once_is_parked_once(
    db: Database, tenant: TenantContext, backend: str
) -> None:
    enrollment = EnrollmentRecordFactory()
    spec = ENTITY_BY_KEY["enrollments"]
    seen: dict[str, str] = {}

    def store(name: str) -> None:
        with db.sessions.begin() as session:
            results, _ = pipeline.process_records(
                session, tenant=tenant, entity=spec, raw_records=[enrollment], event_id=None
            )
            seen[name] = results[0].outcome.value

    with db.sessions.begin() as session:
        results, _ = pipeline.process_records(
            session, tenant=tenant, entity=spec, raw_records=[enrollment], event_id=None
        )
        seen["first"] = results[0].outcome.value
        second = threading.Thread(target=store, args=("second",))
        second.start()
        wait_for_a_blocked_transaction(db, backend)
    second.join(timeout=30)

    assert seen == {"first": "SKIPPED", "second": "SKIPPED"}
    with db.sessions() as session:
        parked = session.scalars(select(ParkedRecord.zoho_id)).all()
        waits = session.scalar(select(func.count()).select_from(ParkedWait))
    assert parked == [enrollment["id"]]
    assert waits == 2  # its student and its class
