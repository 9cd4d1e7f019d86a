"""An accepted webhook stored in one statement on PostgreSQL: its event, the repeat key that
remembers its 202 answer, and the job that completes it, in one round trip instead of three,
committed on its own (a single statement needs no transaction around it: it is stored whole or
not at all).

The answer names the event, whose id is drawn from its sequence first: the key's remembered
body is put together in the statement from the answer's two halves around that id, the same
bytes the caller gets. When the key is already held (a repeat, or a key that expired), only the
event is stored, as `received`, and the caller decides the rest in a transaction as on any
database: a crash in between leaves an event that says it was never decided, never an accepted
one without its job."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import (
    Select,
    Table,
    Text,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    select,
    true,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.jobs import Job
from zoho_moodle_sync.db.models import InboundEvent
from zoho_moodle_sync.db.security import IdempotentRequest
from zoho_moodle_sync.db.session import on_its_own
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


@dataclass(frozen=True)
class Stored:
    """An event stored by `store_accepted`."""

    event_id: int
    claimed: bool
    """Whether its key (remembering the answer) and its job were stored with it."""
    committed: bool
    """Whether it is committed already (on its own), or goes with the caller's transaction."""

    @property
    def accepted(self) -> bool:
        """Whether it is stored as accepted; else as received, to be decided by the caller.
        Committed on its own, it is accepted only with its key; in the caller's transaction,
        always (and marked otherwise there if the request turns out to be a repeat)."""
        return self.claimed or not self.committed


def store_accepted(
    session: Session,
    inbound: InboundRequest,
    *,
    tenant_id: int,
    entity: str,
    repeat: Repeat,
    answer: AcceptedAnswer,
    due_at: datetime | None,
) -> Stored:
    """Store the event accepted. On PostgreSQL its key and job are stored with it, in one
    statement committed at once, unless the key is already held (a concurrent first claim of it
    is waited for, as by `claim`): the event is then stored as received. On SQLite, and for a
    key no row can hold, the event is stored accepted in the caller's transaction, and the
    caller claims the key and stores the job."""
    if dialect_of(session) != "postgresql" or not usable_key(repeat.key):
        event_id = insert_event(session, inbound, **_accepted(tenant_id, entity))
        return Stored(event_id, claimed=False, committed=False)
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
    with on_its_own(session) as connection:
        row = connection.execute(_STATEMENT, values).one()
    return Stored(int(row.event_id), claimed=row.claim_id is not None, committed=True)


def _accepted(tenant_id: int, entity: str) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "entity": entity, "status": "accepted", "http_status": 202}


def _event(inbound: InboundRequest, tenant_id: int, entity: str) -> dict[str, Any]:
    return event_row(inbound, **_accepted(tenant_id, entity))


def _statement() -> Select[Any]:
    new_id = select(
        func.nextval(func.pg_get_serial_sequence(_EVENTS.name, _EVENTS.c.id.name)).label("id")
    ).cte("new_event")
    key_columns = [
        c
        for c in key_row(tenant_id=0, key="", fingerprint="", ttl_seconds=0, answer=None)
        if c != "body"
    ]
    body = func.convert_to(
        bindparam("head", type_=Text) + sql_cast(new_id.c.id, Text) + bindparam("tail", type_=Text),
        literal("UTF8"),
    )
    claimed = (
        postgresql.insert(_KEYS)
        .from_select(
            [*key_columns, "body"],
            select(
                *(bindparam(f"key_{c}", type_=_KEYS.c[c].type) for c in key_columns), body
            ).select_from(new_id),
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "key"])
        .returning(_KEYS.c.id)
        .cte("claimed")
    )
    # Accepted with its key, else received: what the caller's transaction then decides.
    was_claimed = exists(select(claimed.c.id))
    decided = {
        "status": case((was_claimed, bindparam("event_status")), else_=literal("received")),
        "http_status": case((was_claimed, bindparam("event_http_status"))),
    }
    sample = InboundRequest("webhook", "POST", "", None, {}, {}, b"")
    event_columns = list(_event(sample, 0, ""))
    event = insert(_EVENTS).from_select(
        ["id", *event_columns],
        select(
            new_id.c.id,
            *(
                decided.get(c, bindparam(f"event_{c}", type_=_EVENTS.c[c].type))
                for c in event_columns
            ),
        ).select_from(new_id),
    )
    job_columns = list(queue.webhook_job(0, None))
    job = insert(_JOBS).from_select(
        [*job_columns, "event_id"],
        select(
            *(bindparam(f"job_{c}", type_=_JOBS.c[c].type) for c in job_columns), new_id.c.id
        ).select_from(new_id.join(claimed, true())),
    )
    return (
        select(new_id.c.id.label("event_id"), claimed.c.id.label("claim_id"))
        .select_from(new_id.outerjoin(claimed, true()))
        .add_cte(event.cte("event"))
        .add_cte(job.cte("job"))
    )


_STATEMENT = _statement()
