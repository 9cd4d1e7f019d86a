"""A fake Zoho (accounts server and CRM REST API) as an ASGI app, in-process or as a local server.

Run it with `python -m tests.fakes.zoho --port 8090 [--seed records.json]`.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

Clock = Callable[[], datetime]
Target = Literal["api", "accounts"]
PageTokens = Literal["always", "beyond_limit"]

DEFAULT_CLIENT_ID = "1000.FAKECLIENTID"
DEFAULT_CLIENT_SECRET = "fake-client-secret-0123456789"
DEFAULT_REFRESH_TOKEN = "1000.fake-refresh-token.0123456789abcdef"
PAGE_LIMIT = 2000
MAX_PER_PAGE = 200
MAX_IDS = 100
REFRESH_LIMIT = 10
REFRESH_WINDOW = timedelta(minutes=10)
MAX_CHANNEL_LIFETIME = timedelta(days=7)
DEFAULT_CHANNEL_LIFETIME = timedelta(hours=1)
MAX_WATCH_TOKEN = 50
PAGE_TOKEN_LIFETIME = timedelta(days=1)

_VERSION = re.compile(r"v[2-8]")
_EVENT = re.compile(r"([A-Za-z][A-Za-z0-9_]*)\.(create|edit|delete|all)")
_DELETED_TYPES = ("all", "recycle", "permanent")
_THROTTLED = {
    "error_description": "You have made too many requests continuously. "
    "Please try again after some time.",
    "error": "Access Denied",
    "status": "failure",
}
_FAKE_ADMIN = {"name": "Zoho Admin", "id": "5725767000000000001", "email": "admin@college.example"}


class ManualClock:
    """A clock that moves only when told; share one between the fake and the client."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2025, 6, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass(frozen=True)
class FakeCall:
    """One request the fake received; status 0 marks a simulated network failure."""

    method: str
    host: str
    path: str
    query: dict[str, str]
    status: int
    access_token: str | None = None

    @property
    def target(self) -> Target:
        return "accounts" if self.path.startswith("/oauth/") else "api"


@dataclass(frozen=True)
class CannedResponse:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass
class WatchChannel:
    channel_id: str
    events: list[str]
    notify_url: str
    token: str | None
    expiry: datetime
    return_affected_field_values: bool = False
    notify_on_related_action: bool = True


@dataclass(frozen=True)
class _Cursor:
    module: str
    offset: int
    page: int
    fields: tuple[str, ...]
    since: datetime | None
    expires_at: datetime


@dataclass
class _WatchError(Exception):
    code: str
    details: dict[str, Any] = field(default_factory=dict)
    message: str = "invalid data"


def make_record(
    record_id: str,
    *,
    modified: datetime | None = None,
    owner: Mapping[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A record in the REST API's shape: system fields, `$` meta keys, then `fields`."""
    when = _iso(modified or datetime(2025, 5, 10, 1, 47, tzinfo=UTC))
    user = dict(owner or _FAKE_ADMIN)
    return {
        "Owner": user,
        **fields,
        "id": record_id,
        "Created_By": user,
        "Modified_By": user,
        "Created_Time": when,
        "Modified_Time": when,
        "Last_Activity_Time": when,
        "Tag": [],
        "Locked__s": False,
        "$approved": True,
        "$editable": True,
        "$in_merge": False,
        "$process_flow": False,
        "$locked_for_me": False,
        "$approval_state": "approved",
        "$state": "save",
        "$review": None,
        "$field_states": None,
        "$approval": {
            "delegate": False,
            "takeover": False,
            "approve": False,
            "reject": False,
            "resubmit": False,
        },
    }


def zoho_error(
    status: int, code: str, message: str, details: Mapping[str, Any] | None = None
) -> JSONResponse:
    """An error in the CRM API's envelope."""
    body = {"code": code, "details": dict(details or {}), "message": message, "status": "error"}
    return JSONResponse(body, status_code=status)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


class FakeZoho:
    """Zoho accounts and CRM API in one ASGI app, with knobs for tests.

    Records are plain dicts in the API's shape, kept per module in insertion order.
    """

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        refresh_token: str = DEFAULT_REFRESH_TOKEN,
        token_lifetime: timedelta = timedelta(hours=1),
        api_domain: str | None = None,
        clock: Clock | None = None,
        page_tokens: PageTokens = "always",
        refresh_limit: int = REFRESH_LIMIT,
        modules: Iterable[str] = (),
        latency: float = 0.0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_tokens: set[str] = {refresh_token}
        self.token_lifetime = token_lifetime
        self.api_domain = api_domain
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.page_tokens: PageTokens = page_tokens
        self.refresh_limit = refresh_limit
        self.latency = latency
        self.calls: list[FakeCall] = []
        self.channels: dict[str, WatchChannel] = {}
        self.issued_tokens: list[str] = []
        self._access_tokens: dict[str, datetime] = {}
        self._refreshes: dict[str, list[datetime]] = {}
        self._records: dict[str, dict[str, dict[str, Any]]] = {}
        self._deleted: dict[str, list[dict[str, Any]]] = {}
        self._module_ids: dict[str, str] = {}
        self._cursors: dict[str, _Cursor] = {}
        self._canned: dict[Target, list[CannedResponse]] = {"api": [], "accounts": []}
        self._network_failures: list[type[httpx.TransportError]] = []
        for module in modules:
            self.add_module(module)
        self._router = Starlette(
            routes=[
                Route("/oauth/v2/token", self._token, methods=["POST"]),
                Route("/crm/{version}/actions/watch", self._watch, methods=["POST", "PATCH"]),
                Route("/crm/{version}/{module}/deleted", self._list_deleted, methods=["GET"]),
                Route("/crm/{version}/{module}/actions/count", self._count, methods=["GET"]),
                Route("/crm/{version}/{module}/{record_id}", self._get_one, methods=["GET"]),
                Route("/crm/{version}/{module}", self._list, methods=["GET"]),
            ],
            exception_handlers={404: self._no_route, 405: self._no_route},
        )

    # ---- test controls -------------------------------------------------------------------

    @property
    def refresh_count(self) -> int:
        """Access tokens issued so far."""
        return len(self.issued_tokens)

    @property
    def api_calls(self) -> list[FakeCall]:
        return [call for call in self.calls if call.target == "api"]

    @property
    def refresh_calls(self) -> list[FakeCall]:
        return [call for call in self.calls if call.target == "accounts"]

    def add_module(self, module: str) -> None:
        if module not in self._records:
            self._records[module] = {}
            self._deleted[module] = []
            self._module_ids[module] = str(5725767000000002000 + len(self._module_ids))

    def seed(self, modules: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Add records by module, e.g. `{"Contacts": [{"id": "1", ...}]}`."""
        for module, records in modules.items():
            self.add_module(module)
            for record in records:
                self.put_record(module, record)

    def put_record(self, module: str, record: Mapping[str, Any]) -> None:
        """Insert or replace a record (it must carry its `id`)."""
        self.add_module(module)
        self._records[module][str(record["id"])] = copy.deepcopy(dict(record))

    def update_record(self, module: str, record_id: str, changes: Mapping[str, Any]) -> None:
        """Change fields as a CRM user would: `Modified_Time` moves to the clock's now."""
        record = self._records[module][record_id]
        record.update(copy.deepcopy(dict(changes)))
        record["Modified_Time"] = _iso(self.clock())

    def delete_record(
        self,
        module: str,
        record_id: str,
        *,
        permanent: bool = False,
        deleted_by: Mapping[str, Any] | None = None,
    ) -> None:
        """Move a record to the recycle bin (or delete it for good) so `/deleted` lists it."""
        record = self._records[module].pop(record_id)
        self._deleted[module].append(
            {
                "id": record_id,
                "display_name": _display_name(record),
                "type": "permanent" if permanent else "recycle",
                "deleted_by": dict(deleted_by or _FAKE_ADMIN),
                "created_by": record.get("Created_By"),
                "deleted_time": _iso(self.clock()),
            }
        )

    def records(self, module: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(record) for record in self._records.get(module, {}).values()]

    def expire_access_tokens(self) -> None:
        """Make every issued access token invalid, as a revocation or an early expiry would."""
        self._access_tokens.clear()

    def revoke_refresh_token(self, refresh_token: str | None = None) -> None:
        """Revoke one refresh token (all of them when none is named)."""
        if refresh_token is None:
            self.refresh_tokens.clear()
        else:
            self.refresh_tokens.discard(refresh_token)

    def respond_next(
        self,
        count: int = 1,
        *,
        status: int,
        json_body: Any = None,
        text: str | None = None,
        headers: Mapping[str, str] | None = None,
        target: Target = "api",
    ) -> None:
        """Answer the next `count` calls to `target` with this response instead of the real one."""
        if text is not None:
            body = text.encode()
            content_type = "text/html; charset=utf-8"
        elif json_body is not None:
            body = json.dumps(json_body).encode()
            content_type = "application/json;charset=UTF-8"
        else:
            body, content_type = b"", ""
        all_headers = {"content-type": content_type} if content_type else {}
        all_headers.update(headers or {})
        canned = CannedResponse(status, body, all_headers)
        self._canned[target].extend([canned] * count)

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 429,
        retry_after: float | None = None,
        target: Target = "api",
    ) -> None:
        """Fail the next `count` calls to `target` the way Zoho fails with `status`."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        if status == 429:
            body: dict[str, Any] = {
                "code": "TOO_MANY_REQUESTS",
                "details": {},
                "message": "too many requests",
                "status": "error",
            }
        elif status == 401:
            body = {
                "code": "INVALID_TOKEN",
                "details": {},
                "message": "invalid oauth token",
                "status": "error",
            }
        elif status == 500 and target == "api":
            body = {
                "code": "INTERNAL_ERROR",
                "details": {},
                "message": "Internal Server Error",
                "status": "error",
            }
        else:
            # Gateways in front of Zoho answer 502/503/504 with HTML.
            html = f"<html><body><h1>{status} Service Unavailable</h1></body></html>"
            self.respond_next(count, status=status, text=html, headers=headers, target=target)
            return
        self.respond_next(count, status=status, json_body=body, headers=headers, target=target)

    def fail_next_with_network_error(self, count: int = 1, *, timeout: bool = False) -> None:
        """Make the next `count` requests through `transport()` fail before reaching the app."""
        error = httpx.ReadTimeout if timeout else httpx.ConnectError
        self._network_failures.extend([error] * count)

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport into this app that can also simulate network failures."""
        return _FakeTransport(self)

    # ---- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._router(scope, receive, send)
            return
        path: str = scope["path"]
        target: Target = "accounts" if path.startswith("/oauth/") else "api"
        statuses: list[int] = []

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(int(message["status"]))
            await send(message)

        canned = self._canned[target]
        if canned:
            reply = canned.pop(0)
            response = Response(reply.body, status_code=reply.status, headers=reply.headers)
            await response(scope, receive, send_and_note)
        else:
            await self._router(scope, receive, send_and_note)
        headers = dict(scope.get("headers") or [])
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        self.calls.append(
            FakeCall(
                method=scope["method"],
                host=headers.get(b"host", b"").decode("latin-1"),
                path=path,
                query=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))),
                status=statuses[0] if statuses else 0,
                access_token=token if scheme == "Zoho-oauthtoken" and token else None,
            )
        )

    def note_network_failure(self, request: httpx.Request) -> None:
        self.calls.append(
            FakeCall(
                method=request.method,
                host=request.url.host,
                path=request.url.path,
                query=dict(request.url.params),
                status=0,
            )
        )

    def pop_network_failure(self) -> type[httpx.TransportError] | None:
        return self._network_failures.pop(0) if self._network_failures else None

    # ---- accounts --------------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        values: dict[str, str] = dict(request.query_params)
        form = await request.form()
        values.update({key: value for key, value in form.items() if isinstance(value, str)})
        # Zoho accounts answers most refusals with HTTP 200 and an `error` key.
        if values.get("grant_type") != "refresh_token":
            return JSONResponse({"error": "unsupported_grant_type"})
        if (
            values.get("client_id") != self.client_id
            or values.get("client_secret") != self.client_secret
        ):
            return JSONResponse({"error": "invalid_client"})
        refresh_token = values.get("refresh_token", "")
        if refresh_token not in self.refresh_tokens:
            return JSONResponse({"error": "invalid_code"})
        now = self.clock()
        recent = [t for t in self._refreshes.get(refresh_token, []) if now - t < REFRESH_WINDOW]
        if len(recent) >= self.refresh_limit:
            self._refreshes[refresh_token] = recent
            return JSONResponse(_THROTTLED, status_code=400)
        self._refreshes[refresh_token] = [*recent, now]
        access_token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        self._access_tokens[access_token] = now + self.token_lifetime
        self.issued_tokens.append(access_token)
        return JSONResponse(
            {
                "access_token": access_token,
                "scope": "ZohoCRM.modules.ALL ZohoCRM.notifications.ALL",
                "api_domain": self._api_domain(request),
                "token_type": "Bearer",
                "expires_in": int(self.token_lifetime.total_seconds()),
            }
        )

    # ---- CRM API ---------------------------------------------------------------------------

    async def _no_route(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        return zoho_error(
            status,
            "INVALID_URL_PATTERN",
            "Please check if the URL trying to access is a correct one",
        )

    def _refuse(self, request: Request, *, module: bool = True) -> Response | None:
        """The error answer for a bad version, credential or module; None when all are fine."""
        if not _VERSION.fullmatch(request.path_params["version"]):
            return zoho_error(
                404,
                "INVALID_URL_PATTERN",
                "Please check if the URL trying to access is a correct one",
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Zoho-oauthtoken" or not token:
            return zoho_error(401, "AUTHENTICATION_FAILURE", "Authentication failed")
        expires_at = self._access_tokens.get(token)
        if expires_at is None or expires_at <= self.clock():
            return zoho_error(401, "INVALID_TOKEN", "invalid oauth token")
        if module and request.path_params["module"] not in self._records:
            return zoho_error(
                400,
                "INVALID_MODULE",
                "the module name given seems to be invalid",
                {"resource_path_index": 0},
            )
        return None

    async def _count(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        return JSONResponse({"count": len(self._records[request.path_params["module"]])})

    async def _get_one(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        module = request.path_params["module"]
        record = self._records[module].get(request.path_params["record_id"])
        if record is None:
            return Response(status_code=204)
        fields = _fields(request.query_params.get("fields"))
        return JSONResponse({"data": [_project(record, fields)]})

    async def _list(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        module = request.path_params["module"]
        query = request.query_params
        fields = _fields(query.get("fields"))
        if "ids" in query:
            return self._list_by_ids(module, query["ids"], fields)
        if not fields:
            return zoho_error(
                400,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                {"param": "fields"},
            )
        per_page = _per_page(query.get("per_page"))
        if per_page is None:
            return zoho_error(
                400, "INVALID_DATA", "invalid per_page", {"param": "per_page", "maximum": 200}
            )
        since = _parse_time(request.headers.get("if-modified-since"))
        if "if-modified-since" in request.headers and since is None:
            return zoho_error(400, "INVALID_DATA", "invalid If-Modified-Since", {})
        now = self.clock()
        if "page_token" in query:
            if "page" in query:
                return zoho_error(
                    400, "INVALID_DATA", "page and page_token cannot be used together", {}
                )
            cursor = self._cursors.get(query["page_token"])
            if cursor is None or cursor.module != module or cursor.expires_at <= now:
                return zoho_error(
                    400, "INVALID_DATA", "invalid page token", {"param": "page_token"}
                )
            offset, page, fields, since = cursor.offset, cursor.page, cursor.fields, cursor.since
        else:
            requested_page = _positive_int(query.get("page", "1"))
            if requested_page is None:
                return zoho_error(400, "INVALID_DATA", "invalid page", {"param": "page"})
            page = requested_page
            offset = (page - 1) * per_page
            if offset + per_page > PAGE_LIMIT:
                return zoho_error(
                    400,
                    "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                    f"cannot fetch more than {PAGE_LIMIT} records with page; use page_token",
                    {"limit": PAGE_LIMIT},
                )
        matching = [
            record
            for record in self._records[module].values()
            if since is None or (_parse_time(record.get("Modified_Time")) or now) > since
        ]
        if since is not None and not matching:
            return Response(status_code=304)
        chunk = matching[offset : offset + per_page]
        if not chunk:
            return Response(status_code=204)
        more = offset + per_page < len(matching)
        next_token: str | None = None
        if more and (self.page_tokens == "always" or offset + 2 * per_page > PAGE_LIMIT):
            next_token = secrets.token_hex(20)
            self._cursors[next_token] = _Cursor(
                module, offset + per_page, page + 1, fields, since, now + PAGE_TOKEN_LIFETIME
            )
        info = {
            "per_page": per_page,
            "count": len(chunk),
            "page": page,
            "sort_by": "id",
            "sort_order": "asc",
            "more_records": more,
            "next_page_token": next_token,
            "previous_page_token": None,
            "page_token_expiry": _iso(now + PAGE_TOKEN_LIFETIME) if next_token else None,
        }
        return JSONResponse({"data": [_project(r, fields) for r in chunk], "info": info})

    def _list_by_ids(self, module: str, ids: str, fields: tuple[str, ...]) -> Response:
        wanted = [record_id for record_id in ids.split(",") if record_id]
        if len(wanted) > MAX_IDS:
            return zoho_error(
                400,
                "LIMIT_EXCEEDED",
                "the number of ids given exceeds the limit",
                {"limit": MAX_IDS},
            )
        records = self._records[module]
        found = [_project(records[i], fields) for i in wanted if i in records]
        if not found:
            return Response(status_code=204)
        info = {"per_page": len(found), "count": len(found), "page": 1, "more_records": False}
        return JSONResponse({"data": found, "info": info})

    async def _list_deleted(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        module = request.path_params["module"]
        query = request.query_params
        kind = query.get("type", "all")
        if kind not in _DELETED_TYPES:
            return zoho_error(400, "INVALID_DATA", "invalid type", {"param": "type"})
        per_page = _per_page(query.get("per_page"))
        page = _positive_int(query.get("page", "1"))
        if per_page is None or page is None:
            return zoho_error(400, "INVALID_DATA", "invalid page or per_page", {})
        since = _parse_time(request.headers.get("if-modified-since"))
        matching = [
            item
            for item in self._deleted[module]
            if (kind == "all" or item["type"] == kind)
            and (since is None or (_parse_time(item["deleted_time"]) or since) > since)
        ]
        offset = (page - 1) * per_page
        chunk = matching[offset : offset + per_page]
        if not chunk:
            return Response(status_code=304 if since is not None and not matching else 204)
        info = {
            "per_page": per_page,
            "count": len(chunk),
            "page": page,
            "more_records": offset + per_page < len(matching),
        }
        return JSONResponse({"data": copy.deepcopy(chunk), "info": info})

    async def _watch(self, request: Request) -> Response:
        refused = self._refuse(request, module=False)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return zoho_error(400, "INVALID_DATA", "the body is not valid JSON", {})
        items = body.get("watch") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            return zoho_error(
                400, "MANDATORY_NOT_FOUND", "required field not found", {"api_name": "watch"}
            )
        enabling = request.method == "POST"
        answers: list[dict[str, Any]] = []
        failed = False
        for item in items:
            try:
                channel = self._enable(item) if enabling else self._renew(item)
            except _WatchError as exc:
                failed = True
                answers.append(
                    {
                        "code": exc.code,
                        "details": exc.details,
                        "message": exc.message,
                        "status": "error",
                    }
                )
                continue
            answers.append(
                {
                    "code": "SUCCESS",
                    "details": {"events": self._watch_events(request, channel)},
                    "message": "Successfully subscribed for actions-watch of the given module"
                    if enabling
                    else "Successfully updated the subscribe details",
                    "status": "success",
                }
            )
        return JSONResponse({"watch": answers}, status_code=400 if failed else 200)

    def _enable(self, item: object) -> WatchChannel:
        if not isinstance(item, dict):
            raise _WatchError("INVALID_DATA", {"api_name": "watch"})
        channel_id = _channel_id(item)
        events = self._events(item)
        notify_url = item.get("notify_url")
        if notify_url is None:
            raise _WatchError(
                "MANDATORY_NOT_FOUND", {"api_name": "notify_url"}, "required field not found"
            )
        if not isinstance(notify_url, str) or not notify_url.startswith(("http://", "https://")):
            raise _WatchError("INVALID_DATA", {"api_name": "notify_url"})
        channel = WatchChannel(
            channel_id=channel_id,
            events=events,
            notify_url=notify_url,
            token=_watch_token(item),
            expiry=self._expiry(item, None),
            return_affected_field_values=bool(item.get("return_affected_field_values", False)),
            notify_on_related_action=bool(item.get("notify_on_related_action", True)),
        )
        self.channels[channel_id] = channel
        return channel

    def _renew(self, item: object) -> WatchChannel:
        if not isinstance(item, dict):
            raise _WatchError("INVALID_DATA", {"api_name": "watch"})
        channel = self.channels.get(_channel_id(item))
        if channel is None:
            raise _WatchError("INVALID_DATA", {"api_name": "channel_id"}, "channel not found")
        events = self._events(item)
        token = _watch_token(item) if "token" in item else channel.token
        expiry = self._expiry(item, channel.expiry)
        notify_url = item.get("notify_url", channel.notify_url)
        if not isinstance(notify_url, str):
            raise _WatchError("INVALID_DATA", {"api_name": "notify_url"})
        channel.events, channel.token, channel.expiry = events, token, expiry
        channel.notify_url = notify_url
        return channel

    def _events(self, item: dict[str, Any]) -> list[str]:
        events = item.get("events")
        if events is None:
            raise _WatchError(
                "MANDATORY_NOT_FOUND", {"api_name": "events"}, "required field not found"
            )
        if not isinstance(events, list) or not events:
            raise _WatchError("INVALID_DATA", {"api_name": "events"})
        for event in events:
            match = _EVENT.fullmatch(event) if isinstance(event, str) else None
            if match is None or match.group(1) not in self._records:
                raise _WatchError("INVALID_DATA", {"api_name": "events"}, "invalid event")
        return list(events)

    def _expiry(self, item: dict[str, Any], current: datetime | None) -> datetime:
        now = self.clock()
        if "channel_expiry" not in item:
            return current or now + DEFAULT_CHANNEL_LIFETIME
        expiry = _parse_time(item["channel_expiry"])
        if expiry is None or expiry <= now:
            raise _WatchError("INVALID_DATA", {"api_name": "channel_expiry"})
        # Zoho does not refuse a longer expiry: it quietly falls back to one hour.
        if expiry > now + MAX_CHANNEL_LIFETIME:
            return now + DEFAULT_CHANNEL_LIFETIME
        return expiry

    def _watch_events(self, request: Request, channel: WatchChannel) -> list[dict[str, Any]]:
        modules = dict.fromkeys(event.split(".", 1)[0] for event in channel.events)
        return [
            {
                "channel_expiry": _iso(channel.expiry),
                "resource_uri": f"{self._api_domain(request)}/crm/v2/{module}",
                "resource_id": self._module_ids[module],
                "resource_name": module,
                "channel_id": channel.channel_id,
            }
            for module in modules
        ]

    def _api_domain(self, request: Request) -> str:
        return self.api_domain or f"{request.url.scheme}://{request.url.netloc}"


class _FakeTransport(httpx.AsyncBaseTransport):
    def __init__(self, fake: FakeZoho) -> None:
        self._fake = fake
        self._asgi = httpx.ASGITransport(app=fake)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # A real round trip always lets other tasks run; without this, concurrent callers
        # would be served one after another and races could not show.
        await asyncio.sleep(self._fake.latency)
        failure = self._fake.pop_network_failure()
        if failure is not None:
            self._fake.note_network_failure(request)
            raise failure("simulated network failure", request=request)
        return await self._asgi.handle_async_request(request)

    async def aclose(self) -> None:
        await self._asgi.aclose()


def _display_name(record: Mapping[str, Any]) -> str | None:
    for key in ("Name", "Full_Name", "Product_Name", "Last_Name", "Subject"):
        value = record.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _fields(value: str | None) -> tuple[str, ...]:
    return tuple(name for name in (value or "").split(",") if name)


def _project(record: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    if not fields:
        return copy.deepcopy(dict(record))
    chosen = {name: record[name] for name in fields if name in record}
    return copy.deepcopy({"id": record["id"], **chosen})


def _positive_int(value: str | None) -> int | None:
    if value is None or not value.isdigit() or int(value) < 1:
        return None
    return int(value)


def _per_page(value: str | None) -> int | None:
    per_page = _positive_int(value or str(MAX_PER_PAGE))
    return per_page if per_page is not None and per_page <= MAX_PER_PAGE else None


def _channel_id(item: dict[str, Any]) -> str:
    value = item.get("channel_id")
    if value is None:
        raise _WatchError(
            "MANDATORY_NOT_FOUND", {"api_name": "channel_id"}, "required field not found"
        )
    if isinstance(value, bool) or not str(value).isdigit():
        raise _WatchError("INVALID_DATA", {"api_name": "channel_id"})
    return str(value)


def _watch_token(item: dict[str, Any]) -> str | None:
    token = item.get("token")
    if token is None:
        return None
    if not isinstance(token, str) or len(token) > MAX_WATCH_TOKEN:
        raise _WatchError("INVALID_DATA", {"api_name": "token", "maximum_length": MAX_WATCH_TOKEN})
    return token


def load_seed(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Records by module from a JSON file: `{"modules": {...}}` or the module mapping itself."""
    data = json.loads(path.read_text(encoding="utf-8"))
    modules = data.get("modules", data) if isinstance(data, dict) else None
    if not isinstance(modules, dict):
        raise ValueError(f"{path}: expected an object of module name to list of records")
    return {name: list(records) for name, records in modules.items() if not name.startswith("_")}


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--seed", type=Path, help="JSON file of records by module")
    parser.add_argument("--module", action="append", default=[], help="an empty module to serve")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    parser.add_argument("--refresh-token", default=DEFAULT_REFRESH_TOKEN)
    parser.add_argument("--token-lifetime", type=int, default=3600, help="seconds")
    args = parser.parse_args(argv)
    fake = FakeZoho(
        client_id=args.client_id,
        client_secret=args.client_secret,
        refresh_token=args.refresh_token,
        token_lifetime=timedelta(seconds=args.token_lifetime),
        modules=args.module,
    )
    if args.seed is not None:
        fake.seed(load_seed(args.seed))
    base = f"http://{args.host}:{args.port}"
    print(
        f"fake Zoho on {base}: accounts_url={base} client_id={args.client_id}",
        file=sys.stderr,
    )
    uvicorn.run(fake, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
