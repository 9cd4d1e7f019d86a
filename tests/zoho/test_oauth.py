"""The client's access token: refreshed rarely, shared through the store, refused loudly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.fakes.zoho import FakeZoho, ManualClock
from tests.zoho.conftest import ACCOUNTS_URL, API_DOMAIN, ATTEMPTS, ClientFactory
from zoho_moodle_sync.errors import ZohoAuthError, ZohoRateLimited, ZohoUnavailable
from zoho_moodle_sync.zoho import (
    ACCOUNTS_SERVERS,
    CachedToken,
    DataCentre,
    InMemoryTokenStore,
    ZohoClient,
    ZohoCredentials,
)

pytestmark = pytest.mark.anyio

STUDENT = "5725767141565000101"


async def test_first_call_refreshes_and_sends_the_token_as_zoho_oauthtoken(
    client: ZohoClient, fake: FakeZoho
) -> None:
    record = await client.get_record("BTEC_Students", STUDENT)

    assert record is not None
    assert fake.refresh_count == 1
    [call] = fake.api_calls
    assert call.status == 200
    assert call.access_token == fake.issued_tokens[0]


async def test_refresh_posts_the_grant_to_the_accounts_server_and_calls_the_named_api_domain(
    client: ZohoClient, fake: FakeZoho
) -> None:
    await client.get_record("BTEC_Students", STUDENT)

    [refresh] = fake.refresh_calls
    assert (refresh.method, refresh.host, refresh.path) == (
        "POST",
        "accounts.zoho.test",
        "/oauth/v2/token",
    )
    assert refresh.query == {}, "secrets must travel in the form body, not the logged URL"
    assert fake.api_calls[0].host == httpx.URL(API_DOMAIN).host


async def test_cached_token_is_reused_by_later_calls(client: ZohoClient, fake: FakeZoho) -> None:
    for _ in range(3):
        await client.get_record("BTEC_Students", STUDENT)

    assert fake.refresh_count == 1
    assert {call.access_token for call in fake.api_calls} == {fake.issued_tokens[0]}


async def test_token_is_refreshed_five_minutes_before_it_expires(
    client: ZohoClient, fake: FakeZoho, clock: ManualClock
) -> None:
    await client.get_record("BTEC_Students", STUDENT)

    clock.advance(timedelta(minutes=54))
    await client.get_record("BTEC_Students", STUDENT)
    assert fake.refresh_count == 1

    clock.advance(timedelta(minutes=2))
    await client.get_record("BTEC_Students", STUDENT)
    assert fake.refresh_count == 2
    assert fake.api_calls[-1].access_token == fake.issued_tokens[1]


async def test_expired_token_is_replaced_before_the_call(
    client: ZohoClient, fake: FakeZoho, clock: ManualClock
) -> None:
    await client.get_record("BTEC_Students", STUDENT)
    clock.advance(timedelta(hours=2))

    assert await client.get_record("BTEC_Students", STUDENT) is not None
    assert fake.refresh_count == 2
    assert [call.status for call in fake.api_calls] == [200, 200]


async def test_many_concurrent_calls_on_an_empty_cache_refresh_once(
    client: ZohoClient, fake: FakeZoho
) -> None:
    results = await asyncio.gather(
        *(client.get_record("BTEC_Students", STUDENT) for _ in range(25))
    )

    assert all(result is not None for result in results)
    assert fake.refresh_count == 1
    assert len(fake.refresh_calls) == 1


async def test_clients_sharing_a_token_store_share_one_token(
    make_client: ClientFactory, fake: FakeZoho
) -> None:
    store = InMemoryTokenStore()
    async with (
        httpx.AsyncClient(transport=fake.transport()) as http_a,
        httpx.AsyncClient(transport=fake.transport()) as http_b,
    ):
        worker_a = make_client(store=store, http=http_a)
        worker_b = make_client(store=store, http=http_b)
        await asyncio.gather(
            *(worker.get_record("BTEC_Students", STUDENT) for worker in [worker_a, worker_b] * 5)
        )

    assert fake.refresh_count == 1


class _StoreFilledByAnotherProcess(InMemoryTokenStore):
    """Stands for a shared store that another process fills while we wait for its lock."""

    def __init__(self, token_from_elsewhere: CachedToken) -> None:
        super().__init__()
        self._token_from_elsewhere = token_from_elsewhere

    @asynccontextmanager
    async def refresh_lock(self, key: str) -> AsyncIterator[None]:
        await self.put(key, self._token_from_elsewhere)
        yield


async def test_token_stored_by_another_process_while_waiting_for_the_lock_is_used(
    make_client: ClientFactory, fake: FakeZoho, clock: ManualClock
) -> None:
    other_process = make_client(store=InMemoryTokenStore())
    await other_process.get_record("BTEC_Students", STUDENT)
    their_token = CachedToken(
        access_token=fake.issued_tokens[0],
        api_domain=API_DOMAIN,
        expires_at=clock() + timedelta(minutes=50),
    )

    ours = make_client(store=_StoreFilledByAnotherProcess(their_token))
    await ours.get_record("BTEC_Students", STUDENT)

    assert fake.refresh_count == 1
    assert fake.api_calls[-1].access_token == fake.issued_tokens[0]


async def test_invalid_token_answer_refreshes_once_and_retries_once(
    client: ZohoClient, fake: FakeZoho
) -> None:
    await client.get_record("BTEC_Students", STUDENT)
    fake.expire_access_tokens()

    record = await client.get_record("BTEC_Students", STUDENT)

    assert record is not None
    assert fake.refresh_count == 2
    assert [call.status for call in fake.api_calls] == [200, 401, 200]
    assert fake.api_calls[-1].access_token == fake.issued_tokens[1]


async def test_invalid_token_after_the_fresh_refresh_raises_auth_error(
    client: ZohoClient, fake: FakeZoho
) -> None:
    fake.fail_next(2, status=401)

    with pytest.raises(ZohoAuthError) as raised:
        await client.get_record("BTEC_Students", STUDENT)

    assert raised.value.code == "INVALID_TOKEN"
    assert raised.value.status_code == 401
    assert fake.refresh_count == 2
    assert len(fake.api_calls) == 2


async def test_concurrent_calls_refused_with_invalid_token_share_one_refresh(
    client: ZohoClient, fake: FakeZoho
) -> None:
    await client.get_record("BTEC_Students", STUDENT)
    fake.expire_access_tokens()

    results = await asyncio.gather(
        *(client.get_record("BTEC_Students", STUDENT) for _ in range(20))
    )

    assert all(result is not None for result in results)
    assert fake.refresh_count == 2


async def test_wrong_client_secret_raises_auth_error_invalid_client(
    make_client: ClientFactory, credentials: ZohoCredentials, fake: FakeZoho
) -> None:
    wrong = ZohoCredentials(
        client_id=credentials.client_id,
        client_secret="not-the-secret",
        refresh_token=credentials.refresh_token,
        accounts_url=credentials.accounts_url,
    )
    client = make_client(credentials=wrong)

    with pytest.raises(ZohoAuthError) as raised:
        await client.get_record("BTEC_Students", STUDENT)

    assert raised.value.code == "invalid_client"
    assert fake.api_calls == []
    assert len(fake.refresh_calls) == 1, "a refused grant is not retried"


async def test_revoked_refresh_token_raises_auth_error_invalid_code(
    client: ZohoClient, fake: FakeZoho
) -> None:
    fake.revoke_refresh_token()

    with pytest.raises(ZohoAuthError) as raised:
        await client.get_record("BTEC_Students", STUDENT)

    assert raised.value.code == "invalid_code"


async def test_eleventh_refresh_in_ten_minutes_raises_rate_limited_without_retrying(
    make_client: ClientFactory, fake: FakeZoho, clock: ManualClock
) -> None:
    for _ in range(10):
        await make_client(store=InMemoryTokenStore()).get_record("BTEC_Students", STUDENT)

    with pytest.raises(ZohoRateLimited):
        await make_client(store=InMemoryTokenStore()).get_record("BTEC_Students", STUDENT)
    assert len(fake.refresh_calls) == 11

    clock.advance(timedelta(minutes=10))
    assert await make_client(store=InMemoryTokenStore()).get_record("BTEC_Students", STUDENT)


async def test_accounts_server_errors_are_retried_then_raise_unavailable(
    client: ZohoClient, fake: FakeZoho, sleeps: list[float]
) -> None:
    fake.fail_next(ATTEMPTS, status=503, target="accounts")

    with pytest.raises(ZohoUnavailable) as raised:
        await client.get_record("BTEC_Students", STUDENT)

    assert not isinstance(raised.value, ZohoRateLimited)
    assert len(fake.refresh_calls) == ATTEMPTS
    assert len(sleeps) == ATTEMPTS - 1


async def test_accounts_rate_limit_is_retried_after_the_delay_it_asks_for(
    client: ZohoClient, fake: FakeZoho, sleeps: list[float]
) -> None:
    fake.fail_next(1, status=429, retry_after=2, target="accounts")

    assert await client.get_record("BTEC_Students", STUDENT) is not None
    assert sleeps == [2]
    assert [call.status for call in fake.refresh_calls] == [429, 200]


async def test_accounts_network_error_then_success_gets_a_token(
    client: ZohoClient, fake: FakeZoho
) -> None:
    fake.fail_next_with_network_error(1)

    assert await client.get_record("BTEC_Students", STUDENT) is not None
    assert [call.status for call in fake.refresh_calls] == [0, 200]


async def test_refresh_answer_without_access_token_raises_auth_error(
    client: ZohoClient, fake: FakeZoho
) -> None:
    fake.respond_next(status=200, json_body={"api_domain": API_DOMAIN}, target="accounts")

    with pytest.raises(ZohoAuthError) as raised:
        await client.get_record("BTEC_Students", STUDENT)

    assert raised.value.code == "invalid_response"


@pytest.mark.parametrize(
    ("data_centre", "accounts"),
    [
        (DataCentre.US, "https://accounts.zoho.com"),
        (DataCentre.EU, "https://accounts.zoho.eu"),
        (DataCentre.IN, "https://accounts.zoho.in"),
        (DataCentre.AU, "https://accounts.zoho.com.au"),
        (DataCentre.CN, "https://accounts.zoho.com.cn"),
        (DataCentre.JP, "https://accounts.zoho.jp"),
        (DataCentre.CA, "https://accounts.zohocloud.ca"),
        (DataCentre.SA, "https://accounts.zoho.sa"),
        (DataCentre.UK, "https://accounts.zoho.uk"),
    ],
)
def test_each_data_centre_refreshes_at_its_own_accounts_server(
    data_centre: DataCentre, accounts: str
) -> None:
    credentials = ZohoCredentials(
        client_id="1000.ABC", client_secret="s", refresh_token="r", data_centre=data_centre
    )

    assert credentials.accounts_server == accounts
    assert set(ACCOUNTS_SERVERS) == set(DataCentre)


def test_accounts_url_override_wins_over_the_data_centre() -> None:
    credentials = ZohoCredentials.model_validate(
        {
            "client_id": "1000.ABC",
            "client_secret": "s",
            "refresh_token": "r",
            "data_centre": "eu",
            "accounts_url": ACCOUNTS_URL + "/",
        }
    )

    assert credentials.accounts_server == ACCOUNTS_URL


@pytest.mark.parametrize(
    "bad",
    [
        {"data_centre": "mars"},
        {"accounts_url": "accounts.zoho.com"},
        {"client_secret": ""},
        {"refresh_token": ""},
        {"client_id": ""},
    ],
)
def test_credentials_refuse_unusable_values(bad: dict[str, str]) -> None:
    values = {"client_id": "1000.ABC", "client_secret": "s", "refresh_token": "r", **bad}

    with pytest.raises(ValueError, match="validation error"):
        ZohoCredentials.model_validate(values)


def test_token_store_key_is_stable_and_differs_per_refresh_token() -> None:
    def key(refresh_token: str) -> str:
        return ZohoCredentials(
            client_id="1000.ABC", client_secret="s", refresh_token=refresh_token
        ).cache_key

    assert key("refresh-one") == key("refresh-one")
    assert key("refresh-one") != key("refresh-two")


def test_cached_token_is_usable_only_while_more_than_the_margin_is_left() -> None:
    expires = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)
    token = CachedToken(access_token="t", api_domain=API_DOMAIN, expires_at=expires)

    assert token.usable_at(expires - timedelta(minutes=6), timedelta(minutes=5))
    assert not token.usable_at(expires - timedelta(minutes=5), timedelta(minutes=5))
