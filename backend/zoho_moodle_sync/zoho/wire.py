"""What goes on the wire to the Zoho API and comes back: argument checks made before any request
is sent, and the reading of Zoho's answers (records, error codes)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from zoho_moodle_sync.errors import ZohoRejected
from zoho_moodle_sync.zoho.ids import is_zoho_id
from zoho_moodle_sync.zoho.models import ZohoRecord

MAX_PER_PAGE = 200
MAX_WATCH_TOKEN_LENGTH = 50

_MODULE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")


@dataclass(frozen=True)
class Reply:
    """One answer of the API: its status and its JSON object (None for 204, 304 or no JSON)."""

    status: int
    body: dict[str, Any] | None


def check_module(module: str) -> None:
    if not _MODULE.fullmatch(module):
        raise ValueError(f"module must be a Zoho API name such as 'Contacts', not {module!r}")


def check_record_id(record_id: str) -> None:
    if not is_zoho_id(record_id):
        raise ValueError(f"a Zoho record id is a string of digits, not {record_id!r}")


def check_per_page(per_page: int) -> None:
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}, not {per_page}")


def check_channel_id(channel_id: int | str) -> int:
    text = str(channel_id)
    if isinstance(channel_id, bool) or not text.isascii() or not text.isdigit():
        raise ValueError(f"channel_id must be a positive whole number, not {channel_id!r}")
    value = int(text)
    if not 0 < value < 2**63:
        raise ValueError(f"channel_id must be a positive 64-bit number, not {channel_id!r}")
    return value


def check_watch_token(token: str) -> str:
    # The token is a shared secret: errors give its length, never its value.
    if not token:
        raise ValueError("the watch token must not be empty")
    if len(token) > MAX_WATCH_TOKEN_LENGTH:
        raise ValueError(
            f"the watch token is {len(token)} characters long; Zoho accepts at most "
            f"{MAX_WATCH_TOKEN_LENGTH}"
        )
    return token


def check_notify_url(notify_url: str) -> str:
    if not notify_url.startswith(("https://", "http://")):
        raise ValueError("notify_url must be an http:// or https:// URL")
    return notify_url


def join_fields(fields: Sequence[str]) -> str:
    if isinstance(fields, str):
        raise ValueError("fields must be a list of field API names, not one string")
    return ",".join(fields)


def modified_since_header(modified_since: datetime | None) -> dict[str, str]:
    if modified_since is None:
        return {}
    if modified_since.tzinfo is None:
        raise ValueError("modified_since must be timezone-aware")
    # Zoho takes ISO 8601 here, not the HTTP date format.
    return {"If-Modified-Since": modified_since.isoformat(timespec="seconds")}


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def error_of(body: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """The error code and message of an error body, top-level or in a one-item list."""
    if body is None:
        return None, None
    candidates: list[Any] = [body]
    for key in ("data", "watch"):
        items = body.get(key)
        if isinstance(items, list) and items:
            candidates.append(items[0])
    for candidate in candidates:
        if isinstance(candidate, dict) and isinstance(candidate.get("code"), str):
            if candidate.get("status") == "success":
                continue
            message = candidate.get("message")
            return candidate["code"], message if isinstance(message, str) else None
    return None, None


def error_code(body: dict[str, Any] | None) -> str | None:
    return error_of(body)[0]


def is_invalid_token(reply: Reply) -> bool:
    return reply.status == 401 and error_code(reply.body) == "INVALID_TOKEN"


def records_of(reply: Reply) -> list[ZohoRecord]:
    if reply.body is None:
        return []
    data = reply.body.get("data")
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ZohoRejected(
            code="UNEXPECTED_RESPONSE",
            message="the answer has no list of records in `data`",
            status_code=reply.status,
        )
    return data
