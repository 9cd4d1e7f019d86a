"""The fake Zoho answers as the real one does, so client tests against it mean something."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.zoho import FakeZoho, ManualClock, load_seed, make_record
from tests.zoho.conftest import ACCOUNTS_URL, API_DOMAIN

pytestmark = pytest.mark.anyio

LINA = "5725767141565000101"


@pytest.fixture
async def raw(fake: FakeZoho) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=fake.transport()) as http:
        yield http


async def refresh(raw: httpx.AsyncClient, fake: FakeZoho, **overrides: str) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "refresh_token": next(iter(fake.refresh_tokens), "revoked"),
        **overrides,
    }
    return await raw.post(f"{ACCOUNTS_URL}/oauth/v2/token", data=form)


async def token(raw: httpx.AsyncClient, fake: FakeZoho) -> dict[str, str]:
    answer = (await refresh(raw, fake)).json()
    return {"Authorization": f"Zoho-oauthtoken {answer['access_token']}"}


async def test_refresh_grant_answers_like_zoho_accounts(
    raw: httpx.AsyncClient, fake: FakeZoho
) -> None:
    answer = await refresh(raw, fake)

    body = answer.json()
    assert answer.status_code == 200
    assert set(body) >= {"access_token", "expires_in", "api_domain", "token_type"}
    assert (body["expires_in"], body["api_domain"]) == (3600, API_DOMAIN)


async def test_refresh_grant_also_takes_query_parameters(
    raw: httpx.AsyncClient, fake: FakeZoho
) -> None:
    params = {
        "grant_type": "refresh_token",
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "refresh_token": next(iter(fake.refresh_tokens)),
    }

    answer = await raw.post(f"{ACCOUNTS_URL}/oauth/v2/token", params=params)

    assert "access_token" in answer.json()


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"client_id": "1000.OTHER"}, "invalid_client"),
        ({"client_secret": "wrong"}, "invalid_client"),
        ({"refresh_token": "1000.unknown"}, "invalid_code"),
        ({"grant_type": "authorization_code"}, "unsupported_grant_type"),
    ],
)
async def test_refused_refresh_grants_name_the_error(
    raw: httpx.AsyncClient, fake: FakeZoho, overrides: dict[str, str], error: str
) -> None:
    answer = await refresh(raw, fake, **overrides)

    assert answer.json() == {"error": error}
    assert fake.refresh_count == 0


async def test_refresh_token_is_blocked_after_ten_refreshes_in_ten_minutes(
    raw: httpx.AsyncClient, fake: FakeZoho, clock: ManualClock
) -> None:
    for _ in range(10):
        assert "access_token" in (await refresh(raw, fake)).json()
        clock.advance(timedelta(seconds=30))

    blocked = await refresh(raw, fake)
    assert blocked.status_code == 400
    assert blocked.json()["error"] == "Access Denied"

    clock.advance(timedelta(seconds=299))
    assert (await refresh(raw, fake)).status_code == 400, "the first refresh is 599 s old"
    clock.advance(timedelta(seconds=1))
    assert "access_token" in (await refresh(raw, fake)).json()


async def test_expired_access_token_gets_invalid_token(
    raw: httpx.AsyncClient, fake: FakeZoho, clock: ManualClock
) -> None:
    headers = await token(raw, fake)
    url = f"{API_DOMAIN}/crm/v8/BTEC_Students/{LINA}"
    assert (await raw.get(url, headers=headers)).status_code == 200

    clock.advance(timedelta(hours=1))
    answer = await raw.get(url, headers=headers)

    assert answer.status_code == 401
    assert answer.json() == {
        "code": "INVALID_TOKEN",
        "details": {},
        "message": "invalid oauth token",
        "status": "error",
    }


async def test_bearer_scheme_is_not_accepted(raw: httpx.AsyncClient, fake: FakeZoho) -> None:
    access_token = (await refresh(raw, fake)).json()["access_token"]

    answer = await raw.get(
        f"{API_DOMAIN}/crm/v8/BTEC_Students/{LINA}",
        headers={"Authorization": f"Bearer {access_token}"},
    )

    assert answer.status_code == 401
    assert answer.json()["code"] == "AUTHENTICATION_FAILURE"


@pytest.mark.parametrize("path", ["/crm/v9/BTEC_Students", "/crm/v8", "/crm/v8/a/b/c/d"])
async def test_unknown_paths_get_invalid_url_pattern(
    raw: httpx.AsyncClient, fake: FakeZoho, path: str
) -> None:
    headers = await token(raw, fake)

    answer = await raw.get(f"{API_DOMAIN}{path}", params={"fields": "Name"}, headers=headers)

    assert (answer.status_code, answer.json()["code"]) == (404, "INVALID_URL_PATTERN")


async def test_missing_record_and_empty_list_answer_204_with_an_empty_body(
    raw: httpx.AsyncClient, fake: FakeZoho
) -> None:
    headers = await token(raw, fake)

    missing = await raw.get(f"{API_DOMAIN}/crm/v8/BTEC_Students/1", headers=headers)
    empty = await raw.get(f"{API_DOMAIN}/crm/v8/Contacts?fields=Email", headers=headers)

    assert (missing.status_code, missing.content) == (204, b"")
    assert (empty.status_code, empty.content) == (204, b"")


async def test_list_requires_fields_and_caps_per_page_and_ids(
    raw: httpx.AsyncClient, fake: FakeZoho
) -> None:
    headers = await token(raw, fake)
    base = f"{API_DOMAIN}/crm/v8/BTEC_Students"
    ids = ",".join(str(n) for n in range(101))

    no_fields = await raw.get(base, headers=headers)
    big_page = await raw.get(base, params={"fields": "Name", "per_page": "201"}, headers=headers)
    many_ids = await raw.get(base, params={"ids": ids}, headers=headers)

    assert no_fields.json()["code"] == "REQUIRED_PARAM_MISSING"
    assert big_page.json()["code"] == "INVALID_DATA"
    assert (many_ids.status_code, many_ids.json()["code"]) == (400, "LIMIT_EXCEEDED")


async def test_page_past_2000_records_is_refused_and_page_token_goes_on(
    raw: httpx.AsyncClient, fake: FakeZoho
) -> None:
    fake.seed({"Contacts": [make_record(str(10_000 + n), Email="x") for n in range(2100)]})
    headers = await token(raw, fake)
    base = f"{API_DOMAIN}/crm/v8/Contacts"

    page_10 = await raw.get(
        base, params={"fields": "Email", "page": "10", "per_page": "200"}, headers=headers
    )
    page_11 = await raw.get(
        base, params={"fields": "Email", "page": "11", "per_page": "200"}, headers=headers
    )
    info = page_10.json()["info"]
    by_token = await raw.get(
        base,
        params={"fields": "Email", "page_token": info["next_page_token"], "per_page": "200"},
        headers=headers,
    )

    assert info["more_records"] is True
    assert (page_11.status_code, page_11.json()["code"]) == (
        400,
        "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
    )
    assert [r["id"] for r in by_token.json()["data"]] == [str(12_000 + n) for n in range(100)]
    assert by_token.json()["info"]["more_records"] is False


async def test_channel_expiry_beyond_a_week_falls_back_to_one_hour(
    raw: httpx.AsyncClient, fake: FakeZoho, clock: ManualClock
) -> None:
    headers = await token(raw, fake)
    item = {
        "channel_id": 5,
        "events": ["Contacts.all"],
        "notify_url": "https://example.com/n",
        "channel_expiry": (clock() + timedelta(days=8)).isoformat(),
    }

    answer = await raw.post(
        f"{API_DOMAIN}/crm/v8/actions/watch", json={"watch": [item]}, headers=headers
    )

    assert answer.json()["watch"][0]["code"] == "SUCCESS"
    assert fake.channels["5"].expiry == clock() + timedelta(hours=1)


async def test_watch_token_over_50_characters_gets_invalid_data(
    raw: httpx.AsyncClient, fake: FakeZoho
) -> None:
    headers = await token(raw, fake)
    item = {
        "channel_id": 5,
        "events": ["Contacts.all"],
        "notify_url": "https://example.com/n",
        "token": "t" * 51,
    }

    answer = await raw.post(
        f"{API_DOMAIN}/crm/v8/actions/watch", json={"watch": [item]}, headers=headers
    )

    assert answer.status_code == 400
    assert answer.json()["watch"][0]["code"] == "INVALID_DATA"
    assert fake.channels == {}


async def test_injected_failures_answer_the_next_calls_then_stop(
    raw: httpx.AsyncClient, fake: FakeZoho
) -> None:
    headers = await token(raw, fake)
    url = f"{API_DOMAIN}/crm/v8/BTEC_Students/{LINA}"
    fake.fail_next(2, status=429, retry_after=3)

    statuses = [(await raw.get(url, headers=headers)).status_code for _ in range(3)]

    assert statuses == [429, 429, 200]
    assert [call.status for call in fake.api_calls] == statuses


def test_seed_file_in_the_zoho_sample_shape_loads_by_module(tmp_path: Path) -> None:
    path = tmp_path / "records.json"
    data: dict[str, Any] = {
        "_about": "fixture",
        "modules": {"BTEC_Students": [make_record("1", Name="A")], "Products": []},
    }
    path.write_text(json.dumps(data), encoding="utf-8")

    seed = load_seed(path)

    assert set(seed) == {"BTEC_Students", "Products"}
    assert seed["BTEC_Students"][0]["Name"] == "A"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.e2e
def test_fake_runs_as_a_local_server(tmp_path: Path) -> None:
    seed = tmp_path / "records.json"
    seed.write_text(json.dumps({"BTEC_Students": [make_record(LINA, Name="Lina")]}))
    port = _free_port()
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "tests.fakes.zoho", "--port", str(port), "--seed", str(seed)]
    # Fixed arguments, no shell: nothing untrusted reaches the command line.
    server = subprocess.Popen(command, cwd=root, stderr=subprocess.DEVNULL)  # noqa: S603
    base = f"http://127.0.0.1:{port}"
    try:
        answer = None
        for _ in range(100):
            try:
                answer = httpx.post(
                    f"{base}/oauth/v2/token",
                    data={
                        "grant_type": "refresh_token",
                        "client_id": "1000.FAKECLIENTID",
                        "client_secret": "fake-client-secret-0123456789",
                        "refresh_token": "1000.fake-refresh-token.0123456789abcdef",
                    },
                )
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert answer is not None, "the server did not start"
        body = answer.json()
        assert body["api_domain"] == base
        record = httpx.get(
            f"{body['api_domain']}/crm/v8/BTEC_Students/{LINA}",
            headers={"Authorization": f"Zoho-oauthtoken {body['access_token']}"},
        )
        assert record.json()["data"][0]["Name"] == "Lina"
    finally:
        server.terminate()
        server.wait(timeout=10)
