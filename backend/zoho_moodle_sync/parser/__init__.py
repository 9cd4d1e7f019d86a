"""The parser stage: raw Zoho shapes in, normalized records out. `records` reads `/v1/sync`
bodies and the records in them; `webhook_bodies` reads what Zoho's workflow rules and
Notifications API send. Nothing here knows the web framework or the database."""

from __future__ import annotations

from zoho_moodle_sync.parser.records import (
    decode_json,
    looks_like_json,
    may_hold_nul,
    media_type,
    parse_record,
    parse_sync_body,
)
from zoho_moodle_sync.parser.webhook_bodies import (
    WebhookEvent,
    parse_notification,
    parse_workflow,
    placeholders,
    read_body,
    read_workflow,
    without_token,
)

__all__ = [
    "WebhookEvent",
    "decode_json",
    "looks_like_json",
    "may_hold_nul",
    "media_type",
    "parse_notification",
    "parse_record",
    "parse_sync_body",
    "parse_workflow",
    "placeholders",
    "read_body",
    "read_workflow",
    "without_token",
]
