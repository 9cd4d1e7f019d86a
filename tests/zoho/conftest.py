"""Fixtures for the Zoho client tests: a fake Zoho on a manual clock, and clients wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.fakes.zoho import FakeZoho, ManualClock, make_record
from zoho_moodle_sync.zoho import InMemoryTokenStore, RetryPolicy, ZohoClient, ZohoCredentials
from zoho_moodle_sync.zoho.oauth import TokenStore

ACCOUNTS_URL = "https://accounts.zoho.test"
API_DOMAIN = "https://www.zohoapis.test"
ATTEMPTS = 4

ClientFactory = Callable[..., ZohoClient]


def student(record_id: str, name: str, *, modified: datetime | None = None) -> dict[str, object]:
    """A BTEC_Students record shaped like the college org's."""
    first, _, last = name.partition(" ")
    return make_record(
        record_id,
        modified=modified,
        Name=name,
        First_Name=first,
        Last_Name=last,
        Academic_Email=f"{first.lower()}.{last.lower()}@college.example",
        Status="Active",
        Student_ID_Number=f"S{record_id[-5:]}",
        Moodle_User_ID=None,
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2025, 6, 2, 9, 0, tzinfo=UTC))


@pytest.fixture
def fake(clock: ManualClock) -> FakeZoho:
    fake = FakeZoho(
        clock=clock, api_domain=API_DOMAIN, modules=["Contacts", "BTEC_Students", "Products"]
    )
    fake.seed(
        {
            "BTEC_Students": [
                student("5725767141565000101", "Lina Haddad", modified=clock() - timedelta(days=3)),
                student("5725767141565000102", "Omar Nasser", modified=clock() - timedelta(days=2)),
                student("5725767141565000103", "Sara Khoury", modified=clock() - timedelta(days=1)),
            ]
        }
    )
    return fake


@pytest.fixture
async def http(fake: FakeZoho) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=fake.transport()) as client:
        yield client


@pytest.fixture
def credentials(fake: FakeZoho) -> ZohoCredentials:
    return ZohoCredentials(
        client_id=fake.client_id,
        client_secret=fake.client_secret,
        refresh_token=next(iter(fake.refresh_tokens)),
        accounts_url=ACCOUNTS_URL,
    )


@pytest.fixture
def store() -> InMemoryTokenStore:
    return InMemoryTokenStore()


@pytest.fixture
def sleeps() -> list[float]:
    """The pauses the clients asked for, in order; nothing really sleeps."""
    return []


@pytest.fixture
def make_client(
    http: httpx.AsyncClient,
    credentials: ZohoCredentials,
    clock: ManualClock,
    store: InMemoryTokenStore,
    sleeps: list[float],
) -> ClientFactory:
    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    default_http, default_credentials, default_store = http, credentials, store

    def make(
        *,
        credentials: ZohoCredentials | None = None,
        store: TokenStore | None = None,
        retry: RetryPolicy | None = None,
        api_version: str = "v8",
        http: httpx.AsyncClient | None = None,
    ) -> ZohoClient:
        return ZohoClient(
            http or default_http,
            credentials or default_credentials,
            token_store=store or default_store,
            api_version=api_version,
            retry=retry or RetryPolicy(attempts=ATTEMPTS, base_delay=0.0),
            clock=clock,
            sleep=record_sleep,
        )

    return make


@pytest.fixture
def client(make_client: ClientFactory) -> ZohoClient:
    return make_client()
