"""Completing accepted webhook events, as jobs of the queue: fetch what Zoho only named by id
(one call per module for up to 100 ids, whatever the number of events that named them), then run
the records through the same pipeline as `/v1/sync`, or mark the gone ones deleted.

Zoho being unreachable retries the jobs with backoff; a refusal (bad credentials, none set) makes
them dead, and their events `failed`, for an operator to replay once it is fixed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy.orm import Session

from zoho_moodle_sync import tenants
from zoho_moodle_sync.db.jobs import JobKind
from zoho_moodle_sync.db.models import InboundEvent, Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.errors import (
    ConfigurationError,
    SyncServiceError,
    ZohoRejected,
    ZohoUnavailable,
)
from zoho_moodle_sync.ingress import accepted
from zoho_moodle_sync.ingress.accepted import AcceptedEvent, Completion
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.jobs.lease import Lease, settle_surely
from zoho_moodle_sync.jobs.queue import Claimed, SettleHook, Verdict
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.zoho import ZohoClient, ZohoCredentials
from zoho_moodle_sync.zoho_tokens import token_store_for

log = logging.getLogger(__name__)

EVENTS_TOGETHER = 500
"""Events stored in one transaction at most (a burst of webhooks completed together)."""

NO_CREDENTIALS = (
    "this webhook names records by id only; the service needs the tenant's Zoho API "
    "credentials (ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET, ZOHO_REFRESH_TOKEN, or `tenant set-zoho`) "
    "to fetch them. Set them, then replay this event"
)


@dataclass
class _Work:
    """The claimed jobs of one tenant, and what the Zoho API said of the ids they name."""

    credentials: ZohoCredentials | None
    events: list[tuple[Claimed, AcceptedEvent]] = field(default_factory=list)
    fetched: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Zoho id → the record as the API returns it now."""
    failure: Verdict | None = None


async def complete_due(
    db: Database,
    settings: Settings,
    *,
    worker_id: str,
    http: httpx.AsyncClient,
    event_id: int | None = None,
) -> int:
    """Claim the due webhook jobs (of one event, when given) and complete their events; how
    many jobs were settled."""
    jobs = await asyncio.to_thread(
        lambda: queue.claim(
            db,
            kind=JobKind.WEBHOOK,
            worker_id=worker_id,
            limit=settings.worker_claim_size,
            lease_seconds=settings.worker_lease_seconds,
            event_id=event_id,
            early_seconds=settings.webhook_fetch_window_seconds,
        )
    )
    if not jobs:
        return 0
    async with Lease(
        db, worker_id=worker_id, jobs=jobs, lease_seconds=settings.worker_lease_seconds
    ):
        verdicts = await complete(db, settings, jobs, http=http)
        await settle_surely(
            db,
            worker_id=worker_id,
            jobs=jobs,
            verdicts=verdicts,
            settings=settings,
            hook=_failed_events(verdicts, settings),
        )
    return len(jobs)


async def complete(
    db: Database, settings: Settings, jobs: Sequence[Claimed], *, http: httpx.AsyncClient
) -> dict[int, Verdict]:
    """A verdict per job: its event stored (done), or why not."""
    verdicts: dict[int, Verdict] = {}
    work = await asyncio.to_thread(_read, db, settings, jobs, verdicts)
    store = token_store_for(db, settings.secret_key)
    for tenant_work in work.values():
        await _fetch(tenant_work, store, http)
    for tenant_work in work.values():
        verdicts |= await asyncio.to_thread(_store, db, tenant_work)
    return verdicts


def _read(
    db: Database, settings: Settings, jobs: Sequence[Claimed], verdicts: dict[int, Verdict]
) -> dict[int, _Work]:
    work: dict[int, _Work] = {}
    with db.sessions() as session:
        accepted = _accepted(session, jobs)
        for job in jobs:
            event = accepted.get(job.id)
            if event is None:
                verdicts[job.id] = Verdict("done", "the event names nothing this tenant syncs")
                continue
            tenant_id = event.tenant.id
            if tenant_id not in work:
                tenant = session.get_one(Tenant, tenant_id)
                work[tenant_id] = _Work(tenants.zoho_credentials(tenant, settings))
            work[tenant_id].events.append((job, event))
    return work


def _accepted(session: Session, jobs: Sequence[Claimed]) -> dict[int, AcceptedEvent | None]:
    """The jobs' events read back (together; one by one if one of them cannot be)."""
    ids = {job.id: job.event_id for job in jobs if job.event_id is not None}
    try:
        events = accepted.accepted_webhooks(session, list(ids.values()))
        return {job_id: events[event_id] for job_id, event_id in ids.items()}
    except SyncServiceError:
        pass
    read: dict[int, AcceptedEvent | None] = {}
    for job_id, event_id in ids.items():
        try:
            read[job_id] = accepted.accepted_webhook(session, event_id)
        except SyncServiceError:  # stored by an earlier version that read it differently
            log.exception("webhook event %s cannot be read back", event_id)
            read[job_id] = None
    return read


async def _fetch(work: _Work, store: Any, http: httpx.AsyncClient) -> None:
    """One look-up per module for every id the tenant's id-only upserts name."""
    wanted: dict[str, list[str]] = {}
    for _, event in work.events:
        if event.event.operation != "delete":
            wanted.setdefault(event.event.module, []).extend(event.event.ids)
    if not wanted or work.credentials is None:
        return
    zoho = ZohoClient(http, work.credentials, token_store=store)
    try:
        for module, ids in wanted.items():
            for record in await zoho.get_records(module, ids):
                work.fetched[str(record.get("id"))] = dict(record)
    except ZohoUnavailable as error:
        work.failure = Verdict("retry", f"Zoho is unavailable: {error}", "zoho_unavailable")
    except ZohoRejected as error:
        work.failure = Verdict("dead", f"Zoho refused: {error}", error.code or "zoho_rejected")


def _store(db: Database, work: _Work) -> dict[int, Verdict]:
    """Store the tenant's events, in transactions of up to `EVENTS_TOGETHER` events; events
    that cannot be stored together (one of them fails) are stored one by one."""
    verdicts: dict[int, Verdict] = {}
    ready: list[tuple[Claimed, Completion]] = []
    for job, event in work.events:
        what = _what_to_store(work, event)
        if isinstance(what, Verdict):
            verdicts[job.id] = what
        else:
            ready.append((job, what))
    for start in range(0, len(ready), EVENTS_TOGETHER):
        together = ready[start : start + EVENTS_TOGETHER]
        try:
            accepted.complete_webhooks(db, [completion for _, completion in together])
        except Exception:
            if len(together) == 1:
                verdicts[together[0][0].id] = _store_one(db, together[0][1])
                continue
            log.info("%d webhook events could not be stored together; one by one", len(together))
            for job, completion in together:
                verdicts[job.id] = _store_one(db, completion)
        else:
            verdicts.update((job.id, Verdict("done")) for job, _ in together)
    return verdicts


def _what_to_store(work: _Work, event: AcceptedEvent) -> Completion | Verdict:
    """The webhook is a hint: what Zoho's API says now is stored."""
    hint = event.event
    if hint.operation == "delete":
        return Completion(event, [], hint.ids)
    if work.credentials is None:
        if not hint.records:
            return Verdict("dead", NO_CREDENTIALS, "zoho_not_configured")
        return Completion(event, hint.records, [])
    if work.failure is not None:
        return work.failure
    records = [work.fetched[i] for i in dict.fromkeys(hint.ids) if i in work.fetched]
    gone = [i for i in hint.ids if i not in work.fetched]  # no longer in Zoho: deleted
    return Completion(event, records, gone)


def _store_one(db: Database, completion: Completion) -> Verdict:
    try:
        accepted.complete_webhooks(db, [completion])
    except ConfigurationError as error:
        return Verdict("dead", str(error), "configuration_error")
    except Exception as error:  # a defect: retried, and shown on the job and the event
        log.exception("webhook event %s failed", completion.accepted.event_id)
        return Verdict("retry", f"internal error: {type(error).__name__}: {error}", "internal")
    return Verdict("done")


def _failed_events(verdicts: dict[int, Verdict], settings: Settings) -> SettleHook:
    """Events whose job gives up are marked failed with the reason, for an operator to replay."""

    def write(session: Session, held: list[Claimed]) -> None:
        for job in held:
            verdict = verdicts.get(job.id, queue.RELEASE)
            if job.event_id is not None and queue.gives_up(job, verdict, settings):
                log.warning("webhook event %s not completed: %s", job.event_id, verdict.reason)
                event = session.get(InboundEvent, job.event_id)
                if event is not None:
                    event.status = "failed"
                    event.error = (verdict.reason or "failed")[:4000]

    return write
