"""Ingress on a real database: the raw request is kept before anything else, every event ends
processed, rejected or failed, and a stored event can be replayed."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from tests.factories import EnrollmentRecordFactory, StudentRecordFactory
from tests.integration.harness import (
    MAX_RECORDS,
    count,
    event,
    history,
    inbound,
    new_tenant,
    one_of_each,
    outcomes,
    send,
    send_before,
    stored,
    stored_ids,
)
from zoho_moodle_sync.db.models import InboundEvent, RecordOutcome
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.errors import MalformedBody, NotFound, RequestRejected
from zoho_moodle_sync.field_mapping import DEFAULT_MAPPING
from zoho_moodle_sync.ingress import events, pipeline
from zoho_moodle_sync.service import Outcome
from zoho_moodle_sync.tenants import TenantContext

STUDENTS = ENTITY_BY_KEY["students"]


def test_the_raw_request_is_stored_and_committed_before_it_is_processed(
    db: Database, tenant: TenantContext
) -> None:
    students = [StudentRecordFactory(), StudentRecordFactory()]
    request = inbound(
        "students",
        students,
        query={"token": "zoho-shared-secret", "source": "workflow"},
        headers={
            "Content-Type": "application/json",
            "User-Agent": "ZohoCRM",
            "Idempotency-Key": "resync-2025-05-10",
            "Authorization": "Bearer operator-token",
            "X-Webhook-Secret": "zoho-shared-secret",
        },
    )

    event_id = events.store_inbound(db, request, tenant_id=tenant.id, entity="students")

    # Another connection sees it: it is committed, and nothing of it is processed yet.
    elsewhere = Database(db.url)
    try:
        with elsewhere.sessions() as session:
            kept = session.get_one(InboundEvent, event_id)
    finally:
        elsewhere.dispose()
    assert kept.status == "received"
    assert kept.body == request.body
    assert kept.body_size == len(request.body)
    assert kept.body_sha256 == hashlib.sha256(request.body).hexdigest()
    assert not kept.body_truncated
    assert (kept.tenant_id, kept.entity, kept.source) == (tenant.id, "students", "sync")
    assert (kept.method, kept.route, kept.content_type) == (
        "POST",
        "/v1/sync/students",
        "application/json",
    )
    assert kept.query == {"token": "***", "source": "workflow"}
    assert kept.headers == {
        "content-type": "application/json",
        "user-agent": "ZohoCRM",
        "idempotency-key": "resync-2025-05-10",
    }
    assert (kept.summary, kept.http_status, kept.processed_at) == (None, None, None)
    assert stored_ids(db, tenant, "students") == set()

    report = pipeline.run_sync(
        db,
        tenant=tenant,
        entity=STUDENTS,
        event_id=event_id,
        body=request.body,
        content_type=request.content_type,
        max_records=MAX_RECORDS,
    )

    assert report.event_id == event_id
    done = event(db, event_id)
    assert (done.status, done.http_status, done.error) == ("processed", 200, None)
    assert done.processed_at is not None
    assert done.processed_at >= done.received_at
    assert done.summary == {**dict.fromkeys(Outcome, 0), "total": 2, "NEW": 2, "released": 0}
    for student in students:
        row = stored(db, tenant, "students", student["id"])
        assert row is not None
        assert row["last_event_id"] == event_id
    with db.sessions() as session:
        history_events = set(session.scalars(select(RecordOutcome.inbound_event_id)))
    assert history_events == {event_id}


def test_an_event_whose_processing_fails_is_kept_and_marked_failed(
    db: Database, tenant: TenantContext
) -> None:
    # A tenant removed while its request was in flight: every insert breaks a foreign key.
    gone = TenantContext(id=tenant.id + 1000, slug="gone", mapping=DEFAULT_MAPPING)
    request = inbound("students", [StudentRecordFactory()])
    event_id = events.store_inbound(db, request, tenant_id=tenant.id, entity="students")

    with pytest.raises(Exception, match=r"(?i)foreign key"):
        pipeline.run_sync(
            db,
            tenant=gone,
            entity=STUDENTS,
            event_id=event_id,
            body=request.body,
            content_type=request.content_type,
            max_records=MAX_RECORDS,
        )

    failed = event(db, event_id)
    assert (failed.status, failed.http_status) == ("failed", 500)
    assert failed.error is not None
    assert failed.error.startswith("IntegrityError: ")
    assert failed.processed_at is not None
    assert failed.body == request.body
    assert count(db, RecordOutcome) == 0
    assert stored_ids(db, gone, "students") == set()


@pytest.mark.parametrize(
    ("body", "content_type", "max_records", "status", "words"),
    [
        pytest.param(
            b'{"data": [{"id": "1"', "application/json", 10, 400, "not valid JSON", id="json"
        ),
        pytest.param(b"<data/>", "application/xml", 10, 415, "not supported", id="media-type"),
        pytest.param(b'{"records": []}', "application/json", 10, 422, '"data" array', id="no-data"),
        pytest.param(
            b'{"data": [{"id": "1"}, {"id": "2"}]}',
            "application/json",
            1,
            422,
            "Too many records",
            id="too-many",
        ),
    ],
)
def test_a_rejected_request_is_kept_and_marked_rejected_with_the_reason(
    db: Database,
    tenant: TenantContext,
    body: bytes,
    content_type: str,
    max_records: int,
    status: int,
    words: str,
) -> None:
    request = inbound("students", [], body=body, content_type=content_type)
    event_id = events.store_inbound(db, request, tenant_id=tenant.id, entity="students")

    with pytest.raises(RequestRejected) as refusal:
        pipeline.run_sync(
            db,
            tenant=tenant,
            entity=STUDENTS,
            event_id=event_id,
            body=body,
            content_type=content_type,
            max_records=max_records,
        )

    assert refusal.value.status_code == status
    rejected = event(db, event_id)
    assert (rejected.status, rejected.http_status) == ("rejected", status)
    assert rejected.error == refusal.value.message
    assert words in rejected.error
    assert rejected.processed_at is not None
    assert rejected.body == body
    assert count(db, RecordOutcome) == 0


def test_replay_makes_a_new_event_with_the_same_body_and_the_same_results(
    db: Database, tenant: TenantContext
) -> None:
    good = StudentRecordFactory()
    nameless = {**StudentRecordFactory(), "First_Name": None}
    original = send(db, tenant, "students", [good, nameless])
    assert outcomes(original.results) == ["NEW", "INVALID"]

    replayed = pipeline.replay(db, original.event_id, max_records=MAX_RECORDS)

    assert replayed.event_id != original.event_id
    assert outcomes(replayed.results) == ["UNCHANGED", "INVALID"]
    assert [(r.index, r.zoho_id) for r in replayed.results] == [
        (0, good["id"]),
        (1, nameless["id"]),
    ]
    assert replayed.results[1].errors == original.results[1].errors
    copy = event(db, replayed.event_id)
    first = event(db, original.event_id)
    assert copy.replay_of == original.event_id
    assert copy.source == "replay"
    assert (copy.tenant_id, copy.entity, copy.route, copy.method) == (
        first.tenant_id,
        first.entity,
        first.route,
        first.method,
    )
    assert (copy.body, copy.body_sha256, copy.content_type) == (
        first.body,
        first.body_sha256,
        first.content_type,
    )
    assert copy.status == "processed"
    assert copy.summary == {
        **dict.fromkeys(Outcome, 0),
        "total": 2,
        "UNCHANGED": 1,
        "INVALID": 1,
        "released": 0,
    }
    assert (first.status, first.replay_of) == ("processed", None)
    assert first.summary is not None
    assert first.summary["NEW"] == 1
    row = stored(db, tenant, "students", good["id"])
    assert row is not None
    assert row["last_event_id"] == original.event_id
    assert history(db, tenant, "students", good["id"]) == ["NEW"]
    assert history(db, tenant, "students", nameless["id"]) == ["INVALID", "INVALID"]


def test_replay_of_a_parked_request_after_its_dependency_arrived_finds_it_unchanged(
    db: Database, tenant: TenantContext
) -> None:
    college = one_of_each()
    send_before(db, tenant, college, "enrollments")
    student = StudentRecordFactory(program=college["programs"])
    enrollment = EnrollmentRecordFactory(student=student, class_=college["classes"])
    waiting = send(db, tenant, "enrollments", [enrollment])
    assert [r.reason for r in waiting.results] == ["student_not_synced_yet"]
    arrival = send(db, tenant, "students", [student])
    assert [(r.zoho_id, r.outcome) for r in arrival.released] == [(enrollment["id"], Outcome.NEW)]

    replayed = pipeline.replay(db, waiting.event_id, max_records=MAX_RECORDS)

    assert outcomes(replayed.results) == ["UNCHANGED"]
    assert replayed.released == []
    row = stored(db, tenant, "enrollments", enrollment["id"])
    assert row is not None
    assert row["last_event_id"] == arrival.event_id
    assert history(db, tenant, "enrollments", enrollment["id"]) == ["SKIPPED", "NEW"]
    assert event(db, replayed.event_id).replay_of == waiting.event_id


def test_replaying_a_rejected_event_is_rejected_again_as_a_new_event(
    db: Database, tenant: TenantContext
) -> None:
    request = inbound("students", [], body=b'{"data": [', content_type="application/json")
    event_id = events.store_inbound(db, request, tenant_id=tenant.id, entity="students")
    with pytest.raises(MalformedBody):
        pipeline.run_sync(
            db,
            tenant=tenant,
            entity=STUDENTS,
            event_id=event_id,
            body=request.body,
            content_type=request.content_type,
            max_records=MAX_RECORDS,
        )

    with pytest.raises(MalformedBody):
        pipeline.replay(db, event_id, max_records=MAX_RECORDS)

    with db.sessions() as session:
        stored = events.list_events(session, tenant_id=tenant.id)
    assert [(e.replay_of, e.status, e.http_status) for e in stored] == [
        (event_id, "rejected", 400),
        (None, "rejected", 400),
    ]


def test_replay_refuses_events_it_cannot_replay(db: Database, tenant: TenantContext) -> None:
    cut = events.store_inbound(
        db,
        inbound("students", [StudentRecordFactory()], body_truncated=True, body_size=3_000_000),
        tenant_id=tenant.id,
        entity="students",
    )
    tenantless = events.store_inbound(
        db, inbound("students", [StudentRecordFactory()]), tenant_id=None, entity="students"
    )
    no_entity = events.store_inbound(
        db, inbound("pupils", [StudentRecordFactory()]), tenant_id=tenant.id, entity=None
    )

    for event_id, words in [
        (cut, "over the size limit"),
        (tenantless, "belongs to no tenant"),
        (no_entity, "names no entity"),
        (max(cut, tenantless, no_entity) + 100, "no inbound event"),
    ]:
        with pytest.raises(NotFound, match=words):
            pipeline.replay(db, event_id, max_records=MAX_RECORDS)
    assert count(db, InboundEvent) == 3
    assert event(db, cut).body_size == 3_000_000


def test_list_events_shows_the_newest_first_by_tenant_and_status(
    db: Database, tenant: TenantContext
) -> None:
    other = new_tenant(db, "riverside")
    first = send(db, tenant, "students", [StudentRecordFactory()]).event_id
    theirs = send(db, other, "students", [StudentRecordFactory()]).event_id
    refused = events.store_inbound(
        db, inbound("students", [], body=b"not json"), tenant_id=tenant.id, entity="students"
    )
    with pytest.raises(MalformedBody):
        pipeline.run_sync(
            db,
            tenant=tenant,
            entity=STUDENTS,
            event_id=refused,
            body=b"not json",
            content_type="application/json",
            max_records=MAX_RECORDS,
        )
    last = send(db, tenant, "students", [StudentRecordFactory()]).event_id

    with db.sessions() as session:
        everything = [e.id for e in events.list_events(session)]
        mine = [e.id for e in events.list_events(session, tenant_id=tenant.id)]
        processed = [e.id for e in events.list_events(session, status="processed")]
        rejected = [(e.id, e.error) for e in events.list_events(session, status="rejected")]
        latest = [e.id for e in events.list_events(session, tenant_id=tenant.id, limit=2)]
        theirs_only = [e.id for e in events.list_events(session, tenant_id=other.id)]

    assert everything == [last, refused, theirs, first]
    assert mine == [last, refused, first]
    assert processed == [last, theirs, first]
    assert [i for i, _ in rejected] == [refused]
    assert rejected[0][1] is not None
    assert "not valid JSON" in rejected[0][1]
    assert latest == [last, refused]
    assert theirs_only == [theirs]
