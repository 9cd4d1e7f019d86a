"""Idempotency-Key handling per tenant, as the IETF draft describes it: the first response is
remembered and replayed for repeats; the same key with another body is refused (422); a repeat
while the first is still being answered is refused (409); keys expire.

Webhooks without a key use a key derived from their body, so Zoho re-sending the same body
within the window is answered once and processed once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.security import IdempotentRequest
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.errors import Conflict, Unprocessable
from zoho_moodle_sync.ingress.events import Answer

MAX_KEY_LENGTH = 255


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
    if not key or len(key) > MAX_KEY_LENGTH:
        raise Unprocessable(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
            details=[{"field": "Idempotency-Key", "message": "bad length"}],
        )
    now = utcnow()
    for _ in range(2):
        with db.sessions.begin() as session:
            existing = session.scalar(
                select(IdempotentRequest).where(
                    IdempotentRequest.tenant_id == tenant_id, IdempotentRequest.key == key
                )
            )
            if existing is not None and existing.expires_at <= now:
                session.delete(existing)
                session.flush()
                existing = None
            if existing is not None:
                return _repeat(existing, fingerprint)
        try:
            with db.sessions.begin() as session:
                row = IdempotentRequest(
                    tenant_id=tenant_id,
                    key=key,
                    request_sha256=fingerprint,
                    state="running",
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl_seconds),
                )
                session.add(row)
                session.flush()
                return row.id
        except IntegrityError:
            continue  # a concurrent request took the key first: answer as a repeat of it
    raise Conflict("the request with this Idempotency-Key is still being processed")


def _repeat(existing: IdempotentRequest, fingerprint: str) -> Remembered:
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


def release(db: Database, *, tenant_id: int, key: str) -> None:
    """Forget a key now (a body-derived webhook key once its event is completed)."""
    with db.sessions.begin() as session:
        session.execute(
            delete(IdempotentRequest).where(
                IdempotentRequest.tenant_id == tenant_id, IdempotentRequest.key == key
            )
        )


def replayed(remembered: Remembered) -> Answer:
    """The first answer again, marked as replayed."""
    return Answer(remembered.status_code, remembered.body, {"Idempotent-Replayed": "true"})
