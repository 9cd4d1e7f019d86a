"""Inbound events: every request is stored (and committed) before anything is done with it,
and its status is recorded afterwards (processed, accepted, duplicate, rejected, failed);
stored events can be listed and copied for a replay."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import Table, bindparam, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.models import ENTITY_TABLES, InboundEvent, ParkedRecord, RecordOutcome
from zoho_moodle_sync.db.session import Database, on_its_own
from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.errors import NotFound, RequestRejected
from zoho_moodle_sync.service.sql import dialect_of

log = logging.getLogger(__name__)

STORED_BODY_LIMIT = 64 * 1024
"""How much of a body over the size limit is kept, so the refusal can still be inspected."""

_KEPT_HEADERS = {
    "content-type",
    "content-length",
    "user-agent",
    "x-request-id",
    "x-tenant-id",
    "idempotency-key",
    "x-forwarded-for",
}
_SECRET_WORDS = ("token", "secret", "key", "password", "auth", "signature")
_EVENTS = cast(Table, InboundEvent.__table__)
_INSERT_EVENT = insert(_EVENTS).returning(_EVENTS.c.id)


@dataclass(frozen=True)
class InboundRequest:
    """What arrived, as the API layer saw it."""

    source: str
    method: str
    route: str
    content_type: str | None
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    body_truncated: bool = False
    body_size: int | None = None


@dataclass(frozen=True)
class Answer:
    """What the service answers a request: the API layer sends it as it is."""

    status_code: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, content: Any, status_code: int = 200) -> Answer:
        return cls(status_code, orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS))


def redact_query(query: Mapping[str, str]) -> dict[str, str]:
    return {clean(k): "***" if looks_secret(k) else clean(v) for k, v in query.items()}


def clean(text: str, limit: int = 1000) -> str:
    """Text a JSON column can hold: no NUL, bounded."""
    return text.replace("\x00", "\ufffd")[:limit]


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Only headers worth keeping for diagnosis; never a credential."""
    return {
        k.lower(): v
        for k, v in headers.items()
        if k.lower() in _KEPT_HEADERS and not looks_secret(k)
    }


def looks_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered != "idempotency-key" and any(word in lowered for word in _SECRET_WORDS)


def store_inbound(
    db: Database, request: InboundRequest, *, tenant_id: int | None, entity: str | None
) -> int:
    """Persist the raw request and commit, before anything else is done with it."""
    with db.sessions.begin() as session:
        return insert_event(session, request, tenant_id=tenant_id, entity=entity)


def insert_event(
    session: Session,
    request: InboundRequest,
    *,
    tenant_id: int | None,
    entity: str | None,
    status: str = "received",
    at_once: bool = False,
    **outcome: Any,
) -> int:
    """Store the raw request in the caller's transaction, with its status when it is already
    decided (`outcome`: `http_status`, `error`); returns its id. `at_once`: on PostgreSQL,
    committed at once by itself instead (the caller's transaction writes nothing else)."""
    values = event_row(request, tenant_id=tenant_id, entity=entity, status=status, **outcome)
    if at_once and dialect_of(session) == "postgresql":
        with on_its_own(session) as connection:
            return int(connection.execute(_INSERT_EVENT, values).scalar_one())
    event_id: int = session.connection().execute(_INSERT_EVENT, values).scalar_one()
    return event_id


def event_row(
    request: InboundRequest,
    *,
    tenant_id: int | None,
    entity: str | None,
    status: str = "received",
    **outcome: Any,
) -> dict[str, Any]:
    """The columns `insert_event` stores of a request."""
    if status not in ("received", "accepted"):
        outcome.setdefault("processed_at", utcnow())
    return {
        "tenant_id": tenant_id,
        "received_at": utcnow(),
        "source": request.source,
        "method": request.method,
        "route": clean(request.route, 300),
        "entity": entity,
        "content_type": clean(request.content_type, 200) if request.content_type else None,
        "query": redact_query(request.query),
        "headers": kept_headers(request.headers),
        "body": request.body,
        "body_size": request.body_size if request.body_size is not None else len(request.body),
        "body_sha256": hashlib.sha256(request.body).hexdigest(),
        "body_truncated": request.body_truncated,
        "status": status,
        **outcome,
    }


def set_status(session: Session, event_id: int, **values: Any) -> None:
    """Record how an event's processing ended; an UPDATE, so its body is never read back."""
    session.execute(
        update(_EVENTS).where(_EVENTS.c.id == event_id).values(**values, processed_at=utcnow())
    )


def mark_accepted(session: Session, event_id: int) -> None:
    """A received event accepted (202), to be completed by its job: not processed yet."""
    session.execute(
        update(_EVENTS).where(_EVENTS.c.id == event_id).values(status="accepted", http_status=202)
    )


def mark_processed(
    session: Session, summaries: Sequence[tuple[int, dict[str, int]]], *, http_status: int
) -> None:
    """Record, in the caller's transaction, that events were processed: (event id, summary)
    each, in one statement."""
    if summaries:
        now = utcnow()
        session.connection().execute(
            _PROCESSED,
            [
                {"b_id": event_id, "b_http_status": http_status, "b_summary": summary, "b_at": now}
                for event_id, summary in summaries
            ],
        )


_PROCESSED = (
    update(_EVENTS)
    .where(_EVENTS.c.id == bindparam("b_id"))
    .values(
        status="processed",
        http_status=bindparam("b_http_status"),
        summary=bindparam("b_summary"),
        processed_at=bindparam("b_at"),
    )
)
"""Built once: it runs for every request."""


def rejected(error: RequestRejected) -> dict[str, Any]:
    """The status columns of an event refused with `error`."""
    return {"status": "rejected", "http_status": error.status_code, "error": error.message}


def mark_rejected(
    db: Database, event_id: int, error: RequestRejected, **known: int | str | None
) -> None:
    """`known`: what the refusal came to know of the event (its `tenant_id` and `entity`, so
    that it can be replayed once the cause is fixed)."""
    with db.sessions.begin() as session:
        mark_refused(session, event_id, error, **known)


def mark_refused(
    session: Session, event_id: int, error: RequestRejected, **known: int | str | None
) -> RequestRejected:
    """Record, in the caller's transaction, that the stored event `event_id` was refused with
    `error` (`known`: as in `mark_rejected`); returns the error, naming the event, to raise."""
    set_status(session, event_id, **rejected(error), **known)
    error.event_id = event_id
    return error


def store_refused(
    session: Session,
    request: InboundRequest,
    error: RequestRejected,
    *,
    tenant_id: int | None,
    entity: str | None = None,
) -> RequestRejected:
    """Store the request as refused with `error`, in the caller's transaction; returns the
    error, naming the event, to raise."""
    error.event_id = insert_event(
        session, request, tenant_id=tenant_id, entity=entity, **rejected(error)
    )
    return error


def mark_failed(db: Database, event_id: int, error: BaseException) -> None:
    try:
        with db.sessions.begin() as session:
            set_status(
                session,
                event_id,
                status="failed",
                http_status=500,
                error=f"{type(error).__name__}: {error}"[:4000],
            )
    except SQLAlchemyError:
        log.exception("could not record the failure of inbound event %s", event_id)


def is_webhook(db: Database, event_id: int) -> bool:
    with db.sessions() as session:
        return session.scalar(select(InboundEvent.source).where(InboundEvent.id == event_id)) == (
            "webhook"
        )


def replayable(session: Session, event_id: int) -> InboundEvent:
    original = session.get(InboundEvent, event_id)
    if original is None:
        raise NotFound(f"no inbound event {event_id}")
    if original.entity is None or original.entity not in ENTITY_BY_KEY:
        raise NotFound(f"inbound event {event_id} names no entity to replay")
    if original.tenant_id is None:
        raise NotFound(f"inbound event {event_id} belongs to no tenant")
    if original.body_truncated:
        raise NotFound(f"inbound event {event_id} was over the size limit; its body is cut")
    return original


def copy_event(
    session: Session, original: InboundEvent, *, source: str, status: str
) -> InboundEvent:
    copy = InboundEvent(
        tenant_id=original.tenant_id,
        source=source,
        method=original.method,
        route=original.route,
        entity=original.entity,
        content_type=original.content_type,
        query=original.query,
        headers=original.headers,
        body=original.body,
        body_size=original.body_size,
        body_sha256=original.body_sha256,
        body_truncated=False,
        status=status,
        replay_of=original.id,
    )
    session.add(copy)
    session.flush()
    return copy


def list_events(
    session: Session, *, tenant_id: int | None = None, status: str | None = None, limit: int = 50
) -> list[InboundEvent]:
    query = select(InboundEvent).order_by(InboundEvent.id.desc()).limit(limit)
    if tenant_id is not None:
        query = query.where(InboundEvent.tenant_id == tenant_id)
    if status is not None:
        query = query.where(InboundEvent.status == status)
    return list(session.scalars(query))


def search_events(
    session: Session,
    *,
    tenant_id: int,
    zoho_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[InboundEvent]:
    """The tenant's events, newest first, received within [since, until), and with `zoho_id`
    those about that record: the events that gave it an outcome, stored or parked it, and the
    bodies that name it (an id-only webhook that failed leaves only its body)."""
    query = select(InboundEvent).where(InboundEvent.tenant_id == tenant_id)
    if since is not None:
        query = query.where(InboundEvent.received_at >= since)
    if until is not None:
        query = query.where(InboundEvent.received_at < until)
    if zoho_id is not None:
        if not zoho_id.isdigit():
            return []
        about = set(
            session.scalars(
                select(RecordOutcome.inbound_event_id).where(
                    RecordOutcome.tenant_id == tenant_id,
                    RecordOutcome.entity.in_(list(ENTITY_BY_KEY)),
                    RecordOutcome.zoho_id == zoho_id,
                )
            )
        )
        about |= set(
            session.scalars(
                select(ParkedRecord.inbound_event_id).where(
                    ParkedRecord.tenant_id == tenant_id, ParkedRecord.zoho_id == zoho_id
                )
            )
        )
        for table in ENTITY_TABLES.values():
            about |= set(
                session.scalars(
                    select(table.c.last_event_id).where(
                        table.c.tenant_id == tenant_id, table.c.zoho_id == zoho_id
                    )
                )
            )
        ids = sorted(i for i in about if i is not None)
        query = query.where(
            or_(
                InboundEvent.id.in_(ids),
                # digits only (a Zoho id): nothing to escape in the LIKE pattern
                InboundEvent.body.contains(zoho_id.encode()),
            )
        )
    return list(session.scalars(query.order_by(InboundEvent.id.desc()).limit(limit)))
