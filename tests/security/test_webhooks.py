"""Zoho's callers: workflow-rule webhooks (JSON or form; id only, merge fields or full records)
and Notifications API callbacks, against a fake Zoho that answers the fetches of id-only events.

An accepted event is completed by a job of the queue; the test client runs those jobs after each
webhook request (as the embedded install's worker would, a moment later), so an accepted event is
completed by the time a test looks: the first test checks that this holds, the others rely on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from typer.testing import CliRunner

from tests.conftest import AUTH, TEST_SECRET, WorkingClient, sync, tenant_with_secret
from tests.factories import (
    ENROLLMENTS,
    PROGRAMS,
    STUDENTS,
    Record,
    StudentRecordFactory,
    TeacherRecordFactory,
)
from tests.fakes.zoho import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
    FakeZoho,
)
from tests.security.conftest import (
    OTHER_TENANT,
    enrollment_of,
    event,
    record_view,
    serving,
    store_prerequisites,
)
from zoho_moodle_sync import credentials, tenants
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.cli import app as cli_app
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import Job
from zoho_moodle_sync.db.models import InboundEvent
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.ingress.events import STORED_BODY_LIMIT
from zoho_moodle_sync.sealing import seal
from zoho_moodle_sync.settings import Settings, get_settings

CHANNEL_ID = "1000000068001"
CHANNEL_TOKEN = "TOKEN_FOR_VERIFICATION_OF_1000000068001"


def fetched_ids(fake: FakeZoho, module: str) -> list[str]:
    """Record ids the service asked the fake Zoho for, call by call."""
    return [
        call.query.get("ids", "")
        for call in fake.api_calls
        if call.path.endswith(f"/{module}") and call.status in (200, 204)
    ]


def notification(
    ids: list[str], *, module: str = "BTEC_Teachers", **changes: Any
) -> dict[str, Any]:
    """A Notifications API callback body, as in Zoho's documentation."""
    return {
        "server_time": 1718117126473,
        "query_params": {},
        "module": module,
        "resource_uri": f"https://www.zohoapis.com/crm/v2/{module}",
        "ids": ids,
        "affected_fields": [],
        "operation": "insert",
        "channel_id": CHANNEL_ID,
        "token": CHANNEL_TOKEN,
    } | changes


def add_channel(
    db: Database, slug: str, *, channel_id: str = CHANNEL_ID, token: str = CHANNEL_TOKEN
) -> None:
    with db.sessions.begin() as session:
        tenant = tenants.get_by_slug(session, slug)
        assert tenant is not None
        credentials.add_secret(
            session,
            tenant,
            label=credentials.channel_label(channel_id),
            kind="channel",
            secret=token,
        )


def assert_refused(response: Any, status: int, code: str, db: Database) -> dict[str, Any]:
    """The error answer, and the request stored as rejected with that status."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    stored = event(db, error["event_id"])
    assert (stored.status, stored.http_status) == ("rejected", status)
    return error


# ---------------------------------------------------------------------------------------------
# Id-only webhooks: the record is fetched from Zoho
# ---------------------------------------------------------------------------------------------


ID_ONLY_WAYS: dict[str, Callable[[str], dict[str, Any]]] = {
    "json, module in the body": lambda i: {
        "url": "/v1/webhooks/zoho",
        "json": {"module": ENROLLMENTS, "zoho_id": i},
    },
    "form, module in the path": lambda i: {
        "url": f"/v1/webhooks/zoho/{ENROLLMENTS}",
        "data": {"zoho_id": i},
    },
    "form, module in the body": lambda i: {
        "url": "/v1/webhooks/zoho",
        "data": {"module": ENROLLMENTS, "id": i},
    },
    "json, module in the path, id as Zoho names it": lambda i: {
        "url": f"/v1/webhooks/zoho/{ENROLLMENTS}",
        "json": {"id": i},
    },
    "form without content type": lambda i: {
        "url": f"/v1/webhooks/zoho/{ENROLLMENTS}",
        "content": f"zoho_id={i}".encode(),
        "headers": {"Content-Type": ""},
    },
    "module in the path, id in the query, no body": lambda i: {
        "url": f"/v1/webhooks/zoho/{ENROLLMENTS}",
        "params": {"zoho_id": i},
    },
}


@pytest.mark.parametrize("way", ID_ONLY_WAYS)
def test_an_id_only_webhook_is_fetched_from_zoho_and_stored_before_the_answer_reaches_the_test(
    zoho_client: TestClient,
    db: Database,
    fake_zoho: FakeZoho,
    college: dict[str, list[Record]],
    way: str,
) -> None:
    store_prerequisites(zoho_client, college)
    enrollment = enrollment_of(college)

    response = zoho_client.post(**ID_ONLY_WAYS[way](enrollment["id"]))

    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["status"] == "accepted"
    assert (answer["entity"], answer["ids"]) == ("enrollments", [enrollment["id"]])
    completed = event(db, answer["event_id"])
    assert completed.status == "processed", completed.error
    assert completed.summary is not None
    assert completed.summary["NEW"] == 1
    assert fetched_ids(fake_zoho, ENROLLMENTS) == [enrollment["id"]]
    view = record_view(zoho_client, "enrollments", enrollment["id"])
    assert view["state"] == "stored"
    assert [h["outcome"] for h in view["history"]] == ["NEW"]
    assert view["history"][0]["event_id"] == answer["event_id"]


def test_with_zoho_credentials_what_zoho_holds_is_stored_not_what_the_webhook_claims(
    zoho_client: TestClient, fake_zoho: FakeZoho, college: dict[str, list[Record]]
) -> None:
    student = college[STUDENTS][0]
    sync(zoho_client, "programs", college[PROGRAMS])

    response = zoho_client.post(
        f"/v1/webhooks/zoho/{STUDENTS}",
        json={
            "zoho_id": student["id"],
            "First_Name": "Forged",
            "Last_Name": "Name",
            "Academic_Email": "attacker@example.com",
            "Name": student["Name"],
        },
    )

    assert response.status_code == 202, response.text
    stored = record_view(zoho_client, "students", student["id"])["stored"]["data"]
    assert stored["first_name"] == student["First_Name"]
    assert stored["academic_email"] == student["Academic_Email"]
    assert fetched_ids(fake_zoho, STUDENTS) == [student["id"]]


def test_a_record_gone_from_zoho_is_deleted_when_its_webhook_comes(
    zoho_client: TestClient, fake_zoho: FakeZoho, college: dict[str, list[Record]]
) -> None:
    store_prerequisites(zoho_client, college)
    enrollment = enrollment_of(college)
    sync(zoho_client, "enrollments", [enrollment])
    fake_zoho.delete_record(ENROLLMENTS, enrollment["id"])

    response = zoho_client.post(
        f"/v1/webhooks/zoho/{ENROLLMENTS}", data={"zoho_id": enrollment["id"]}
    )

    assert response.status_code == 202
    view = record_view(zoho_client, "enrollments", enrollment["id"])
    assert [h["outcome"] for h in view["history"]] == ["DELETED", "NEW"]
    assert view["stored"]["deleted_at"] is not None
    assert fetched_ids(fake_zoho, ENROLLMENTS) == [enrollment["id"]]


@pytest.mark.parametrize("operation", ["delete", "Deleted", "remove"])
def test_a_delete_operation_deletes_without_asking_zoho(
    zoho_client: TestClient, fake_zoho: FakeZoho, college: dict[str, list[Record]], operation: str
) -> None:
    store_prerequisites(zoho_client, college)
    student = college[STUDENTS][0]

    response = zoho_client.post(
        "/v1/webhooks/zoho",
        json={"module": STUDENTS, "zoho_id": student["id"], "operation": operation},
    )

    assert response.status_code == 202
    assert response.json()["operation"] == "delete"
    view = record_view(zoho_client, "students", student["id"])
    assert [h["outcome"] for h in view["history"]] == ["DELETED", "NEW"]
    assert fetched_ids(fake_zoho, STUDENTS) == []


def test_an_id_only_webhook_without_zoho_credentials_is_refused_at_once_and_kept(
    client: TestClient, db: Database
) -> None:
    teacher = TeacherRecordFactory()

    response = client.post("/v1/webhooks/zoho/BTEC_Teachers", data={"zoho_id": teacher["id"]})

    error = assert_refused(response, 422, "unprocessable", db)
    for fragment in (
        "id only",
        "ZOHO_CLIENT_ID",
        "ZOHO_REFRESH_TOKEN",
        "replay",
        "tenant set-zoho",
    ):
        assert fragment in error["message"], error["message"]
    assert error["details"] == [
        {"field": "zoho_id", "message": "id only, and no Zoho API credentials"}
    ]
    refused = event(db, error["event_id"])
    assert refused.error == error["message"]
    assert refused.body == f"zoho_id={teacher['id']}".encode()
    assert client.get(f"/v1/records/teachers/{teacher['id']}").status_code == 404


@pytest.fixture
def served_fake_zoho(college: dict[str, list[Record]]) -> Iterator[tuple[FakeZoho, str]]:
    """The fake Zoho over HTTP, for a process that cannot be handed a transport (the CLI)."""
    fake = FakeZoho()
    fake.seed(college)
    with serving(fake) as base_url:
        yield fake, base_url


def test_a_failed_id_only_webhook_is_stored_when_replayed_once_zoho_is_configured(
    client: TestClient,
    db: Database,
    database_url: str,
    college: dict[str, list[Record]],
    served_fake_zoho: tuple[FakeZoho, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    store_prerequisites(client, college)
    enrollment = enrollment_of(college)
    failed = client.post(
        "/v1/webhooks/zoho", json={"module": ENROLLMENTS, "zoho_id": enrollment["id"]}
    )
    failed_id = failed.json()["error"]["event_id"]
    assert event(db, failed_id).status == "rejected"
    _, zoho_url = served_fake_zoho
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("ZOHO_CLIENT_ID", DEFAULT_CLIENT_ID)
    monkeypatch.setenv("ZOHO_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
    monkeypatch.setenv("ZOHO_REFRESH_TOKEN", DEFAULT_REFRESH_TOKEN)
    monkeypatch.setenv("ZOHO_ACCOUNTS_URL", zoho_url)
    get_settings.cache_clear()

    replayed = CliRunner().invoke(
        cli_app,
        ["events", "replay", str(failed_id), "--database-url", database_url],
    )
    get_settings.cache_clear()

    assert replayed.exit_code == 0, replayed.output
    assert record_view(client, "enrollments", enrollment["id"])["state"] == "stored"


# ---------------------------------------------------------------------------------------------
# Webhooks that bring the record with them (no Zoho credentials needed)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_merge_fields_are_stored_as_they_came_without_zoho_credentials(
    client: TestClient, db: Database, encoding: str
) -> None:
    student = StudentRecordFactory(Program=None)
    fields = {
        "zoho_id": student["id"],
        "Name": student["Name"],
        "First_Name": student["First_Name"],
        "Last_Name": student["Last_Name"],
        "Academic_Email": student["Academic_Email"],
        "Status": "Active",
    }
    body = {"json": fields} if encoding == "json" else {"data": fields}

    response = client.post(f"/v1/webhooks/zoho/{STUDENTS}", **body)

    assert response.status_code == 202, response.text
    assert event(db, response.json()["event_id"]).status == "processed"
    view = record_view(client, "students", student["id"])
    assert view["stored"]["data"]["first_name"] == student["First_Name"]
    assert view["stored"]["data"]["academic_email"] == student["Academic_Email"]
    assert [h["outcome"] for h in view["history"]] == ["NEW"]


def test_full_records_in_a_data_array_are_stored_without_zoho_credentials(
    client: TestClient, db: Database
) -> None:
    teachers = TeacherRecordFactory.build_batch(3)

    response = client.post("/v1/webhooks/zoho/BTEC_Teachers", json={"data": teachers})

    assert response.status_code == 202, response.text
    assert response.json()["ids"] == [t["id"] for t in teachers]
    summary = event(db, response.json()["event_id"]).summary
    assert summary is not None
    assert summary["NEW"] == 3
    for teacher in teachers:
        assert (
            record_view(client, "teachers", teacher["id"])["stored"]["data"]["name"]
            == teacher["Name"]
        )


# ---------------------------------------------------------------------------------------------
# What is refused, and how
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_args", "fields"),
    [
        ({"json": {"module": STUDENTS, "zoho_id": "${!BTEC_Students.Id}"}}, ["zoho_id"]),
        (
            {"data": {"zoho_id": "5725767141565000016", "Email": "${BTEC_Students.Email}"}},
            ["Email"],
        ),
        (
            {"json": {"module": STUDENTS, "data": [{"id": "1", "Lookup": {"id": "${X.Id}"}}]}},
            ["data[0].Lookup.id"],
        ),
        (
            {"json": {"module": STUDENTS, "zoho_id": "1"}, "params": {"note": "${Org.Name}"}},
            ["note"],
        ),
    ],
)
def test_merge_fields_zoho_left_unfilled_are_a_422_naming_them_and_the_request_is_kept(
    client: TestClient, db: Database, request_args: dict[str, Any], fields: list[str]
) -> None:
    response = client.post(f"/v1/webhooks/zoho/{STUDENTS}", **request_args)

    error = assert_refused(response, 422, "unprocessable", db)
    assert [d["field"] for d in error["details"]] == fields
    for field in fields:
        assert field in error["message"]
    stored = event(db, error["event_id"])
    assert "${" in unquote(stored.body.decode()) + json.dumps(stored.query)
    assert stored.error == error["message"]


def test_a_module_this_tenant_does_not_sync_is_a_422(client: TestClient, db: Database) -> None:
    for url, body in [
        ("/v1/webhooks/zoho", {"module": "Contacts", "zoho_id": "5725767141565000016"}),
        ("/v1/webhooks/zoho/Leads", {"zoho_id": "5725767141565000016"}),
    ]:
        error = assert_refused(client.post(url, json=body), 422, "unprocessable", db)
        assert error["details"] == [{"field": "module", "message": "unknown"}]


def test_a_webhook_without_module_or_id_is_a_422_saying_what_to_send(
    client: TestClient, db: Database
) -> None:
    no_module = client.post("/v1/webhooks/zoho", json={"zoho_id": "5725767141565000016"})
    no_id = client.post("/v1/webhooks/zoho/BTEC_Students", json={"First_Name": "Hana"})
    bad_id = client.post("/v1/webhooks/zoho/BTEC_Students", json={"zoho_id": "DROP TABLE"})

    assert "module" in assert_refused(no_module, 422, "unprocessable", db)["message"]
    assert "zoho_id" in assert_refused(no_id, 422, "unprocessable", db)["message"]
    assert "DROP TABLE" in assert_refused(bad_id, 422, "unprocessable", db)["message"]


def test_malformed_json_is_a_400_with_the_position(client: TestClient, db: Database) -> None:
    response = client.post(
        "/v1/webhooks/zoho",
        content=b'{"module": "BTEC_Students",\n "zoho_id": 12,,}',
        headers={"Content-Type": "application/json"},
    )

    error = assert_refused(response, 400, "malformed_body", db)
    assert error["details"] == {"line": 2, "column": 16, "position": 43}
    assert "line 2" in error["message"]


@pytest.mark.parametrize(
    "content_type", ["application/xml", "multipart/form-data; boundary=x", "image/png"]
)
def test_a_content_type_other_than_json_or_form_is_a_415(
    client: TestClient, db: Database, content_type: str
) -> None:
    response = client.post(
        "/v1/webhooks/zoho/BTEC_Students",
        content=b"<record><id>5725767141565000016</id></record>",
        headers={"Content-Type": content_type},
    )

    error = assert_refused(response, 415, "unsupported_media_type", db)
    assert content_type.split(";")[0] in error["message"]


def test_a_body_over_the_limit_is_a_413_and_only_its_start_is_kept(
    settings: Settings, db: Database
) -> None:
    app = create_app(settings.model_copy(update={"max_body_bytes": 1024}), db)
    body = json.dumps({"module": STUDENTS, "zoho_id": "1", "Notes": "x" * 200_000}).encode()

    with TestClient(app, raise_server_exceptions=False, headers=AUTH) as small:
        response = small.post(
            "/v1/webhooks/zoho", content=body, headers={"Content-Type": "application/json"}
        )
        notified = small.post("/v1/webhooks/zoho/notifications", content=body)

    error = assert_refused(response, 413, "body_too_large", db)
    assert "1024" in error["message"]
    stored = event(db, error["event_id"])
    assert stored.body_truncated
    assert stored.body == body[:STORED_BODY_LIMIT]
    assert_refused(notified, 413, "body_too_large", db)


# ---------------------------------------------------------------------------------------------
# Notifications API callbacks
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def beta_with_zoho(db: Database, zoho_settings: Settings) -> dict[str, str]:
    """Tenant beta with its own Zoho API credentials (sealed) and its own secret."""
    headers = tenant_with_secret(db, OTHER_TENANT)
    key = zoho_settings.secret_key
    with db.sessions.begin() as session:
        tenant = tenants.get_by_slug(session, OTHER_TENANT)
        assert tenant is not None
        tenant.config = {
            **tenant.config,
            "zoho": {
                "client_id": DEFAULT_CLIENT_ID,
                "client_secret": seal(DEFAULT_CLIENT_SECRET, key),
                "refresh_token": seal(DEFAULT_REFRESH_TOKEN, key),
            },
        }
    return headers


def test_a_notification_with_its_channel_token_is_processed_for_the_channels_tenant(
    zoho_client: TestClient, db: Database, fake_zoho: FakeZoho, beta_with_zoho: dict[str, str]
) -> None:
    teacher = TeacherRecordFactory()
    fake_zoho.put_record("BTEC_Teachers", teacher)
    add_channel(db, OTHER_TENANT)
    del zoho_client.headers["Authorization"]  # Zoho sends only what the channel was given

    response = zoho_client.post(
        "/v1/webhooks/zoho/notifications", json=notification([teacher["id"]])
    )

    assert response.status_code == 202, response.text
    accepted = event(db, response.json()["event_id"])
    assert accepted.status == "processed", accepted.error
    with db.sessions() as session:
        beta = tenants.get_by_slug(session, OTHER_TENANT)
        assert beta is not None
        assert accepted.tenant_id == beta.id
    assert (
        record_view(zoho_client, "teachers", teacher["id"], headers=beta_with_zoho)["state"]
        == "stored"
    )
    assert zoho_client.get(f"/v1/records/teachers/{teacher['id']}", headers=AUTH).status_code == 404
    assert fetched_ids(fake_zoho, "BTEC_Teachers") == [teacher["id"]]


def test_a_delete_notification_deletes_only_in_the_channels_tenant(
    bare: TestClient, db: Database
) -> None:
    beta = tenant_with_secret(db, OTHER_TENANT)
    teacher = TeacherRecordFactory()
    sync(bare, "teachers", [teacher], headers=AUTH)
    sync(bare, "teachers", [teacher], headers=beta)
    add_channel(db, OTHER_TENANT)

    response = bare.post(
        "/v1/webhooks/zoho/notifications", json=notification([teacher["id"]], operation="delete")
    )

    assert response.status_code == 202, response.text
    theirs = record_view(bare, "teachers", teacher["id"], headers=beta)
    ours = record_view(bare, "teachers", teacher["id"], headers=AUTH)
    assert [h["outcome"] for h in theirs["history"]] == ["DELETED", "NEW"]
    assert [h["outcome"] for h in ours["history"]] == ["NEW"]


@pytest.mark.parametrize(
    "changes",
    [
        {"token": "TOKEN_FOR_VERIFICATION_OF_SOMETHING_ELSE"},
        {"token": CHANNEL_TOKEN[:-1]},
        {"token": None},
        {"channel_id": "1000000068002"},
        {"channel_id": "1000000068002", "token": "TOKEN_OF_THE_OTHER_CHANNEL_0000"},
    ],
)
def test_a_notification_with_a_wrong_token_or_channel_is_a_401_and_changes_nothing(
    bare: TestClient, db: Database, changes: dict[str, Any]
) -> None:
    teacher = TeacherRecordFactory()
    sync(bare, "teachers", [teacher], headers=AUTH)
    add_channel(db, "default")
    add_channel(db, "default", channel_id="1000000068003", token="TOKEN_OF_THE_OTHER_CHANNEL_0000")

    response = bare.post(
        "/v1/webhooks/zoho/notifications",
        json=notification([teacher["id"]], operation="delete") | changes,
    )

    error = assert_refused(response, 401, "unauthenticated", db)
    assert error["message"] == "missing or invalid credential"
    view = record_view(bare, "teachers", teacher["id"], headers=AUTH)
    assert [h["outcome"] for h in view["history"]] == ["NEW"]


def test_an_expired_channel_token_is_a_401(bare: TestClient, db: Database) -> None:
    add_channel(db, "default")
    with db.sessions.begin() as session:
        tenant = tenants.get_by_slug(session, "default")
        assert tenant is not None
        credentials.expire_current(session, tenant, overlap=-timedelta(seconds=1), kind="channel")

    response = bare.post(
        "/v1/webhooks/zoho/notifications", json=notification(["5725767141565000016"])
    )

    assert_refused(response, 401, "unauthenticated", db)


def test_a_notification_for_another_tenant_than_x_tenant_id_is_forbidden(
    bare: TestClient, db: Database
) -> None:
    tenant_with_secret(db, OTHER_TENANT)
    add_channel(db, OTHER_TENANT)

    response = bare.post(
        "/v1/webhooks/zoho/notifications",
        json=notification(["5725767141565000016"], operation="delete"),
        headers={"X-Tenant-ID": "default"},
    )

    assert_refused(response, 403, "forbidden", db)


def test_a_notifications_tokens_are_not_kept_in_the_stored_request(
    bare: TestClient, db: Database
) -> None:
    """Zoho echoes the notify URL's query in `query_params`: with `?token=`, the secret too."""
    add_channel(db, "default")
    callback = notification(["5725767141565000016"], operation="delete")
    callback["query_params"] = {"token": TEST_SECRET, "school": "north"}

    response = bare.post(
        "/v1/webhooks/zoho/notifications", json=callback, params={"token": TEST_SECRET}
    )

    assert response.status_code == 202, response.text
    stored = event(db, response.json()["event_id"])
    assert CHANNEL_TOKEN.encode() not in stored.body
    assert TEST_SECRET.encode() not in stored.body
    assert json.loads(stored.body)["query_params"] == {"token": "***", "school": "north"}
    assert stored.query == {"token": "***"}
    assert stored.status == "processed"


# ---------------------------------------------------------------------------------------------
# Events a stopped process left accepted are completed by the sweep, from what was stored
# ---------------------------------------------------------------------------------------------


LEFT_BEHIND: dict[str, Callable[[str], dict[str, Any]]] = {
    "notification": lambda i: {
        "url": "/v1/webhooks/zoho/notifications",
        "json": notification([i]),
    },
    "id in the query, no body": lambda i: {
        "url": "/v1/webhooks/zoho/BTEC_Teachers",
        "params": {"zoho_id": i, "token": TEST_SECRET},
    },
}


@pytest.mark.parametrize("kind", LEFT_BEHIND)
def test_an_event_whose_worker_died_is_completed_by_another_from_its_stored_request(
    zoho_client: WorkingClient,
    db: Database,
    fake_zoho: FakeZoho,
    kind: str,
) -> None:
    teacher = TeacherRecordFactory()
    fake_zoho.put_record("BTEC_Teachers", teacher)
    add_channel(db, "default")
    del zoho_client.headers["Authorization"]
    accepted = zoho_client.post(**LEFT_BEHIND[kind](teacher["id"])).json()["event_id"]
    fake_zoho.update_record("BTEC_Teachers", teacher["id"], {"Name": "Renamed In Zoho"})
    # As if the worker holding the event's job died before completing it: the job is still
    # running, its lease run out, and the event still accepted.
    with db.sessions.begin() as session:
        session.execute(
            update(InboundEvent).where(InboundEvent.id == accepted).values(status="accepted")
        )
        session.execute(
            update(Job)
            .where(Job.event_id == accepted)
            .values(
                state="running",
                claimed_by="a-worker-that-died",
                lease_until=utcnow() - timedelta(seconds=1),
            )
        )

    assert zoho_client.complete_webhooks() == 1
    assert event(db, accepted).status == "processed"
    view = record_view(zoho_client, "teachers", teacher["id"], headers=AUTH)
    assert view["stored"]["data"]["name"] == "Renamed In Zoho"
    assert [h["outcome"] for h in view["history"]] == ["UPDATED", "NEW"]
