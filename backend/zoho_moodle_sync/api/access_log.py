"""The access log without secrets: a credential sent in a query string (`?token=`, or spelled
`?%74oken=`, which the server reads as `token` all the same) is masked in every request line."""

from __future__ import annotations

import logging
from urllib.parse import unquote_plus

from zoho_moodle_sync.ingress.events import looks_secret


def redact_target(target: str) -> str:
    """`/path?token=s3cret&x=1` → `/path?token=***&x=1`, whatever way the names are encoded."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    parts = []
    for pair in query.split("&"):
        name, equals, _ = pair.partition("=")
        parts.append(f"{name}=***" if equals and looks_secret(unquote_plus(name)) else pair)
    return f"{path}?{'&'.join(parts)}"


class QueryCredentialFilter(logging.Filter):
    """For uvicorn's access log, whose request line is one of the record's arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_target(arg) if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        return True
