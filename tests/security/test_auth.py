"""Authentication and tenancy: the credential decides the tenant, on every route but health.

Routes are taken from the app itself, so a route added later is checked without anyone
remembering to. Tenants are proven apart with two tenants holding the same Zoho id; secrets are
looked for, and must not be found, in answers, stored requests, log lines and the CLI's output.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import insert, select, update
from typer.testing import CliRunner

from tests.conftest import AUTH, TEST_SECRET, sync, tenant_with_secret
from tests.e2e.servers import console_script, free_port, wait_until_healthy
from tests.factories import TeacherRecordFactory
from tests.fakes.zoho import DEFAULT_CLIENT_SECRET, DEFAULT_REFRESH_TOKEN, FakeZoho
from tests.security.conftest import (
    ADMIN_TOKEN,
    OTHER_TENANT,
    enrollment_of,
    events,
    record_view,
    store_prerequisites,
)
from zoho_moodle_sync import credentials, tenants
from zoho_moodle_sync.api import docs_pages
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.cli import app as cli_app
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import Job
from zoho_moodle_sync.db.models import InboundEvent, Tenant
from zoho_moodle_sync.db.security import TenantCredential
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings, get_settings

REFUSED = {"code": "unauthenticated", "message": "missing or invalid credential"}

#: A value for every path parameter of the app's routes.
PATH_SAMPLES = {
    "entity": "teachers",
    "zoho_id": "5725767141565000016",
    "job_id": "1",
    "event_id": "1",
    "module": "BTEC_Teachers",
}
#: A body every route could take: sync, workflow webhook and notification fields at once.
ANY_ROUTE_BODY = json.dumps(
    {
        "data": [{"id": "5725767141565000016", "Name": "Sarah O'Neill"}],
        "module": "BTEC_Teachers",
        "zoho_id": "5725767141565000016",
        "ids": ["5725767141565000016"],
        "operation": "insert",
        "channel_id": "1000000068001",
    }
).encode()

WRONG_CREDENTIALS: dict[str, dict[str, Any]] = {
    "none": {},
    "wrong bearer": {"headers": {"Authorization": "Bearer zms_not-a-secret-of-anyone-0000"}},
    "empty bearer": {"headers": {"Authorization": "Bearer "}},
    "right secret, other scheme": {"headers": {"Authorization": f"Basic {TEST_SECRET}"}},
    "secret with a suffix": {"headers": {"Authorization": f"Bearer {TEST_SECRET}x"}},
    "prefix of the secret": {"headers": {"X-Webhook-Token": TEST_SECRET[:-1]}},
    "wrong webhook header": {"headers": {"X-Webhook-Token": "zms_not-a-secret-of-anyone-0000"}},
    "wrong query token": {"params": {"token": "zms_not-a-secret-of-anyone-0000"}},
    "empty query token": {"params": {"token": ""}},
}


def secret_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def presented(secret: str, way: str) -> dict[str, Any]:
    """Request arguments presenting `secret` one of the three ways."""
    if way == "bearer":
        return {"headers": {"Authorization": f"Bearer {secret}"}}
    if way == "header":
        return {"headers": {"X-Webhook-Token": secret}}
    return {"params": {"token": secret}}


CONSOLE_OPEN = {"/ui/login", "/ui/static/console.css"}
"""The console's pages that need no session: its login form, and its stylesheet."""


def protected_routes(app: FastAPI, *, console: bool = False) -> list[tuple[str, str]]:
    """(method, path) of every route of the app but the public ones, path parameters filled:
    the API's (they take a tenant's secret), or with `console` the console's (a session)."""
    public = {
        "/v1/health",
        "/v1/ready",
        app.openapi_url,
        app.docs_url,
        app.redoc_url,
        app.swagger_ui_oauth2_redirect_url,
        *docs_pages.PUBLIC_PATHS,
    }
    calls = []
    for context in iter_route_contexts(app.routes):
        path, methods = context.path, context.methods
        assert path is not None, f"a route without a path: {context}"
        if path in public or path.startswith("/ui") != console or path in CONSOLE_OPEN:
            continue
        assert methods, f"a route without methods: {context}"
        for name in re.findall(r"{(\w+)", path):
            if name not in PATH_SAMPLES:
                pytest.fail(f"{path}: add a sample value for {{{name}}} to PATH_SAMPLES")
        filled = re.sub(r"{(\w+)(:\w+)?}", lambda m: PATH_SAMPLES[m.group(1)], path)
        calls += [(method, filled) for method in sorted(methods - {"HEAD"})]
    return calls


@pytest.fixture
def admin_client(settings: Settings, db: Database) -> Iterator[TestClient]:
    """The app with an ADMIN_TOKEN configured, calling without any credential by default."""
    app = create_app(settings.model_copy(update={"admin_token": SecretStr(ADMIN_TOKEN)}), db)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str
) -> Iterator[Callable[..., str]]:
    """`zoho-moodle-sync ARGS... --database-url URL`, with no setting from the environment;
    returns what it printed on stdout (asserting success)."""
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    get_settings.cache_clear()

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli_app, [*args, "--database-url", database_url])
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.stdout

    yield run
    get_settings.cache_clear()


# ---------------------------------------------------------------------------------------------
# Who is calling
# ---------------------------------------------------------------------------------------------


def test_every_route_but_health_refuses_a_missing_or_wrong_credential_with_one_answer(
    bare: TestClient,
) -> None:
    routes = protected_routes(bare.app)  # type: ignore[arg-type]
    assert {("POST", "/v1/sync/teachers"), ("GET", "/metrics")} <= set(routes)
    assert ("POST", "/v1/webhooks/zoho/notifications") in routes

    answers = {}
    for method, path in routes:
        for case, arguments in WRONG_CREDENTIALS.items():
            for body in (ANY_ROUTE_BODY, b""):
                response = bare.request(
                    method,
                    path,
                    content=body,
                    headers={"Content-Type": "application/json", **arguments.get("headers", {})},
                    params=arguments.get("params"),
                )
                answers[(method, path, case, len(body))] = response.status_code
                assert response.status_code == 401, (method, path, case, body, response.text)
                error = response.json()["error"]
                assert {"code": error["code"], "message": error["message"]} == REFUSED
                assert TEST_SECRET not in response.text
    assert bare.get("/v1/health").status_code == 200
    assert bare.get("/v1/ready").status_code == 200
    assert len(answers) == len(routes) * len(WRONG_CREDENTIALS) * 2


def test_every_console_page_and_form_but_the_login_needs_a_session(bare: TestClient) -> None:
    """A tenant's secret sent as to the API opens nothing in the console: it has its own login."""
    routes = protected_routes(bare.app, console=True)  # type: ignore[arg-type]
    assert {("GET", "/ui/"), ("POST", "/ui/jobs/1/retry"), ("GET", "/ui/events")} <= set(routes)

    for method, path in routes:
        for credential in ({}, AUTH):
            response = bare.request(method, path, headers=credential, follow_redirects=False)
            assert response.status_code == 303, (method, path, response.text)
            assert response.headers["location"] == "/ui/login"
            assert response.headers["x-frame-options"] == "DENY"
    assert bare.get("/ui/login").status_code == 200


@pytest.mark.parametrize("way", ["bearer", "header", "query"])
def test_a_secret_works_as_bearer_token_webhook_header_or_query_parameter_and_picks_its_tenant(
    bare: TestClient, db: Database, way: str
) -> None:
    secret = secret_of(tenant_with_secret(db, OTHER_TENANT))
    teacher = TeacherRecordFactory()

    stored = bare.post("/v1/sync/teachers", json={"data": [teacher]}, **presented(secret, way))
    read = bare.get(f"/v1/records/teachers/{teacher['id']}", **presented(secret, way))
    by_default_tenant = bare.get(f"/v1/records/teachers/{teacher['id']}", headers=AUTH)

    assert stored.status_code == 200, stored.text
    assert stored.json()["results"][0]["outcome"] == "NEW"
    assert read.status_code == 200
    assert read.json()["stored"]["data"]["name"] == teacher["Name"]
    assert by_default_tenant.status_code == 404


def test_x_tenant_id_naming_another_tenant_is_forbidden_without_saying_whether_it_exists(
    client: TestClient, db: Database
) -> None:
    tenant_with_secret(db, OTHER_TENANT)
    teacher = TeacherRecordFactory()
    body = {"data": [teacher]}

    to_existing = client.post("/v1/sync/teachers", json=body, headers={"X-Tenant-ID": "beta"})
    to_missing = client.post("/v1/sync/teachers", json=body, headers={"X-Tenant-ID": "ghost"})
    read_existing = client.get("/v1/jobs", headers={"X-Tenant-ID": "beta"})
    read_missing = client.get("/v1/jobs", headers={"X-Tenant-ID": "ghost"})
    agreeing = client.get("/v1/jobs", headers={"X-Tenant-ID": "default"})

    for response in (to_existing, to_missing, read_existing, read_missing):
        assert response.status_code == 403
        error = response.json()["error"]
        assert (error["code"], error["message"]) == ("forbidden", "not allowed")
        assert "beta" not in response.text
        assert "ghost" not in response.text
    assert agreeing.status_code == 200
    with db.sessions() as session:
        assert session.scalar(select(Job.id)) is None, "a refused sync stored something"


def test_tenants_holding_the_same_zoho_id_never_read_or_write_each_others_record(
    client: TestClient, db: Database
) -> None:
    beta = tenant_with_secret(db, OTHER_TENANT)
    ours = TeacherRecordFactory(Name="Sarah O'Neill")
    theirs = {**ours, "Name": "Somebody Else"}
    sync(client, "teachers", [ours])
    sync(client, "teachers", [theirs], headers=beta)
    zoho_id = ours["id"]

    updated_by_beta = sync(
        client, "teachers", [{**theirs, "Name": "Changed By Beta"}], headers=beta
    )
    webhook_by_beta = client.post(
        "/v1/webhooks/zoho",
        json={
            "module": "BTEC_Teachers",
            "zoho_id": zoho_id,
            "Name": "Hooked By Beta",
            "Academic_Email": ours["Academic_Email"],
        },
        headers=beta,
    )
    deleted_by_beta = client.delete(f"/v1/sync/teachers/{zoho_id}", headers=beta)
    our_view = record_view(client, "teachers", zoho_id)
    their_view = record_view(client, "teachers", zoho_id, headers=beta)

    assert updated_by_beta["results"][0]["outcome"] == "UPDATED"
    assert webhook_by_beta.status_code == 202, webhook_by_beta.text
    assert deleted_by_beta.json()["results"][0]["outcome"] == "DELETED"
    assert our_view["stored"]["data"]["name"] == "Sarah O'Neill"
    assert our_view["stored"]["deleted_at"] is None
    assert [h["outcome"] for h in our_view["history"]] == ["NEW"]
    assert their_view["stored"]["data"]["name"] == "Hooked By Beta"
    assert their_view["stored"]["deleted_at"] is not None
    assert [h["outcome"] for h in their_view["history"]] == ["DELETED", "UPDATED", "UPDATED", "NEW"]


def test_a_tenant_lists_and_retries_only_its_own_jobs(client: TestClient, db: Database) -> None:
    beta = tenant_with_secret(db, OTHER_TENANT)
    teacher = TeacherRecordFactory()
    sync(client, "teachers", [teacher])
    sync(client, "teachers", [teacher], headers=beta)
    with db.sessions.begin() as session:
        session.execute(update(Job).values(state="dead"))

    ours = client.get("/v1/jobs").json()["jobs"]
    theirs = client.get("/v1/jobs", headers=beta).json()["jobs"]
    our_job = ours[0]["id"]
    retried_by_beta = client.post(f"/v1/jobs/{our_job}/retry", headers=beta)
    everything_retried_by_beta = client.post("/v1/jobs/retry", headers=beta)
    ours_after = client.get("/v1/jobs").json()["jobs"]
    theirs_after = client.get("/v1/jobs", headers=beta).json()["jobs"]

    assert [j["zoho_id"] for j in ours] == [j["zoho_id"] for j in theirs] == [teacher["id"]]
    assert {j["id"] for j in ours}.isdisjoint({j["id"] for j in theirs})
    assert retried_by_beta.status_code == 404
    assert everything_retried_by_beta.json() == {"retried": 1}
    assert [j["state"] for j in ours_after] == ["dead"]
    assert [j["state"] for j in theirs_after] == ["pending"]


def test_the_same_idempotency_key_of_two_tenants_is_two_requests(
    client: TestClient, db: Database
) -> None:
    beta = tenant_with_secret(db, OTHER_TENANT)
    teacher = TeacherRecordFactory()
    key = {"Idempotency-Key": "nightly-2025-05-10"}

    ours = client.post("/v1/sync/teachers", json={"data": [teacher]}, headers=key)
    theirs = client.post("/v1/sync/teachers", json={"data": [teacher]}, headers=key | beta)

    assert "Idempotent-Replayed" not in theirs.headers
    assert ours.json()["event_id"] != theirs.json()["event_id"]
    assert record_view(client, "teachers", teacher["id"], headers=beta)["state"] == "stored"


# ---------------------------------------------------------------------------------------------
# The admin token
# ---------------------------------------------------------------------------------------------


def test_the_admin_token_acts_for_the_tenant_named_by_x_tenant_id(
    admin_client: TestClient, db: Database
) -> None:
    beta = tenant_with_secret(db, OTHER_TENANT)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for_beta, for_default = TeacherRecordFactory(), TeacherRecordFactory()

    sync(admin_client, "teachers", [for_beta], headers=admin | {"X-Tenant-ID": OTHER_TENANT})
    sync(admin_client, "teachers", [for_default], headers=admin)
    unknown = admin_client.get("/v1/jobs", headers=admin | {"X-Tenant-ID": "ghost"})

    assert record_view(admin_client, "teachers", for_beta["id"], headers=beta)["state"] == "stored"
    assert (
        admin_client.get(f"/v1/records/teachers/{for_default['id']}", headers=beta).status_code
        == 404
    )
    assert (
        record_view(admin_client, "teachers", for_default["id"], headers=AUTH)["state"] == "stored"
    )
    assert unknown.status_code == 404


def test_admin_routes_open_to_the_admin_token_only_once_one_is_set(
    admin_client: TestClient, db: Database
) -> None:
    beta = tenant_with_secret(db, OTHER_TENANT)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    for path in ("/v1/status", "/metrics"):
        assert admin_client.get(path, headers=admin).status_code == 200, path
        assert admin_client.get(path, params={"token": ADMIN_TOKEN}).status_code == 200, path
        for tenant_secret in (AUTH, beta):
            refused = admin_client.get(path, headers=tenant_secret)
            assert refused.status_code == 403, (path, refused.text)
            assert refused.json()["error"]["code"] == "forbidden"
        assert admin_client.get(path).status_code == 401, path
    status = admin_client.get("/v1/status", headers=admin).json()
    assert set(status["moodle"]) == {"default", OTHER_TENANT}


def test_without_an_admin_token_only_the_default_tenant_opens_the_admin_routes(
    client: TestClient, db: Database
) -> None:
    beta = tenant_with_secret(db, OTHER_TENANT)

    for path in ("/v1/status", "/metrics"):
        assert client.get(path).status_code == 200, path
        assert client.get(path, headers=beta).status_code == 403, path


# ---------------------------------------------------------------------------------------------
# A tenant's secrets over their life: disabled tenant, rotation, revocation
# ---------------------------------------------------------------------------------------------


def test_a_disabled_tenants_secret_is_refused_like_any_wrong_one_until_enabled(
    bare: TestClient, db: Database, cli: Callable[..., str]
) -> None:
    beta = tenant_with_secret(db, OTHER_TENANT)
    webhook = {"module": "BTEC_Teachers", "zoho_id": "5725767141565000016", "Name": "A Teacher"}

    assert bare.get("/v1/jobs", headers=beta).status_code == 200
    cli("tenant", "disable", OTHER_TENANT)
    refused = [
        bare.get("/v1/jobs", headers=beta),
        bare.post("/v1/webhooks/zoho", json=webhook, headers=beta),
        bare.post("/v1/sync/teachers", json={"data": []}, params={"token": secret_of(beta)}),
    ]
    cli("tenant", "enable", OTHER_TENANT)
    again = bare.get("/v1/jobs", headers=beta)

    for response in refused:
        assert response.status_code == 401, response.text
        assert response.json()["error"]["message"] == REFUSED["message"]
    assert again.status_code == 200


def test_a_disabled_default_tenant_refuses_the_webhook_secret_setting_too(
    client: TestClient, db: Database
) -> None:
    with db.sessions.begin() as session:
        tenant = tenants.get_by_slug(session, "default")
        assert tenant is not None
        tenant.disabled_at = utcnow()

    assert client.get("/v1/jobs").status_code == 401


def test_after_rotation_old_and_new_secrets_both_work_until_the_overlap_ends(
    bare: TestClient, db: Database, cli: Callable[..., str]
) -> None:
    old = secret_of(tenant_with_secret(db, OTHER_TENANT))

    new = cli("tenant", "rotate-secret", OTHER_TENANT, "--overlap-hours", "2").strip()
    during = {
        s: bare.get("/v1/jobs", headers={"X-Webhook-Token": s}).status_code for s in (old, new)
    }
    with db.sessions.begin() as session:
        old_row = session.scalars(
            select(TenantCredential).where(
                TenantCredential.secret_sha256 == credentials.digest(old)
            )
        ).one()
        assert old_row.expires_at is not None
        assert timedelta(hours=1.9) < old_row.expires_at - utcnow() <= timedelta(hours=2)
        old_row.expires_at = utcnow() - timedelta(seconds=1)
    after = {
        s: bare.get("/v1/jobs", headers={"X-Webhook-Token": s}).status_code for s in (old, new)
    }

    assert new.startswith(credentials.SECRET_PREFIX)
    assert new != old
    assert during == {old: 200, new: 200}
    assert after == {old: 401, new: 200}


def test_a_revoked_secret_stops_at_once_and_the_others_go_on(
    bare: TestClient, db: Database, cli: Callable[..., str]
) -> None:
    kept = secret_of(tenant_with_secret(db, OTHER_TENANT))
    revoked = cli("tenant", "add-secret", OTHER_TENANT, "--label", "old laptop").strip()
    assert bare.get("/v1/jobs", headers={"Authorization": f"Bearer {revoked}"}).status_code == 200
    shown = json.loads(cli("tenant", "show", OTHER_TENANT))
    credential_id = next(s["id"] for s in shown["secrets"] if s["label"] == "old laptop")

    cli("tenant", "revoke-secret", OTHER_TENANT, str(credential_id))

    assert bare.get("/v1/jobs", headers={"Authorization": f"Bearer {revoked}"}).status_code == 401
    assert bare.get("/v1/jobs", params={"token": revoked}).status_code == 401
    assert bare.get("/v1/jobs", headers={"Authorization": f"Bearer {kept}"}).status_code == 200


def test_a_secret_revoked_by_another_process_stops_within_a_second(
    bare: TestClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    beta = tenant_with_secret(db, OTHER_TENANT)
    assert bare.get("/v1/jobs", headers=beta).status_code == 200
    # Another process's commit: nothing in this one hears of it.
    with db.engine.begin() as connection:
        connection.execute(update(TenantCredential).values(revoked_at=utcnow()))

    remembered = bare.get("/v1/jobs", headers=beta)
    clock = credentials.time.monotonic
    monkeypatch.setattr(credentials.time, "monotonic", lambda: clock() + credentials.RECENT_SECONDS)
    later = bare.get("/v1/jobs", headers=beta)

    assert credentials.RECENT_SECONDS <= 1
    assert remembered.status_code == 200
    assert later.status_code == 401


def test_a_remembered_secret_is_refused_the_moment_it_expires(
    bare: TestClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    beta = tenant_with_secret(db, OTHER_TENANT)
    ends = utcnow() + timedelta(minutes=5)
    with db.sessions.begin() as session:
        session.execute(update(TenantCredential).values(expires_at=ends))
    assert bare.get("/v1/jobs", headers=beta).status_code == 200

    monkeypatch.setattr(credentials, "utcnow", lambda: ends + timedelta(seconds=1))

    assert bare.get("/v1/jobs", headers=beta).status_code == 401


def test_a_refused_secret_is_not_remembered(bare: TestClient, db: Database) -> None:
    secret = credentials.new_secret()
    refused = bare.get("/v1/jobs", headers={"Authorization": f"Bearer {secret}"})
    with db.engine.begin() as connection:  # added by another process
        tenant_id = connection.execute(
            select(Tenant.id).where(Tenant.slug == "default")
        ).scalar_one()
        connection.execute(
            insert(TenantCredential).values(
                tenant_id=tenant_id,
                kind="webhook",
                label="new",
                hint=secret[:8],
                secret_sha256=credentials.digest(secret),
                created_at=utcnow(),
            )
        )

    accepted = bare.get("/v1/jobs", headers={"Authorization": f"Bearer {secret}"})

    assert (refused.status_code, accepted.status_code) == (401, 200)


def test_a_channel_token_opens_nothing_but_notifications(bare: TestClient, db: Database) -> None:
    token = "zoho-channel-token-0123456789"
    with db.sessions.begin() as session:
        tenant = tenants.get_by_slug(session, "default")
        assert tenant is not None
        credentials.add_secret(
            session,
            tenant,
            label=credentials.channel_label("1000000068001"),
            kind="channel",
            secret=token,
        )

    for way in ("bearer", "header", "query"):
        assert bare.get("/v1/jobs", **presented(token, way)).status_code == 401, way
        assert (
            bare.post("/v1/sync/teachers", json={"data": []}, **presented(token, way)).status_code
            == 401
        )


# ---------------------------------------------------------------------------------------------
# Secrets are never shown
# ---------------------------------------------------------------------------------------------


def stored_text(event: InboundEvent) -> str:
    """Everything stored of a request, as one string to search."""
    columns = {c.name: getattr(event, c.name) for c in InboundEvent.__table__.columns}
    columns["body"] = event.body.decode("utf-8", errors="replace")
    return json.dumps(columns, default=str)


def test_secrets_are_kept_out_of_stored_requests(bare: TestClient, db: Database) -> None:
    wrong = "zms_a-typo-of-the-real-secret-00"
    teacher = TeacherRecordFactory()
    webhook = {"module": "BTEC_Teachers", "zoho_id": teacher["id"], "Name": "A Teacher"}

    bare.post("/v1/sync/teachers", json={"data": [teacher]}, headers=AUTH)
    bare.post("/v1/webhooks/zoho", json=webhook, params={"token": TEST_SECRET, "source": "zoho"})
    bare.post(
        "/v1/webhooks/zoho/BTEC_Teachers", data=webhook, headers={"X-Webhook-Token": TEST_SECRET}
    )
    bare.delete(f"/v1/sync/teachers/{teacher['id']}", params={"token": TEST_SECRET})
    bare.post("/v1/webhooks/zoho", json=webhook, params={"token": wrong})
    bare.post("/v1/sync/teachers", json={"data": []}, headers={"X-Webhook-Token": wrong})

    stored = events(db)
    assert len(stored) == 6
    for event in stored:
        text = stored_text(event)
        assert TEST_SECRET not in text, text
        assert wrong not in text, text
        assert not {"authorization", "x-webhook-token"} & set(event.headers)
    assert stored[1].query == {"token": "***", "source": "zoho"}
    assert [e.status for e in stored][-2:] == ["rejected", "rejected"]


def test_secrets_are_never_in_answers(client: TestClient, db: Database) -> None:
    beta = tenant_with_secret(db, OTHER_TENANT)
    teacher = TeacherRecordFactory()
    answers = [
        client.post("/v1/sync/teachers", json={"data": [teacher]}),
        client.post(
            "/v1/sync/teachers", json={"data": [teacher]}, headers={"Idempotency-Key": "k"}
        ),
        client.post(
            "/v1/sync/teachers", json={"data": [teacher]}, headers={"Idempotency-Key": "k"}
        ),
        client.get(f"/v1/records/teachers/{teacher['id']}"),
        client.get("/v1/jobs"),
        client.get("/v1/status"),
        client.get("/metrics"),
        client.post("/v1/webhooks/zoho", params={"token": TEST_SECRET}, content=b"{not json"),
        client.post(
            "/v1/webhooks/zoho",
            json={"module": "Nope", "zoho_id": "1"},
            params={"token": TEST_SECRET},
        ),
        client.get("/v1/jobs", headers={"X-Tenant-ID": OTHER_TENANT}),
        client.get("/v1/jobs", headers=beta | {"X-Tenant-ID": "default"}),
        client.get("/openapi.json"),
    ]

    for response in answers:
        text = response.text + json.dumps(dict(response.headers))
        assert TEST_SECRET not in text, response.request.url
        assert secret_of(beta) not in text, response.request.url


def test_secrets_never_reach_the_log(
    zoho_client: TestClient,
    db: Database,
    fake_zoho: FakeZoho,
    college: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    beta = tenant_with_secret(db, OTHER_TENANT)
    store_prerequisites(zoho_client, college)
    enrollment = enrollment_of(college)
    caplog.set_level(logging.DEBUG)

    zoho_client.post(
        "/v1/webhooks/zoho",
        json={"module": "BTEC_Enrollments", "zoho_id": enrollment["id"]},
        params={"token": TEST_SECRET},
    )
    zoho_client.post("/v1/webhooks/zoho/BTEC_Enrollments", data={"zoho_id": "${!Id}"}, headers=beta)
    zoho_client.get("/v1/jobs", headers={"Authorization": f"Bearer {TEST_SECRET}-typo"})
    zoho_client.get("/v1/jobs", headers=beta | {"X-Tenant-ID": "default"})
    fake_zoho.expire_access_tokens()
    zoho_client.post(
        "/v1/webhooks/zoho/BTEC_Enrollments",
        data={"zoho_id": enrollment["id"], "operation": "edit"},
        headers={"X-Webhook-Token": TEST_SECRET},
    )

    assert fake_zoho.api_calls, "the id-only webhooks did not reach Zoho"
    # The test's own client logs the URLs it calls; only the service's lines count.
    service_lines = [r for r in caplog.records if "http://testserver" not in r.getMessage()]
    assert any(r.name.startswith("zoho_moodle_sync") for r in service_lines)
    logged = "\n".join(f"{r.getMessage()} {r.args} {r.exc_text or ''}" for r in service_lines)
    for secret in (
        TEST_SECRET,
        secret_of(beta),
        DEFAULT_CLIENT_SECRET,
        DEFAULT_REFRESH_TOKEN,
        *fake_zoho.issued_tokens,
    ):
        assert secret not in logged


def test_tenant_show_lists_secrets_by_their_first_characters_only(
    db: Database, cli: Callable[..., str]
) -> None:
    secret = secret_of(tenant_with_secret(db, OTHER_TENANT))
    rotated = cli("tenant", "rotate-secret", OTHER_TENANT).strip()

    shown = cli("tenant", "show", OTHER_TENANT)

    assert secret not in shown
    assert rotated not in shown
    assert credentials.digest(secret) not in shown
    assert [s["starts"] for s in json.loads(shown)["secrets"]] == [
        secret[:8] + "…",
        rotated[:8] + "…",
    ]


@pytest.mark.e2e
def test_the_served_access_log_keeps_a_query_token_out(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path}/zms.db",
        "WEBHOOK_SECRET": TEST_SECRET,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "DEBUG",
    }
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [console_script(), "serve"], cwd=tmp_path, env=env, stdout=log, stderr=log
        )
        try:
            wait_until_healthy(process, base_url, log_path)
            answer = httpx.get(f"{base_url}/v1/jobs", params={"token": TEST_SECRET})
            refused = httpx.get(f"{base_url}/v1/jobs", params={"token": TEST_SECRET + "-typo"})
            # The server reads `%74oken` as `token`: it authenticates, and is masked too.
            encoded = httpx.get(f"{base_url}/v1/jobs?%74oken={TEST_SECRET}")
        finally:
            process.terminate()
            process.wait(timeout=15)

    logged = log_path.read_text(errors="replace")
    assert answer.status_code == 200
    assert refused.status_code == 401
    assert encoded.status_code == 200
    assert "/v1/jobs?%74oken=***" in logged
    assert "/v1/jobs" in logged, "the access log is off: nothing to check"
    assert TEST_SECRET not in logged
