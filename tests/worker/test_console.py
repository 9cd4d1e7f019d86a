"""The console at /ui through the ASGI app: the login exchanges the admin credential for a
session cookie, every form needs the session's CSRF token, sessions expire, every page renders
for a tenant with delivered, dead, held and parked records, and the buttons retry, confirm and
replay, each for the tenant shown only."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner
from pydantic import SecretStr
from sqlalchemy import select

from tests.conftest import TEST_SECRET, tenant_with_secret
from tests.factories import StudentRecordFactory
from tests.worker.conftest import MoodleSync
from zoho_moodle_sync import credentials, tenants
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.db.jobs import Job
from zoho_moodle_sync.db.models import InboundEvent
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ADMIN = "zms_console-admin-token-000000000001"


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, page
    return found.group(1)


def log_in(browser: TestClient, token: str = TEST_SECRET) -> Any:
    form = browser.get("/ui/login")
    assert form.status_code == 200
    return browser.post(
        "/ui/login", data={"token": token, "csrf": csrf_of(form.text)}, follow_redirects=False
    )


@pytest.fixture
def browser(settings: Settings, db: Database) -> Any:
    """A client without the API credential, as a browser is: it has only its cookies."""
    with TestClient(create_app(settings, db), base_url="https://testserver") as client:
        yield client


def test_the_admin_credential_opens_a_session_cookie_and_a_wrong_one_is_refused(
    browser: TestClient,
) -> None:
    assert browser.get("/ui/", follow_redirects=False).headers["location"] == "/ui/login"

    refused = log_in(browser, "zms_not-the-admin-token-at-all")
    opened = log_in(browser)

    assert refused.status_code == 401
    assert "That is not the admin credential." in refused.text
    assert opened.status_code == 303
    cookie = opened.headers["set-cookie"]
    assert cookie.startswith("zms_console=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/ui", "Secure", "Max-Age=28800"):
        assert attribute.lower() in cookie.lower(), attribute
    assert TEST_SECRET not in cookie
    page = browser.get("/ui/")
    assert page.status_code == 200
    assert "overview" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


def test_with_an_admin_token_only_it_opens_the_console(settings: Settings, db: Database) -> None:
    admin = settings.model_copy(update={"admin_token": SecretStr(ADMIN)})
    with TestClient(create_app(admin, db)) as client:
        assert log_in(client, TEST_SECRET).status_code == 401
        assert log_in(client, ADMIN).status_code == 303


def test_a_form_without_the_csrf_token_is_refused(
    browser: TestClient, console_college: dict[str, Any]
) -> None:
    log_in(browser)
    dead = console_college["dead"]

    no_token = browser.post(f"/ui/jobs/{dead.id}/retry", data={"tenant": "default"})
    wrong = browser.post(f"/ui/jobs/{dead.id}/retry", data={"tenant": "default", "csrf": "x"})
    login_without = browser.post("/ui/login", data={"token": TEST_SECRET})

    assert no_token.status_code == 403
    assert wrong.status_code == 403
    assert "security token" in no_token.text
    assert login_without.status_code == 403


def test_a_session_expires_and_ends_when_its_credential_is_revoked(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = tenant_with_secret(db, "default")
    secret = headers["Authorization"].removeprefix("Bearer ")
    with TestClient(create_app(settings, db)) as client:
        nine_hours_ago = int(time.time()) - 9 * 3600
        with monkeypatch.context() as past:
            past.setattr(TimestampSigner, "get_timestamp", lambda _self: nine_hours_ago)
            log_in(client, secret)
        assert client.get("/ui/", follow_redirects=False).headers["location"] == "/ui/login"

        log_in(client, secret)
        assert client.get("/ui/").status_code == 200
        with db.sessions.begin() as session:
            tenant = tenants.get_by_slug(session, "default")
            assert tenant is not None
            [view] = [v for v in credentials.list_for(session, tenant) if v.label == "test"]
            credentials.revoke(session, tenant, view.id)
        assert client.get("/ui/", follow_redirects=False).headers["location"] == "/ui/login"


def test_every_page_renders_for_a_tenant_with_work_in_every_state(
    browser: TestClient, console_college: dict[str, Any]
) -> None:
    log_in(browser)
    world, dead = console_college["world"], console_college["dead"]
    parked = console_college["parked"]

    pages = {
        "/ui/": "dead jobs",
        "/ui/jobs?state=dead": "Invalid parameter value detected",
        "/ui/jobs?state=held": "No held job.",
        "/ui/parked": "which has never arrived from Zoho",
        f"/ui/events?zoho_id={dead.zoho_id}": "POST /v1/sync/students",
        f"/ui/records/students/{dead.zoho_id}": "Moodle refused the account",
        f"/ui/records/enrollments/{parked['id']}": "waits for class",
        f"/ui/explain?q={world.students[0]['Name']}": "",
    }
    for url, text in pages.items():
        page = browser.get(url)
        assert page.status_code == 200, (url, page.text)
        assert text in page.text, url
    unknown = browser.get("/ui/records/students/5725767141565999999")
    assert unknown.status_code == 404
    assert "has reached this service" in unknown.text


def test_retry_confirm_and_replay_act_for_the_tenant_shown(
    browser: TestClient, console_college: dict[str, Any], moodle_sync: MoodleSync, db: Database
) -> None:
    log_in(browser)
    dead = console_college["dead"]
    csrf = csrf_of(browser.get("/ui/jobs?state=dead").text)

    retried = browser.post(
        f"/ui/jobs/{dead.id}/retry", data={"csrf": csrf, "tenant": "default", "state": "dead"}
    )
    confirmed = browser.post("/ui/jobs/confirm-held", data={"csrf": csrf, "tenant": "default"})
    with db.sessions() as session:
        event_id = session.scalar(
            select(InboundEvent.id)
            .where(InboundEvent.entity == "students")
            .order_by(InboundEvent.id)
            .limit(1)
        )
    replayed = browser.post(
        f"/ui/events/{event_id}/replay", data={"csrf": csrf, "tenant": "default"}
    )

    assert retried.status_code == 200
    assert f"job {dead.id} is pending again" in retried.text
    assert "0 held job(s) confirmed" in confirmed.text
    assert f"event {event_id} replayed as event" in replayed.text
    with db.sessions() as session:
        assert session.get_one(Job, dead.id).state == "pending"


def test_another_tenant_s_jobs_and_events_are_out_of_reach(
    browser: TestClient, console_college: dict[str, Any], db: Database
) -> None:
    beta = tenant_with_secret(db, "beta")
    student = StudentRecordFactory(program=None)
    browser.post("/v1/sync/students", json={"data": [student]}, headers=beta)
    log_in(browser)
    dead = console_college["dead"]
    csrf = csrf_of(browser.get("/ui/?tenant=beta").text)

    retry = browser.post(f"/ui/jobs/{dead.id}/retry", data={"csrf": csrf, "tenant": "beta"})
    record = browser.get(f"/ui/records/students/{dead.zoho_id}?tenant=beta")
    listed = browser.get("/ui/jobs?tenant=beta&state=dead")
    with db.sessions() as session:
        event_id = session.scalar(
            select(InboundEvent.id)
            .where(InboundEvent.entity == "students")
            .order_by(InboundEvent.id)
            .limit(1)
        )
    replay = browser.post(f"/ui/events/{event_id}/replay", data={"csrf": csrf, "tenant": "beta"})

    assert f"Refused: no job {dead.id}" in retry.text
    assert record.status_code == 404
    assert dead.zoho_id not in listed.text
    assert f"Refused: no inbound event {event_id}" in replay.text
    assert browser.get("/ui/?tenant=nobody").status_code == 404


def test_nothing_a_page_shows_is_unescaped_or_secret(
    browser: TestClient, moodle_sync: MoodleSync
) -> None:
    hostile = StudentRecordFactory(program=None, First_Name="<script>alert(1)</script>")
    moodle_sync.post("students", [hostile])
    log_in(browser)

    page = browser.get(f"/ui/records/students/{hostile['id']}")

    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    for url in ("/ui/", "/ui/jobs", "/ui/parked", "/ui/events"):
        assert TEST_SECRET not in browser.get(url).text
