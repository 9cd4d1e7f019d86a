"""Idempotency-Key handling per tenant, as the IETF draft describes it: the first response is
remembered and replayed for repeats; the same key with another body is refused (422); a repeat
while the first is still being answered is refused (409); keys expire.

Webhooks without a key use a key derived from their body, so Zoho re-sending the same body
within the window is answered once and processed once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Row, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.security import IdempotentRequest
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.errors import Conflict, Unprocessable
from zoho_moodle_sync.ingress.events import Answer

MAX_KEY_LENGTH = 255
_KEYS = cast(Table, IdempotentRequest.__table__)
_CLAIMS = {
    dialect.dialect.name: dialect.insert(_KEYS)
    .on_conflict_do_nothing(index_elements=["tenant_id", "key"])
    .returning(_KEYS.c.id)
    for dialect in (postgresql, sqlite)
}
"""Per database: insert a key unless it is there (waiting for a concurrent first claim)."""


@dataclass(frozen=True)
class Remembered:
    status_code: int
    body: bytes


def request_digest(method: str, route: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + route.encode() + b"\n" + body).hexdigest()


def begin(
    db: Database, *, tenant_id: int, key: str, fingerprint: str, ttl_seconds: float
) -> Remembered | int:
    """Claim `key` for this request, returning its row id; or the remembered answer of an
    identical earlier request. Commits on its own, so concurrent repeats see the claim."""
    with db.sessions.begin() as session:
        return claim(
            session, tenant_id=tenant_id, key=key, fingerprint=fingerprint, ttl_seconds=ttl_seconds
        )


def check_key(key: str) -> None:
    if not usable_key(key):
        raise Unprocessable(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
            details=[{"field": "Idempotency-Key", "message": "bad length"}],
        )


def usable_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH


def claim(
    session: Session,
    *,
    tenant_id: int,
    key: str,
    fingerprint: str,
    ttl_seconds: float,
    answer: Answer | None = None,
) -> Remembered | int:
    """Claim `key` in the caller's transaction, returning the new row's id; or the remembered
    answer of an identical earlier request. With `answer`, the request is already answered and
    the key remembers it at once (a webhook, whose 202 is decided in the same transaction);
    otherwise the key is `running` until `finish`. A concurrent first claim of the key is waited
    for (PostgreSQL) or queued behind (SQLite), so its answer is replayed rather than redone."""
    check_key(key)
    values = key_row(
        tenant_id=tenant_id,
        key=key,
        fingerprint=fingerprint,
        ttl_seconds=ttl_seconds,
        answer=answer,
    )
    now = values["created_at"]
    connection = session.connection()
    statement = _CLAIMS[connection.dialect.name]
    for _ in range(3):
        row_id = connection.execute(statement, values).scalar()
        if row_id is not None:
            return int(row_id)
        existing = session.execute(
            select(_KEYS).where(_KEYS.c.tenant_id == tenant_id, _KEYS.c.key == key)
        ).one_or_none()
        if existing is None:
            continue  # expired and removed by a concurrent request meanwhile
        if existing.expires_at <= now:
            session.execute(delete(_KEYS).where(_KEYS.c.id == existing.id))
            continue
        return _repeat(existing, fingerprint)
    raise Conflict("the request with this Idempotency-Key is still being processed")


def key_row(
    *, tenant_id: int, key: str, fingerprint: str, ttl_seconds: float, answer: Answer | None
) -> dict[str, Any]:
    """The columns `claim` stores of a key."""
    now = utcnow()
    return {
        "tenant_id": tenant_id,
        "key": key,
        "request_sha256": fingerprint,
        "state": "running" if answer is None else "done",
        "status_code": None if answer is None else answer.status_code,
        "body": None if answer is None else answer.body,
        "created_at": now,
        "expires_at": now + timedelta(seconds=ttl_seconds),
    }


def _repeat(existing: Row[Any], fingerprint: str) -> Remembered:
    if existing.request_sha256 != fingerprint:
        raise Unprocessable(
            "this Idempotency-Key was used for a different request; use a new key",
            details=[{"field": "Idempotency-Key", "message": "reused with another body"}],
        )
    if existing.state != "done" or existing.status_code is None or existing.body is None:
        raise Conflict("the request with this Idempotency-Key is still being processed")
    return Remembered(existing.status_code, existing.body)


def finish(db: Database, row_id: int, *, status_code: int, body: bytes) -> None:
    """Remember the answer; a 5xx is forgotten instead, so the caller may try again."""
    with db.sessions.begin() as session:
        row = session.get(IdempotentRequest, row_id)
        if row is None:
            return
        if status_code >= 500:
            session.delete(row)
            return
        row.state = "done"
        row.status_code = status_code
        row.body = body


def release_keys(session: Session, *, tenant_id: int, keys: Sequence[str]) -> None:
    """Forget keys of a tenant now, in the caller's transaction."""
    if keys:
        session.execute(
            delete(_KEYS).where(_KEYS.c.tenant_id == tenant_id, _KEYS.c.key.in_(list(keys)))
        )


def replayed(remembered: Remembered) -> Answer:
    """The first answer again, marked as replayed."""
    return Answer(remembered.status_code, remembered.body, {"Idempotent-Replayed": "true"})
