"""What Zoho's callers send, normalized: workflow-rule webhooks (JSON or form-encoded; an id only,
some merge fields, or a full record) and Notifications API callbacks, each becoming one
`WebhookEvent` (module, record ids, operation, and the record fields when they came along).

No web framework or database here, like the parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from zoho_moodle_sync.errors import MalformedBody, Unprocessable, UnsupportedMediaType
from zoho_moodle_sync.parser.records import decode_json, looks_like_json, media_type
from zoho_moodle_sync.zoho.ids import is_zoho_id

_ID_KEYS = ("zoho_id", "id", "record_id", "Id")
_META_KEYS = frozenset({"module", "zoho_id", "record_id", "operation", "token", "channel_id"})
_DELETE_OPERATIONS = frozenset({"delete", "deleted", "remove"})
_MAX_IDS = 1000
_TOKEN_MEMBER = re.compile(rb'("token"\s*:\s*)"(?:[^"\\]|\\.)*"')


@dataclass(frozen=True)
class WebhookEvent:
    module: str
    ids: list[str]
    operation: str
    """`upsert` or `delete`."""
    records: list[dict[str, Any]] = field(default_factory=list)
    """Records that came with the event (merge fields or full records); empty for id-only."""
    channel_id: str | None = None
    token: str | None = None


def read_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    """A JSON object or a form, as a dict; a clear 4xx for anything else."""
    if not body.strip():
        raise MalformedBody("Body is empty: send the record id (or the record) and its module")
    kind = media_type(content_type)
    if _is_json(body, content_type):
        document = decode_json(body)
        if not isinstance(document, dict):
            raise Unprocessable(
                "The body must be a JSON object",
                details=[{"field": "(body)", "message": f"got {type(document).__name__}"}],
            )
        return document
    if kind in ("application/x-www-form-urlencoded", "", "text/plain"):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedBody(f"Form body is not UTF-8 (byte {exc.start})") from None
        pairs = parse_qsl(text, keep_blank_values=True)
        if not pairs:
            raise MalformedBody("Body is neither JSON nor a form (name=value&...)")
        form: dict[str, Any] = {}
        for name, value in pairs:
            if name in form:
                existing = form[name]
                form[name] = (existing if isinstance(existing, list) else [existing]) + [value]
            else:
                form[name] = value
        return form
    raise UnsupportedMediaType(
        f"Content-Type {kind} is not supported: send JSON or a form (x-www-form-urlencoded)"
    )


def read_workflow(
    body: bytes, content_type: str | None, *, module: str | None, query: dict[str, str]
) -> WebhookEvent:
    """A workflow-rule webhook as it arrived; the body may be left out when the query names the
    record (`?zoho_id=...`, for a webhook configured with URL parameters only)."""
    if not body.strip() and any(query.get(k) for k in _ID_KEYS):
        return parse_workflow({}, module=module, query=query)
    document = read_body(body, content_type)
    # A JSON text can only hold "${" as those two characters or with either one escaped:
    # without any of them, no value needs looking at (a full record has hundreds).
    unfilled = not _is_json(body, content_type) or any(mark in body for mark in _PLACEHOLDER_MARKS)
    return parse_workflow(document, module=module, query=query, may_hold_placeholders=unfilled)


_PLACEHOLDER_MARKS = (b"${", b"\\u0024", b"\\u007b", b"\\u007B")


def _is_json(body: bytes, content_type: str | None) -> bool:
    kind = media_type(content_type)
    return kind == "application/json" or kind.endswith("+json") or looks_like_json(body)


def without_token(body: bytes) -> bytes:
    """The body with every JSON `"token"` string, at any depth, replaced by `"***"` and the rest
    byte for byte: a Notifications API callback carries its channel token, and echoes the notify
    URL's query (a `?token=` too) in `query_params`."""
    return _TOKEN_MEMBER.sub(rb'\1"***"', body)


def placeholders(document: Any, path: str = "") -> list[str]:
    """Fields whose value is a merge field Zoho did not fill in (`${...}` arriving literally)."""
    found: list[str] = []
    if isinstance(document, dict):
        for key, value in document.items():
            found += placeholders(value, f"{path}.{key}" if path else str(key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += placeholders(value, f"{path}[{index}]")
    elif isinstance(document, str) and "${" in document:
        found.append(path or "(body)")
    return found


def parse_workflow(
    document: dict[str, Any],
    *,
    module: str | None,
    query: dict[str, str],
    may_hold_placeholders: bool = True,
) -> WebhookEvent:
    """A workflow-rule webhook: `{"module", "zoho_id"}`, merge fields, or `{"data": [...]}`.
    `may_hold_placeholders` False: the caller knows no value of `document` holds "${"."""
    unfilled = (placeholders(document) if may_hold_placeholders else []) + placeholders(query)
    if unfilled:
        raise Unprocessable(
            "Zoho sent merge fields it did not fill in (check the webhook's body in Zoho): "
            + ", ".join(unfilled),
            details=[{"field": name, "message": "literal ${...} placeholder"} for name in unfilled],
        )
    module = module or _text(document.get("module")) or query.get("module")
    if not module:
        raise Unprocessable(
            'No module: put it in the URL (/v1/webhooks/zoho/BTEC_Students) or the body ("module")',
            details=[{"field": "module", "message": "missing"}],
        )
    operation = "delete" if _operation(document, query) in _DELETE_OPERATIONS else "upsert"
    records: list[dict[str, Any]] = []
    if isinstance(document.get("data"), list):
        records = [r for r in document["data"] if isinstance(r, dict)]
        ids = [str(r["id"]) for r in records if r.get("id") not in (None, "")]
    else:
        record_id = next(
            (_text(document.get(k)) for k in _ID_KEYS if _text(document.get(k))), None
        ) or next((query[k] for k in _ID_KEYS if query.get(k)), None)
        ids = [record_id] if record_id else []
        fields = {k: v for k, v in document.items() if k not in _META_KEYS and k not in _ID_KEYS}
        if record_id and fields and operation == "upsert":
            records = [{"id": record_id, **fields}]
    if not ids:
        raise Unprocessable(
            'No record id: send "zoho_id" (the merge field of the record\'s Id) in the body',
            details=[{"field": "zoho_id", "message": "missing"}],
        )
    _check_ids(ids)
    return WebhookEvent(module=module, ids=ids, operation=operation, records=records)


def parse_notification(document: dict[str, Any]) -> WebhookEvent:
    """A Notifications API callback: `{module, ids, operation, channel_id, token, ...}`."""
    missing = [k for k in ("module", "ids", "operation", "channel_id") if k not in document]
    if missing:
        raise Unprocessable(
            f"Not a Zoho notification: missing {', '.join(missing)}",
            details=[{"field": k, "message": "missing"} for k in missing],
        )
    ids = document["ids"]
    if not isinstance(ids, list) or not ids:
        raise Unprocessable(
            '"ids" must be a non-empty array', details=[{"field": "ids", "message": "not a list"}]
        )
    ids = [str(i) for i in ids]
    _check_ids(ids)
    operation = str(document["operation"]).lower()
    return WebhookEvent(
        module=str(document["module"]),
        ids=ids,
        operation="delete" if operation in _DELETE_OPERATIONS else "upsert",
        channel_id=str(document["channel_id"]),
        token=_text(document.get("token")),
    )


def _operation(document: dict[str, Any], query: dict[str, str]) -> str:
    return str(document.get("operation") or query.get("operation") or "").strip().lower()


def _text(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _check_ids(ids: list[str]) -> None:
    if len(ids) > _MAX_IDS:
        raise Unprocessable(
            f"Too many ids in one event: {len(ids)}; the limit is {_MAX_IDS}",
            details=[{"field": "ids", "message": f"more than {_MAX_IDS}"}],
        )
    bad = [i for i in ids if not is_zoho_id(i)]
    if bad:
        raise Unprocessable(
            f"Not Zoho record ids (digits): {', '.join(repr(b) for b in bad[:5])}",
            details=[{"field": "zoho_id", "message": "not a Zoho record id"}],
        )
