"""The queue's mechanism: enqueue, claim with a lease, renew, and settle with one verdict per job.

A job is claimed by one worker at a time (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one
writer), for a lease that the worker renews while it works; a job whose worker died is taken
over once its lease has run out. Every verdict is written by one statement per group of alike
jobs; putting a job back in the queue never collides with a newer job of the same key (the newer
one carries on, and this one is superseded).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar, cast

from sqlalchemy import Table, and_, func, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import OPEN_CONDITION, OPEN_STATES, Job, JobKind, JobState
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import DELIVERED_KEYS
from zoho_moodle_sync.service.sql import chunks
from zoho_moodle_sync.settings import Settings

VerdictKind = Literal["done", "wait", "retry", "relink", "dead", "hold", "release", "again"]
_REOPENING = frozenset({"wait", "retry", "relink", "hold", "release", "again"})


@dataclass(frozen=True)
class Verdict:
    """What became of a claimed job. `again` puts a periodic job back, due in `delay` seconds."""

    kind: VerdictKind
    reason: str | None = None
    errorcode: str | None = None
    delay: float | None = None


RELEASE = Verdict("release")
"""No decision: the job goes back to the queue as it was (a worker stopping, a lost lease)."""


@dataclass(frozen=True)
class Claimed:
    """A job as its worker holds it."""

    id: int
    kind: str
    tenant_id: int | None
    entity: str | None
    zoho_id: str | None
    action: str | None
    event_id: int | None
    attempts: int
    confirmed: bool

    @property
    def record(self) -> tuple[str, str]:
        """(entity, Zoho id) of a delivery job."""
        assert self.entity is not None
        assert self.zoho_id is not None
        return self.entity, self.zoho_id


def delivery_key(tenant_id: int, entity: str, zoho_id: str) -> str:
    return f"{JobKind.DELIVER}:{tenant_id}:{entity}:{zoho_id}"


def scheduled_key(kind: JobKind, tenant_id: int | None) -> str:
    return f"{kind}:{'*' if tenant_id is None else tenant_id}"


def enqueue_delivery(
    session: Session,
    *,
    tenant_id: int,
    entity: str,
    zoho_ids: Iterable[str],
    action: str = "sync",
    now: datetime | None = None,
) -> int:
    """One open delivery job per record: insert, or turn the record's open job into this one.
    Entities with no Moodle counterpart get none."""
    if entity not in DELIVERED_KEYS:
        return 0
    now = now or utcnow()
    rows = [
        {
            "kind": JobKind.DELIVER.value,
            "tenant_id": tenant_id,
            "key": delivery_key(tenant_id, entity, zoho_id),
            "entity": entity,
            "zoho_id": zoho_id,
            "action": action,
            "state": JobState.PENDING.value,
            "attempts": 0,
            "due_at": now,
            "confirmed": False,
            "created_at": now,
            "updated_at": now,
        }
        for zoho_id in dict.fromkeys(zoho_ids)
    ]
    if not rows:
        return 0
    statement = _delivery_upsert(session.get_bind().dialect.name)
    for start in range(0, len(rows), 500):
        session.execute(statement, rows[start : start + 500])
    return len(rows)


def enqueue_webhook(
    session: Session, *, tenant_id: int, event_id: int, due_at: datetime | None = None
) -> None:
    """The job that completes an accepted webhook event."""
    row = {**webhook_job(tenant_id, due_at), "event_id": event_id}
    session.connection().execute(_INSERT_JOB, row)


def webhook_job(tenant_id: int, due_at: datetime | None) -> dict[str, Any]:
    """The columns of the job `enqueue_webhook` stores, but for its event."""
    now = utcnow()
    return {
        "kind": JobKind.WEBHOOK.value,
        "tenant_id": tenant_id,
        "state": JobState.PENDING.value,
        "attempts": 0,
        "due_at": due_at or now,
        "confirmed": False,
        "created_at": now,
        "updated_at": now,
    }


def ensure_scheduled(
    session: Session, *, kind: JobKind, tenant_id: int | None, due_at: datetime
) -> None:
    """A periodic job of `kind` for the tenant (or for all, None), unless one is open."""
    now = utcnow()
    statement = _insert(session).values(
        kind=kind.value,
        tenant_id=tenant_id,
        key=scheduled_key(kind, tenant_id),
        state=JobState.PENDING.value,
        attempts=0,
        due_at=due_at,
        confirmed=False,
        created_at=now,
        updated_at=now,
    )
    session.execute(
        statement.on_conflict_do_nothing(index_elements=["key"], index_where=text(OPEN_CONDITION))
    )


_INSERT_JOB = insert(cast(Table, Job.__table__))


@functools.cache
def _delivery_upsert(dialect_name: str) -> Any:
    """Insert delivery jobs, or turn a record's open job into the new one; built once per
    database (the statement is the same for every batch, and building it costs as much as a
    small batch's rows)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(Job.__table__)
    return statement.on_conflict_do_update(
        index_elements=["key"],
        index_where=text(OPEN_CONDITION),
        set_={
            "action": statement.excluded.action,
            "state": JobState.PENDING.value,
            "attempts": 0,
            "due_at": statement.excluded.due_at,
            "confirmed": False,
            "wait_reason": None,
            "updated_at": statement.excluded.updated_at,
        },
    )


def _insert(session: Session) -> Any:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(Job.__table__)


def due_condition(now: datetime) -> Any:
    """Jobs a worker may take now: due pending or waiting ones, and running ones whose worker
    let its lease run out (it crashed or was killed)."""
    return or_(
        and_(Job.state.in_((JobState.PENDING, JobState.WAITING)), Job.due_at <= now),
        and_(Job.state == JobState.RUNNING, Job.lease_until < now),
    )


def claim(
    db: Database,
    *,
    kind: JobKind,
    worker_id: str,
    limit: int,
    lease_seconds: float,
    tenant_id: int | None = None,
    event_id: int | None = None,
    early_seconds: float = 0.0,
) -> list[Claimed]:
    """Take up to `limit` due jobs of `kind` (of one tenant, or about one event, when given),
    oldest first; when some are due, pending jobs of their tenants due within `early_seconds`
    come along (so that work arriving close together is done together). On PostgreSQL rows
    another worker is claiming are skipped; SQLite has one writer at a time."""
    now = utcnow()
    with db.sessions.begin() as session:
        locking = session.get_bind().dialect.name == "postgresql"
        query = select(*_CLAIMED).where(Job.kind == kind.value, due_condition(now))
        if tenant_id is not None:
            query = query.where(Job.tenant_id == tenant_id)
        if event_id is not None:
            query = query.where(Job.event_id == event_id)
        query = query.order_by(Job.id).limit(limit)
        if locking:
            query = query.with_for_update(skip_locked=True)
        jobs = list(session.execute(query))
        if jobs and early_seconds > 0 and event_id is None and len(jobs) < limit:
            soon = select(*_CLAIMED).where(
                Job.kind == kind.value,
                Job.state == JobState.PENDING,
                Job.due_at > now,
                Job.due_at <= now + timedelta(seconds=early_seconds),
                Job.tenant_id.in_({job.tenant_id for job in jobs}),
            )
            soon = soon.order_by(Job.id).limit(limit - len(jobs))
            if locking:
                soon = soon.with_for_update(skip_locked=True)
            jobs.extend(session.execute(soon))
        busy = _keys_running_elsewhere(session, jobs, now) if kind is JobKind.DELIVER else set()
        # one worker at a time per record: changes reach Moodle in order
        claimed = [
            Claimed(
                job.id,
                job.kind,
                job.tenant_id,
                job.entity,
                job.zoho_id,
                job.action,
                job.event_id,
                job.attempts,
                job.confirmed,
            )
            for job in jobs
            if job.key is None or job.key not in busy
        ]
        for ids in chunks([job.id for job in claimed]):
            session.execute(
                update(Job)
                .where(Job.id.in_(ids))
                .values(
                    state=JobState.RUNNING.value,
                    claimed_by=worker_id,
                    lease_until=now + timedelta(seconds=lease_seconds),
                    updated_at=now,
                )
            )
        return claimed


_CLAIMED = (
    Job.id,
    Job.kind,
    Job.tenant_id,
    Job.entity,
    Job.zoho_id,
    Job.action,
    Job.event_id,
    Job.attempts,
    Job.confirmed,
    Job.key,
)
"""The columns of a job a claim reads."""


def still_arriving(
    db: Database, *, tenant_id: int, quiet_seconds: float, max_seconds: float
) -> bool:
    """Whether the tenant's changes are still coming in, one by one as webhooks bring them: its
    newest fresh delivery job was queued less than `quiet_seconds` ago, and its oldest less
    than `max_seconds` ago. Waiting for the lull lets one claim deliver them together."""
    if quiet_seconds <= 0:
        return False
    now = utcnow()
    with db.sessions() as session:
        newest, oldest = session.execute(
            select(func.max(Job.updated_at), func.min(Job.updated_at)).where(
                Job.kind == JobKind.DELIVER,
                Job.tenant_id == tenant_id,
                Job.state == JobState.PENDING,
                Job.attempts == 0,
            )
        ).one()
    if newest is None or oldest is None:
        return False
    quiet = now - newest >= timedelta(seconds=quiet_seconds)
    waited_enough = now - oldest >= timedelta(seconds=max_seconds)
    return not quiet and not waited_enough


def _keys_running_elsewhere(session: Session, jobs: Sequence[Any], now: datetime) -> set[str]:
    """Keys of `jobs` (rows with `id` and `key`) that another live job is being worked on for."""
    keys = {job.key for job in jobs if job.key is not None}
    if not keys:
        return set()
    rows = session.scalars(
        select(Job.key).where(
            Job.state == JobState.RUNNING,
            Job.lease_until >= now,
            Job.key.in_(keys),
            Job.id.not_in([job.id for job in jobs]),
        )
    )
    return {key for key in rows if key is not None}


class _Identified(Protocol):
    @property
    def id(self) -> int: ...


_J = TypeVar("_J", bound=_Identified)


def renew(db: Database, *, worker_id: str, jobs: Sequence[_J], lease_seconds: float) -> list[_J]:
    """Extend the lease on the jobs this worker still holds; a job whose lease ran out meanwhile
    may belong to another worker now, and is left out."""
    if not jobs:
        return []
    lease_until = utcnow() + timedelta(seconds=lease_seconds)
    with db.sessions.begin() as session:
        held = _still_held(session, worker_id, jobs)
        if held:
            session.execute(
                update(Job)
                .where(Job.id.in_([job.id for job in held]))
                .values(lease_until=lease_until)
            )
    return held


SettleHook = Callable[[Session, list[Claimed]], None]
"""Kind-specific writes made in the settling transaction, given the jobs still held."""


def settle(
    db: Database,
    *,
    worker_id: str,
    jobs: Sequence[Claimed],
    verdicts: dict[int, Verdict],
    settings: Settings,
    hook: SettleHook | None = None,
) -> None:
    """Write every job's verdict (a job without one goes back as it was) in one transaction,
    with what `hook` writes. Only jobs this worker still holds are settled: one whose lease ran
    out and that another worker took is that worker's to settle."""
    now = utcnow()
    with db.sessions.begin() as session:
        held = _still_held(session, worker_id, jobs)
        if hook is not None:
            hook(session, held)
        alike: dict[tuple[tuple[str, Any], ...], list[Claimed]] = {}
        for job in held:
            values = _settled_values(job, verdicts.get(job.id, RELEASE), now, settings)
            alike.setdefault(tuple(sorted(values.items())), []).append(job)
        for columns, group in alike.items():
            values = dict(columns)
            if values["state"] in OPEN_STATES:
                _reopen(session, worker_id, group, values, now)
            else:
                _write(session, worker_id, [job.id for job in group], values)
        done = [job for job in held if verdicts.get(job.id, RELEASE).kind == "done"]
        _supersede_dead(session, done, now)


def _still_held(session: Session, worker_id: str, jobs: Sequence[_J]) -> list[_J]:
    """`jobs` this worker still holds, locked until the settlement commits (so no other worker
    can claim them meanwhile)."""
    if not jobs:
        return []
    query = select(Job.id).where(
        Job.id.in_([job.id for job in jobs]),
        Job.claimed_by == worker_id,
        Job.state == JobState.RUNNING,
    )
    if session.get_bind().dialect.name == "postgresql":
        # In id order, as renew locks them: two transactions of one worker never deadlock.
        query = query.order_by(Job.id).with_for_update()
    held = set(session.scalars(query))
    return [job for job in jobs if job.id in held]


def _write(session: Session, worker_id: str, ids: list[int], values: dict[str, Any]) -> None:
    session.execute(
        update(Job).where(Job.id.in_(ids), Job.claimed_by == worker_id).values(**values)
    )


def _reopen(
    session: Session,
    worker_id: str,
    jobs: list[Claimed],
    values: dict[str, Any],
    now: datetime,
) -> None:
    """Put jobs back in the queue, unless a newer job of the same key is already there: then
    that one carries on and these are superseded. The check and the write are one statement,
    and a newer job committed in between (the write then breaks the one-open-job-per-key rule)
    is caught by a savepoint and settled the same way, job by job."""
    newer = Job.__table__.alias("newer")
    only_one_open = ~(
        select(newer.c.id)
        .where(
            newer.c.key == Job.key,
            newer.c.id != Job.id,
            newer.c.state.in_([s.value for s in OPEN_STATES]),
        )
        .exists()
    )
    ids = [job.id for job in jobs]
    try:
        with session.begin_nested():
            session.execute(
                update(Job)
                .where(Job.id.in_(ids), Job.claimed_by == worker_id)
                .where(or_(Job.key.is_(None), only_one_open))
                .values(**values)
            )
    except IntegrityError:
        if len(jobs) > 1:
            for job in jobs:
                _reopen(session, worker_id, [job], values, now)
            return
    superseded = {
        "state": JobState.SUPERSEDED.value,
        "finished_at": now,
        "updated_at": now,
        "claimed_by": None,
        "lease_until": None,
        "wait_reason": "a newer job for the same record is queued",
    }
    session.execute(
        update(Job)
        .where(Job.id.in_(ids), Job.claimed_by == worker_id, Job.state == JobState.RUNNING)
        .values(**superseded)
    )


def _settled_values(
    job: Claimed, verdict: Verdict, now: datetime, settings: Settings
) -> dict[str, Any]:
    """The job's columns once the verdict is applied."""
    values: dict[str, Any] = {"updated_at": now, "claimed_by": None, "lease_until": None}
    if verdict.kind == "done":
        values |= {"state": JobState.DONE, "finished_at": now, "wait_reason": verdict.reason}
    elif verdict.kind == "wait":
        due = now + timedelta(seconds=settings.worker_wait_seconds)
        values |= {"state": JobState.WAITING, "due_at": due, "wait_reason": verdict.reason}
    elif verdict.kind == "hold":
        values |= {"state": JobState.HELD, "wait_reason": verdict.reason}
    elif verdict.kind in ("relink", "release"):
        values |= {"state": JobState.PENDING, "due_at": now, "wait_reason": verdict.reason}
    elif verdict.kind == "again":
        due = now + timedelta(seconds=verdict.delay or 0)
        values |= {"state": JobState.PENDING, "due_at": due, "attempts": 0}
        values |= {"wait_reason": verdict.reason, "last_errorcode": None, "last_error": None}
    elif verdict.kind == "retry":
        attempts = job.attempts + 1
        values |= {"attempts": attempts, "last_errorcode": verdict.errorcode}
        values["last_error"] = verdict.reason
        if attempts >= settings.worker_max_attempts:
            values |= {"state": JobState.DEAD, "finished_at": now}
            values["last_error"] = f"gave up after {attempts} attempts: {verdict.reason}"
        else:
            values |= {"state": JobState.PENDING, "due_at": now + backoff(attempts, settings)}
    else:
        values |= {
            "state": JobState.DEAD,
            "finished_at": now,
            "attempts": job.attempts + 1,
            "last_errorcode": verdict.errorcode,
            "last_error": verdict.reason,
        }
    values["state"] = JobState(values["state"]).value
    return values


def gives_up(job: Claimed, verdict: Verdict, settings: Settings) -> bool:
    """Whether this verdict makes the job dead (a last failed attempt, or a permanent one)."""
    if verdict.kind == "dead":
        return True
    return verdict.kind == "retry" and job.attempts + 1 >= settings.worker_max_attempts


def backoff(attempts: int, settings: Settings) -> timedelta:
    """Exponential with full jitter in its upper half: 5 s, 10 s, 20 s ... capped."""
    ceiling = min(
        settings.worker_backoff_max_seconds, settings.worker_backoff_seconds * 2 ** (attempts - 1)
    )
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 (not a secret)


def _supersede_dead(session: Session, done: Sequence[Claimed], now: datetime) -> None:
    """A job done now makes the earlier dead jobs of its key history, not work."""
    by_key: dict[str, int] = {}
    for job in done:
        if job.kind == JobKind.DELIVER and job.tenant_id is not None and job.zoho_id:
            key = delivery_key(job.tenant_id, job.record[0], job.zoho_id)
            by_key[key] = max(by_key.get(key, 0), job.id)
    if not by_key:
        return
    dead = session.execute(
        select(Job.id, Job.key).where(Job.state == JobState.DEAD, Job.key.in_(by_key))
    ).all()
    earlier = [job_id for job_id, key in dead if key is not None and job_id < by_key[key]]
    if earlier:
        session.execute(
            update(Job)
            .where(Job.id.in_(earlier))
            .values(state=JobState.SUPERSEDED.value, updated_at=now)
        )
