"""Async Zoho CRM REST client: records, deleted records and notification (watch) channels."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import ValidationError

from zoho_moodle_sync.errors import ZohoAuthError, ZohoRateLimited, ZohoRejected, ZohoUnavailable
from zoho_moodle_sync.zoho.models import (
    CachedToken,
    DeletedRecord,
    DeletedType,
    WatchSubscription,
    ZohoCredentials,
    ZohoRecord,
)
from zoho_moodle_sync.zoho.oauth import (
    DEFAULT_REFRESH_MARGIN,
    Clock,
    InMemoryTokenStore,
    TokenStore,
    ZohoOAuth,
    redact,
    utc_now,
)
from zoho_moodle_sync.zoho.retry import RetryPolicy, Sleep, call_with_retries, retry_after_seconds
from zoho_moodle_sync.zoho.wire import (
    MAX_PER_PAGE,
    Reply,
    check_channel_id,
    check_module,
    check_notify_url,
    check_per_page,
    check_record_id,
    check_watch_token,
    error_code,
    error_of,
    is_invalid_token,
    join_fields,
    json_object,
    modified_since_header,
    records_of,
)

logger = logging.getLogger("zoho_moodle_sync.zoho")

MAX_IDS_PER_CALL = 100
MAX_CHANNEL_LIFETIME = timedelta(days=7)

_API_VERSION = re.compile(r"v[0-9]{1,2}")
_WATCH_EVENT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}\.(create|edit|delete|all)")
_DELETED_TYPES = frozenset({"all", "recycle", "permanent"})
# Codes that mean the credentials themselves are wrong, not the request.
_AUTH_CODES = frozenset({"INVALID_TOKEN", "OAUTH_SCOPE_MISMATCH", "AUTHENTICATION_FAILURE"})


@dataclass(frozen=True)
class PageCursor:
    """Where a listing goes on: a page number (the first 2,000 records), then Zoho's page
    token. Kept between runs, it lets a killed import continue where it stopped."""

    page: int = 1
    token: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of a listing, and where the next one starts (None: this was the last)."""

    items: list[dict[str, Any]]
    number: int
    next: PageCursor | None


class ZohoClient:
    """Zoho CRM API calls for one org, over an injected `httpx.AsyncClient`.

    Tokens come from `token_store` (shared between processes when the store is). 429 and 5xx
    answers and network errors are retried per `retry`, then raised as ZohoRateLimited or
    ZohoUnavailable; other error answers raise ZohoRejected, and refused credentials raise
    ZohoAuthError. Invalid arguments raise ValueError before any request is sent.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        credentials: ZohoCredentials,
        *,
        token_store: TokenStore | None = None,
        api_version: str = "v8",
        retry: RetryPolicy | None = None,
        refresh_margin: timedelta = DEFAULT_REFRESH_MARGIN,
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
        requests_per_minute: float | None = None,
    ) -> None:
        """`requests_per_minute`: a pace this client keeps (Zoho counts API credits per org and
        limits concurrent calls); None for as fast as Zoho answers."""
        if not _API_VERSION.fullmatch(api_version):
            raise ValueError(f"api_version must look like 'v8', not {api_version!r}")
        self._http = http
        self._api_version = api_version
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._data_centre = credentials.data_centre
        self._watch_tokens: set[str] = set()
        self._interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next_request = 0.0
        self.oauth = ZohoOAuth(
            http,
            credentials,
            store=token_store if token_store is not None else InMemoryTokenStore(),
            retry=self._retry,
            refresh_margin=refresh_margin,
            clock=clock,
            sleep=sleep,
        )

    def __repr__(self) -> str:
        return f"ZohoClient(data_centre={self._data_centre.value!r}, api={self._api_version!r})"

    @property
    def api_version(self) -> str:
        return self._api_version

    async def get_record(
        self, module: str, record_id: str, *, fields: Sequence[str] | None = None
    ) -> ZohoRecord | None:
        """The record, or None when Zoho has no such record (204 or an empty `data`)."""
        check_module(module)
        check_record_id(record_id)
        params = {"fields": join_fields(fields)} if fields else None
        reply = await self._call("GET", f"/{module}/{record_id}", params=params)
        records = records_of(reply)
        return records[0] if records else None

    async def get_records(
        self, module: str, ids: Iterable[str], *, fields: Sequence[str] | None = None
    ) -> list[ZohoRecord]:
        """The records that exist among `ids`, fetched 100 ids per call; missing ids are skipped."""
        check_module(module)
        unique = list(dict.fromkeys(ids))
        for record_id in unique:
            check_record_id(record_id)
        found: list[ZohoRecord] = []
        for start in range(0, len(unique), MAX_IDS_PER_CALL):
            params = {"ids": ",".join(unique[start : start + MAX_IDS_PER_CALL])}
            if fields:
                params["fields"] = join_fields(fields)
            found.extend(records_of(await self._call("GET", f"/{module}", params=params)))
        return found

    async def count(self, module: str) -> int | None:
        """How many records `module` holds (`/actions/count`), or None if the answer has no
        count: for a progress bar's estimate, never for a decision."""
        check_module(module)
        reply = await self._call("GET", f"/{module}/actions/count")
        count = reply.body.get("count") if reply.body else None
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    async def iter_records(
        self,
        module: str,
        *,
        fields: Sequence[str],
        modified_since: datetime | None = None,
        per_page: int = MAX_PER_PAGE,
    ) -> AsyncIterator[ZohoRecord]:
        """Every record of `module` (modified after `modified_since`, if given), page by page."""
        pages = self.record_pages(
            module, fields=fields, modified_since=modified_since, per_page=per_page
        )
        async for page in pages:
            for record in page.items:
                yield record

    async def iter_deleted(
        self,
        module: str,
        *,
        type: DeletedType = "all",
        modified_since: datetime | None = None,
        per_page: int = MAX_PER_PAGE,
    ) -> AsyncIterator[DeletedRecord]:
        """Deleted records of `module`: `recycle` (in the recycle bin), `permanent`, or `all`."""
        pages = self.deleted_pages(
            module, type=type, modified_since=modified_since, per_page=per_page
        )
        async for page in pages:
            for item in deleted_entries(page):
                yield item

    async def enable_watch(
        self,
        *,
        channel_id: int | str,
        events: Sequence[str],
        notify_url: str,
        token: str,
        expiry: datetime | timedelta,
        return_affected_field_values: bool = False,
        notify_on_related_action: bool | None = None,
    ) -> list[WatchSubscription]:
        """Subscribe `notify_url` to `events` (`"Module.create|edit|delete|all"`) until `expiry`.

        Zoho silently shortens an expiry beyond one week to one hour, so such an expiry is
        refused here. `token` (at most 50 characters) comes back in every notification.
        """
        item = self._watch_item(channel_id, events, expiry)
        item["notify_url"] = check_notify_url(notify_url)
        item["token"] = self._watch_token(token)
        item["return_affected_field_values"] = return_affected_field_values
        if notify_on_related_action is not None:
            item["notify_on_related_action"] = notify_on_related_action
        reply = await self._call("POST", "/actions/watch", json_body={"watch": [item]})
        return self._subscriptions_of(reply)

    async def renew_watch(
        self,
        *,
        channel_id: int | str,
        events: Sequence[str],
        expiry: datetime | timedelta,
        token: str | None = None,
        notify_url: str | None = None,
    ) -> list[WatchSubscription]:
        """Move an enabled channel's expiry (PATCH: fields left out keep their values)."""
        item = self._watch_item(channel_id, events, expiry)
        if token is not None:
            item["token"] = self._watch_token(token)
        if notify_url is not None:
            item["notify_url"] = check_notify_url(notify_url)
        reply = await self._call("PATCH", "/actions/watch", json_body={"watch": [item]})
        return self._subscriptions_of(reply)

    def _watch_token(self, token: str) -> str:
        self._watch_tokens.add(check_watch_token(token))
        return token

    def _watch_item(
        self, channel_id: int | str, events: Sequence[str], expiry: datetime | timedelta
    ) -> dict[str, Any]:
        if isinstance(events, str) or not events:
            raise ValueError("events must be a non-empty list such as ['Contacts.all']")
        for event in events:
            if not _WATCH_EVENT.fullmatch(event):
                raise ValueError(
                    f"watch event {event!r} must look like 'Module.create', '.edit', "
                    "'.delete' or '.all'"
                )
        return {
            "channel_id": check_channel_id(channel_id),
            "events": list(events),
            "channel_expiry": self._channel_expiry(expiry),
        }

    def _channel_expiry(self, expiry: datetime | timedelta) -> str:
        now = self._clock()
        if isinstance(expiry, timedelta):
            expiry = now + expiry
        if expiry.tzinfo is None:
            raise ValueError("expiry must be timezone-aware")
        if expiry <= now:
            raise ValueError("expiry must be in the future")
        if expiry > now + MAX_CHANNEL_LIFETIME:
            raise ValueError(
                "expiry must be at most 7 days away: Zoho would silently cut a longer one to 1 hour"
            )
        return expiry.isoformat(timespec="seconds")

    async def record_pages(
        self,
        module: str,
        *,
        fields: Sequence[str],
        modified_since: datetime | None = None,
        per_page: int = MAX_PER_PAGE,
        start: PageCursor | None = None,
    ) -> AsyncIterator[Page]:
        """The records of `module` (modified after `modified_since`, if given), page by page
        from `start`, each page with the cursor of the next."""
        check_module(module)
        if not fields:
            raise ValueError("fields must name at least one field")
        check_per_page(per_page)
        headers = modified_since_header(modified_since)
        params = {"fields": join_fields(fields)}
        async for page in self._pages(f"/{module}", params, headers, per_page, start):
            yield page

    async def deleted_pages(
        self,
        module: str,
        *,
        type: DeletedType = "all",
        modified_since: datetime | None = None,
        per_page: int = MAX_PER_PAGE,
        start: PageCursor | None = None,
    ) -> AsyncIterator[Page]:
        """The entries of `GET /{module}/deleted`, page by page (see `iter_deleted`)."""
        check_module(module)
        if type not in _DELETED_TYPES:
            raise ValueError(f"type must be one of all, recycle, permanent, not {type!r}")
        check_per_page(per_page)
        headers = modified_since_header(modified_since)
        path = f"/{module}/deleted"
        async for page in self._pages(path, {"type": type}, headers, per_page, start):
            yield page

    async def _pages(
        self,
        path: str,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        per_page: int,
        start: PageCursor | None = None,
    ) -> AsyncIterator[Page]:
        # `page` only reaches the first 2,000 records; `next_page_token` goes on from there.
        cursor = start or PageCursor()
        while True:
            query = {**params, "per_page": str(per_page)}
            if cursor.token is None:
                query["page"] = str(cursor.page)
            else:
                query["page_token"] = cursor.token
            reply = await self._call("GET", path, params=query, headers=headers)
            records = records_of(reply)
            if not records:
                return
            info = reply.body.get("info") if reply.body else None
            following: PageCursor | None = None
            if isinstance(info, dict) and info.get("more_records") is True:
                next_token = info.get("next_page_token")
                if isinstance(next_token, str) and next_token:
                    following = PageCursor(cursor.page + 1, next_token)
                elif cursor.token is not None:
                    raise ZohoRejected(
                        code="UNEXPECTED_RESPONSE",
                        message=f"more_records without a next_page_token (GET {path})",
                        status_code=reply.status,
                    )
                else:
                    following = PageCursor(cursor.page + 1)
            yield Page([dict(record) for record in records], cursor.page, following)
            if following is None:
                return
            cursor = following

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        token = await self.oauth.token()
        reply = await self._send_with_retries(token, method, path, params, json_body, headers)
        if is_invalid_token(reply):
            # The token may have been revoked or replaced early: one fresh token, one more try.
            token = await self.oauth.replace_rejected(token)
            reply = await self._send_with_retries(token, method, path, params, json_body, headers)
        if reply.status >= 400:
            raise self._rejected(method, path, reply)
        return reply

    async def _send_with_retries(
        self,
        token: CachedToken,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        json_body: Any,
        headers: Mapping[str, str] | None,
    ) -> Reply:
        async def send() -> Reply:
            await self._keep_pace()
            return await self._send(token, method, path, params, json_body, headers)

        return await call_with_retries(
            send, policy=self._retry, sleep=self._sleep, what=f"Zoho {method} {path}"
        )

    async def _keep_pace(self) -> None:
        """Wait until the next request is allowed by the client's pace."""
        if not self._interval:
            return
        loop = asyncio.get_running_loop()
        wait = self._next_request - loop.time()
        if wait > 0:
            await self._sleep(wait)
        self._next_request = max(loop.time(), self._next_request) + self._interval

    async def _send(
        self,
        token: CachedToken,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        json_body: Any,
        headers: Mapping[str, str] | None,
    ) -> Reply:
        url = f"{token.api_domain}/crm/{self._api_version}{path}"
        request_headers = {
            **(headers or {}),
            "Authorization": f"Zoho-oauthtoken {token.access_token}",
        }
        try:
            response = await self._http.request(
                method, url, params=params, json=json_body, headers=request_headers
            )
        except httpx.TransportError as exc:
            raise ZohoUnavailable(f"Zoho {method} {path} failed: {type(exc).__name__}") from exc
        status = response.status_code
        logger.debug("Zoho %s %s -> HTTP %d", method, path, status)
        if status in (204, 304):
            return Reply(status, None)
        body = json_object(response)
        if status == 429 or (status >= 400 and error_code(body) == "TOO_MANY_REQUESTS"):
            raise ZohoRateLimited(
                f"Zoho {method} {path} answered HTTP {status} TOO_MANY_REQUESTS",
                retry_after=retry_after_seconds(response),
            )
        if status >= 500:
            raise ZohoUnavailable(f"Zoho {method} {path} answered HTTP {status}")
        if status < 400 and body is None:
            # Proxies and maintenance pages answer 200 with HTML; that passes like a 5xx.
            raise ZohoUnavailable(f"Zoho {method} {path} answered HTTP {status} without JSON")
        return Reply(status, body)

    def _rejected(self, method: str, path: str, reply: Reply) -> ZohoRejected:
        code, message = error_of(reply.body)
        code = self._redact(code or f"HTTP_{reply.status}")
        text = self._redact(f"{message or 'no error message'} ({method} {path})")
        error_class = ZohoAuthError if code in _AUTH_CODES else ZohoRejected
        return error_class(code=code, message=text, status_code=reply.status)

    def _redact(self, text: str) -> str:
        return redact(self.oauth.redact(text), self._watch_tokens)

    def _subscriptions_of(self, reply: Reply) -> list[WatchSubscription]:
        items = reply.body.get("watch") if reply.body else None
        if not isinstance(items, list) or not items:
            raise ZohoRejected(
                code="UNEXPECTED_RESPONSE",
                message="the watch answer has no `watch` list",
                status_code=reply.status,
            )
        subscriptions: list[WatchSubscription] = []
        for item in items:
            if not isinstance(item, dict) or item.get("code") != "SUCCESS":
                code, message = error_of({"watch": [item]})
                raise ZohoRejected(
                    code=self._redact(code or "UNEXPECTED_RESPONSE"),
                    message=self._redact(message or "the watch answer is not a success"),
                    status_code=reply.status,
                )
            details = item.get("details")
            events = details.get("events") if isinstance(details, dict) else None
            try:
                subscriptions.extend(WatchSubscription.model_validate(e) for e in events or [])
            except ValidationError as exc:
                raise ZohoRejected(
                    code="UNEXPECTED_RESPONSE",
                    message=f"a watch event lacks {exc.error_count()} field(s)",
                    status_code=reply.status,
                ) from None
        return subscriptions


def deleted_entries(page: Page) -> list[DeletedRecord]:
    """A page of `/deleted`, read; an entry missing what every entry has is a refusal."""
    try:
        return [DeletedRecord.model_validate(item) for item in page.items]
    except ValidationError as exc:
        raise ZohoRejected(
            code="UNEXPECTED_RESPONSE",
            message=f"a deleted-record entry lacks {exc.error_count()} field(s)",
            status_code=200,
        ) from None
