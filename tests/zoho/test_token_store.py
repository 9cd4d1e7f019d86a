"""The database token store: one Zoho access token shared by every process, never in clear."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
from pydantic import SecretStr
from sqlalchemy import text

from tests.fakes.zoho import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
    FakeZoho,
)
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.zoho import CachedToken, InMemoryTokenStore, ZohoClient, ZohoCredentials
from zoho_moodle_sync.zoho_tokens import DatabaseTokenStore, token_store_for

KEY = SecretStr("a-secret-key-for-sealing-tokens")
CREDENTIALS = ZohoCredentials(
    client_id=DEFAULT_CLIENT_ID,
    client_secret=SecretStr(DEFAULT_CLIENT_SECRET),
    refresh_token=SecretStr(DEFAULT_REFRESH_TOKEN),
)


def test_a_stored_token_comes_back_and_is_sealed_in_the_database(db: Database) -> None:
    store = DatabaseTokenStore(db, KEY)
    token = CachedToken("1000.the-access-token", "https://www.zohoapis.com", datetime.now(UTC))

    asyncio.run(store.put("client", token))
    again = asyncio.run(store.get("client"))

    assert again == token
    with db.engine.connect() as connection:
        stored = connection.execute(text("SELECT sealed_token FROM zoho_tokens")).scalar_one()
    assert "the-access-token" not in stored
    assert asyncio.run(store.get("another client")) is None


def test_processes_sharing_the_database_refresh_the_token_once(db: Database) -> None:
    fake = FakeZoho(modules=["BTEC_Students"])
    fake.put_record("BTEC_Students", {"id": "5725767000000000001", "Name": "A1"})

    async def one_process() -> str | None:
        # Each "process" has its own HTTP client, client object and store instance.
        async with httpx.AsyncClient(transport=fake.transport()) as http:
            client = ZohoClient(http, CREDENTIALS, token_store=DatabaseTokenStore(db, KEY))
            record = await client.get_record("BTEC_Students", "5725767000000000001")
            return None if record is None else str(record["Name"])

    async def five_processes() -> list[str | None]:
        return await asyncio.gather(*(one_process() for _ in range(5)))

    assert asyncio.run(five_processes()) == ["A1"] * 5
    assert fake.refresh_count == 1


def test_without_a_secret_key_tokens_stay_in_the_process(db: Database) -> None:
    assert isinstance(token_store_for(db, SecretStr("")), InMemoryTokenStore)
    assert isinstance(token_store_for(db, KEY), DatabaseTokenStore)
