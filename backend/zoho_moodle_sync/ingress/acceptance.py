"""An accepted webhook stored in one statement on PostgreSQL: its event, the repeat key that
remembers its 202 answer, and the job that completes it, in one round trip instead of three.

The answer names the event, whose id the database assigns: the key's remembered body is put
together in the statement from the answer's two halves around that id, the same bytes the
caller gets. When the key is already held (a repeat, or a key that expired), nothing but the
event is stored, and the caller decides the rest as on any database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import Select, Table, Text, bindparam, func, insert, literal, select, true
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.jobs import Job
from zoho_moodle_sync.db.models import InboundEvent
from zoho_moodle_sync.db.security import IdempotentRequest
from zoho_moodle_sync.ingress.events import Answer, InboundRequest, event_row, insert_event
from zoho_moodle_sync.ingress.idempotency import key_row, usable_key
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.service.sql import dialect_of

_EVENTS = cast(Table, InboundEvent.__table__)
_KEYS = cast(Table, IdempotentRequest.__table__)
_JOBS = cast(Table, Job.__table__)
_HEAD = b'{"event_id":'


@dataclass(frozen=True)
class AcceptedAnswer:
    """The 202 answer of an accepted webhook, but for its event's id."""

    content: dict[str, Any]
    """Everything the answer says after `event_id`."""

    def tail(self) -> bytes:
        return b"," + orjson.dumps(self.content)[1:]

    def answer(self, event_id: int) -> Answer:
        return Answer(202, _HEAD + str(event_id).encode() + self.tail())


@dataclass(frozen=True)
class Repeat:
    """How a request's repeats are recognised: the key they share, the request's fingerprint,
    and how long the key is kept."""

    key: str
    fingerprint: str
    ttl_seconds: float


def store_accepted(
    session: Session,
    inbound: InboundRequest,
    *,
    tenant_id: int,
    entity: str,
    repeat: Repeat,
    answer: AcceptedAnswer,
    due_at: datetime | None,
) -> tuple[int, bool]:
    """Store the event accepted in the caller's transaction; returns its id, and whether its
    key (remembering `answer`) and its job are stored with it. On PostgreSQL they are, in the
    same statement, unless the key is already held (a concurrent first claim of it is waited
    for, as by `claim`); on SQLite the caller claims the key and stores the job."""
    if dialect_of(session) != "postgresql" or not usable_key(repeat.key):
        return insert_event(session, inbound, **_accepted(tenant_id, entity)), False
    values = {f"event_{k}": v for k, v in _event(inbound, tenant_id, entity).items()}
    key = key_row(
        tenant_id=tenant_id,
        key=repeat.key,
        fingerprint=repeat.fingerprint,
        ttl_seconds=repeat.ttl_seconds,
        answer=Answer(202, b""),  # the body is put together in the statement
    )
    values.update({f"key_{k}": v for k, v in key.items() if k != "body"})
    job = queue.webhook_job(tenant_id, due_at)
    values.update({f"job_{k}": v for k, v in job.items()})
    values["head"] = _HEAD.decode()
    values["tail"] = answer.tail().decode()
    row = session.connection().execute(_STATEMENT, values).one()
    return int(row.event_id), row.claim_id is not None


def _accepted(tenant_id: int, entity: str) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "entity": entity, "status": "accepted", "http_status": 202}


def _event(inbound: InboundRequest, tenant_id: int, entity: str) -> dict[str, Any]:
    return event_row(inbound, **_accepted(tenant_id, entity))


def _statement() -> Select[Any]:
    sample = InboundRequest("webhook", "POST", "", None, {}, {}, b"")
    event_columns = list(_event(sample, 0, ""))
    event = (
        insert(_EVENTS)
        .values({c: bindparam(f"event_{c}", type_=_EVENTS.c[c].type) for c in event_columns})
        .returning(_EVENTS.c.id)
        .cte("event")
    )
    key_columns = [
        c
        for c in key_row(tenant_id=0, key="", fingerprint="", ttl_seconds=0, answer=None)
        if c != "body"
    ]
    body = func.convert_to(
        bindparam("head", type_=Text) + sql_cast(event.c.id, Text) + bindparam("tail", type_=Text),
        literal("UTF8"),
    )
    claimed = (
        postgresql.insert(_KEYS)
        .from_select(
            [*key_columns, "body"],
            select(
                *(bindparam(f"key_{c}", type_=_KEYS.c[c].type) for c in key_columns), body
            ).select_from(event),
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "key"])
        .returning(_KEYS.c.id)
        .cte("claimed")
    )
    job_columns = list(queue.webhook_job(0, None))
    job = insert(_JOBS).from_select(
        [*job_columns, "event_id"],
        select(
            *(bindparam(f"job_{c}", type_=_JOBS.c[c].type) for c in job_columns), event.c.id
        ).select_from(event.join(claimed, true())),
    )
    return (
        select(event.c.id.label("event_id"), claimed.c.id.label("claim_id"))
        .select_from(event.outerjoin(claimed, true()))
        .add_cte(job.cte("job"))
    )


_STATEMENT = _statement()
