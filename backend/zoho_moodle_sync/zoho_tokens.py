"""A Zoho TokenStore in the database: every API process and worker on every host reuses one
access token per OAuth client, and only one of them refreshes it at a time (PostgreSQL advisory
lock; on SQLite, one process owns the database)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pydantic import SecretStr
from sqlalchemy import text

from zoho_moodle_sync.db.security import ZohoToken
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.sealing import MIN_SECRET_KEY, seal, unseal
from zoho_moodle_sync.zoho import CachedToken, InMemoryTokenStore, TokenStore

_LOCKS: dict[tuple[int, str], asyncio.Lock] = {}
"""One lock per token key in this process (and event loop), whatever store instance asks."""


class DatabaseTokenStore:
    def __init__(self, db: Database, secret_key: SecretStr) -> None:
        self._db = db
        self._secret_key = secret_key

    async def get(self, key: str) -> CachedToken | None:
        def read() -> CachedToken | None:
            with self._db.sessions() as session:
                row = session.get(ZohoToken, key)
                if row is None:
                    return None
                token = unseal(row.sealed_token, self._secret_key).get_secret_value()
                return CachedToken(token, row.api_domain, row.expires_at)

        return await asyncio.to_thread(read)

    async def put(self, key: str, token: CachedToken) -> None:
        def write() -> None:
            with self._db.sessions.begin() as session:
                row = session.get(ZohoToken, key) or ZohoToken(key=key)
                row.sealed_token = seal(token.access_token, self._secret_key)
                row.api_domain = token.api_domain
                row.expires_at = token.expires_at
                session.add(row)

        await asyncio.to_thread(write)

    @asynccontextmanager
    async def refresh_lock(self, key: str) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        async with _LOCKS.setdefault((id(loop), key), asyncio.Lock()):
            if self._db.is_sqlite:
                yield
                return
            lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
            connection = await asyncio.to_thread(self._db.engine.connect)
            try:
                await asyncio.to_thread(
                    connection.execute, text("SELECT pg_advisory_lock(:id)"), {"id": lock_id}
                )
                try:
                    yield
                finally:
                    await asyncio.to_thread(
                        connection.execute, text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id}
                    )
            finally:
                await asyncio.to_thread(connection.close)


def token_store_for(db: Database, secret_key: SecretStr) -> TokenStore:
    """The shared store when SECRET_KEY can seal tokens; else one per process (tokens are never
    stored in the clear)."""
    if len(secret_key.get_secret_value()) >= MIN_SECRET_KEY:
        return DatabaseTokenStore(db, secret_key)
    return _PROCESS_TOKENS


_PROCESS_TOKENS = InMemoryTokenStore()
