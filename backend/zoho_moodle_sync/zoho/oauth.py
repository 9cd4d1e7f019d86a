"""Zoho OAuth refresh-token grant, with the access token cached in a store shared by processes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from zoho_moodle_sync.errors import ZohoAuthError, ZohoRateLimited, ZohoUnavailable
from zoho_moodle_sync.zoho.models import CachedToken, ZohoCredentials
from zoho_moodle_sync.zoho.retry import (
    RetryPolicy,
    Sleep,
    call_with_retries,
    retry_after_seconds,
)

Clock = Callable[[], datetime]

logger = logging.getLogger("zoho_moodle_sync.zoho")

DEFAULT_REFRESH_MARGIN = timedelta(minutes=5)
_DEFAULT_EXPIRES_IN = 3600
_MAX_MESSAGE = 300
_REMEMBERED_TOKENS = 8


def utc_now() -> datetime:
    return datetime.now(UTC)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced, cut to a loggable length."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


class TokenStore(Protocol):
    """Where access tokens live between calls, and between processes for a shared store.

    Zoho allows only 10 refreshes per refresh token in 10 minutes, so every worker must reuse
    one token. `refresh_lock` must exclude other callers (in other processes too, for a shared
    store) until the holder has put the new token.
    """

    async def get(self, key: str) -> CachedToken | None: ...

    async def put(self, key: str, token: CachedToken) -> None: ...

    def refresh_lock(self, key: str) -> AbstractAsyncContextManager[None]: ...


class InMemoryTokenStore:
    """A TokenStore for one process (one event loop)."""

    def __init__(self) -> None:
        self._tokens: dict[str, CachedToken] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str) -> CachedToken | None:
        return self._tokens.get(key)

    async def put(self, key: str, token: CachedToken) -> None:
        self._tokens[key] = token

    @asynccontextmanager
    async def refresh_lock(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            yield


class ZohoOAuth:
    """Hands out a usable access token, refreshing it at most once per expiry across callers."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        credentials: ZohoCredentials,
        *,
        store: TokenStore,
        retry: RetryPolicy,
        refresh_margin: timedelta = DEFAULT_REFRESH_MARGIN,
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._http = http
        self._credentials = credentials
        self._store = store
        self._retry = retry
        self._margin = refresh_margin
        self._clock = clock
        self._sleep = sleep
        # Only recent tokens can turn up in an answer; older ones need not be searched for.
        self._seen_access_tokens: deque[str] = deque(maxlen=_REMEMBERED_TOKENS)

    @property
    def cache_key(self) -> str:
        return self._credentials.cache_key

    def redact(self, text: str) -> str:
        """`text` without the client secret, the refresh token or any access token seen."""
        credentials = self._credentials
        secrets = [
            credentials.client_secret.get_secret_value(),
            credentials.refresh_token.get_secret_value(),
            *self._seen_access_tokens,
        ]
        return redact(text, secrets)

    async def token(self) -> CachedToken:
        """A token with more than the refresh margin left, from the store or freshly refreshed."""
        key = self.cache_key
        cached = await self._store.get(key)
        if cached is not None and self._usable(cached):
            return self._remember(cached)
        async with self._store.refresh_lock(key):
            # Whoever held the lock before us may have refreshed already.
            cached = await self._store.get(key)
            if cached is not None and self._usable(cached):
                return self._remember(cached)
            return await self._refresh_and_store()

    async def replace_rejected(self, rejected: CachedToken) -> CachedToken:
        """A token other than `rejected`, which Zoho refused although it had not expired yet."""
        key = self.cache_key
        async with self._store.refresh_lock(key):
            cached = await self._store.get(key)
            if (
                cached is not None
                and cached.access_token != rejected.access_token
                and self._usable(cached)
            ):
                return self._remember(cached)
            return await self._refresh_and_store()

    def _usable(self, token: CachedToken) -> bool:
        return token.usable_at(self._clock(), self._margin)

    def _remember(self, token: CachedToken) -> CachedToken:
        if token.access_token not in self._seen_access_tokens:
            self._seen_access_tokens.append(token.access_token)
        return token

    async def _refresh_and_store(self) -> CachedToken:
        token = await self._refresh()
        await self._store.put(self.cache_key, token)
        logger.info(
            "refreshed the Zoho access token for %s (valid until %s, API %s)",
            self.cache_key,
            token.expires_at.isoformat(timespec="seconds"),
            token.api_domain,
        )
        return token

    async def _refresh(self) -> CachedToken:
        status, body = await call_with_retries(
            self._post_refresh_grant,
            policy=self._retry,
            sleep=self._sleep,
            what="Zoho token refresh",
        )
        error = body.get("error")
        if error is not None:
            raise self._refresh_refused(status, str(error), body.get("error_description"))
        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise ZohoAuthError(
                code="invalid_response",
                message="the token response has no access_token",
                status_code=status,
            )
        expires_in = body.get("expires_in", _DEFAULT_EXPIRES_IN)
        if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
            expires_in = _DEFAULT_EXPIRES_IN
        api_domain = body.get("api_domain")
        if not isinstance(api_domain, str) or not api_domain.startswith(("https://", "http://")):
            api_domain = self._credentials.default_api_domain
        token = CachedToken(
            access_token=access_token,
            api_domain=api_domain.rstrip("/"),
            expires_at=self._clock() + timedelta(seconds=float(expires_in)),
        )
        return self._remember(token)

    async def _post_refresh_grant(self) -> tuple[int, dict[str, Any]]:
        credentials = self._credentials
        # A form body, not Zoho's documented query string: httpx logs request URLs.
        form = {
            "grant_type": "refresh_token",
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret.get_secret_value(),
            "refresh_token": credentials.refresh_token.get_secret_value(),
        }
        try:
            response = await self._http.post(
                f"{credentials.accounts_server}/oauth/v2/token", data=form
            )
        except httpx.TransportError as exc:
            raise ZohoUnavailable(
                f"Zoho accounts could not be reached ({type(exc).__name__})"
            ) from exc
        status = response.status_code
        if status == 429:
            raise ZohoRateLimited(
                "Zoho accounts answered HTTP 429", retry_after=retry_after_seconds(response)
            )
        if status >= 500:
            raise ZohoUnavailable(f"Zoho accounts answered HTTP {status}")
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            raise ZohoUnavailable(f"Zoho accounts answered HTTP {status} without a JSON object")
        return status, body

    def _refresh_refused(
        self, status: int, error: str, description: object
    ) -> ZohoAuthError | ZohoRateLimited:
        detail = self.redact(str(description)) if description else ""
        code = self.redact(error)
        # Zoho blocks a refresh token for the rest of a 10-minute window after 10 refreshes,
        # so retrying within this call cannot help; the job queue retries later.
        if code.lower() == "access denied" or "too many requests" in detail.lower():
            return ZohoRateLimited(f"Zoho accounts refused the refresh: {code}: {detail}")
        return ZohoAuthError(code=code, message=detail or code, status_code=status)
