"""Pulling records from the Zoho API through the pipeline: an import of everything (or of what
changed since a time), or the scheduled catch-up of what changed since the last one. Modules go
in dependency order, 200 records a page, asking only for the fields the tenant's mapping reads;
each page is stored in its own transaction with where the pull has got to, so a pull that is
killed continues from its last page. Records deleted in Zoho (`/deleted`) are deleted here.

A dry run stores nothing (see `dry_run`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from zoho_moodle_sync import tenants
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.models import InboundEvent, Tenant
from zoho_moodle_sync.db.reconciliation import Pull, PullModule
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITIES, ENTITY_BY_KEY, EntitySpec
from zoho_moodle_sync.errors import ConfigurationError, ZohoRejected, ZohoUnavailable
from zoho_moodle_sync.ingress import pipeline
from zoho_moodle_sync.reconcile import history
from zoho_moodle_sync.reconcile.dry_run import dry_run
from zoho_moodle_sync.reconcile.reports import (
    ModuleReport,
    Progress,
    PullKind,
    PullPlan,
    PullReport,
    Quiet,
    fields_of,
)
from zoho_moodle_sync.service import Outcome, RecordResult
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import TenantContext
from zoho_moodle_sync.zoho import Page, PageCursor, ZohoClient, deleted_entries
from zoho_moodle_sync.zoho_tokens import token_store_for

log = logging.getLogger(__name__)


class PullStopped(Exception):
    """The pull stopped before the end (Zoho unavailable or refusing); what it stored stays,
    and `--resume` continues from the page it had reached."""


async def pull(
    db: Database,
    settings: Settings,
    plan: PullPlan,
    *,
    http: httpx.AsyncClient,
    progress: Progress | None = None,
    resume: bool = False,
) -> PullReport:
    """Run `plan` (or, with `resume`, the tenant's last import that did not finish)."""
    progress = progress or Quiet()
    zoho = _client(db, settings, plan.tenant, http)
    if plan.dry_run:
        return await dry_run(db, plan, zoho, progress)
    pull_id, cursors, since = await asyncio.to_thread(_start, db, plan, resume=resume)
    if resume:
        plan = PullPlan(plan.tenant, plan.kind, plan.entities, dict.fromkeys(plan.since, since))
    elif plan.kind == "catch_up":
        await asyncio.to_thread(_interrupted, db, plan.tenant.id, pull_id)
    report = PullReport(pull_id, plan.kind, dry_run=False)
    try:
        for spec in plan.entities:
            cursor = cursors.get(spec.key)
            if cursor is not None and cursor.phase == "done":
                continue
            module = await _pull_module(db, plan, zoho, pull_id, spec, cursor, progress)
            report.modules.append(module)
    except (ZohoUnavailable, ZohoRejected) as error:
        _stop(db, pull_id, str(error))
        raise PullStopped(
            f"the pull stopped: {error}. What it stored is kept; run it again with --resume "
            "to go on from where it stopped"
        ) from error
    _finish(db, pull_id)
    return report


def _client(
    db: Database, settings: Settings, tenant: TenantContext, http: httpx.AsyncClient
) -> ZohoClient:
    with db.sessions() as session:
        row = session.get_one(Tenant, tenant.id)
        credentials = tenants.zoho_credentials(row, settings)
    if credentials is None:
        raise ConfigurationError(
            f"tenant {tenant.slug!r} has no Zoho API credentials: set them with "
            "`zoho-moodle-sync tenant set-zoho` (or ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET and "
            "ZOHO_REFRESH_TOKEN for the default tenant)"
        )
    return ZohoClient(
        http,
        credentials,
        token_store=token_store_for(db, settings.secret_key),
        requests_per_minute=settings.zoho_requests_per_minute or None,
    )


@dataclass(frozen=True)
class _Cursor:
    phase: str
    page: PageCursor


def _start(
    db: Database, plan: PullPlan, *, resume: bool
) -> tuple[int, dict[str, _Cursor], datetime | None]:
    """The pull's row (a new one, or the one to resume), and where each module had got to."""
    with db.sessions.begin() as session:
        if resume:
            stopped = session.scalar(
                select(Pull)
                .where(
                    Pull.tenant_id == plan.tenant.id,
                    Pull.kind == plan.kind,
                    Pull.state != "done",
                )
                .order_by(Pull.id.desc())
                .limit(1)
            )
            if stopped is None:
                raise ConfigurationError(f"no unfinished {plan.kind} of {plan.tenant.slug!r}")
            stopped.state, stopped.error = "running", None
            modules = session.scalars(select(PullModule).where(PullModule.pull_id == stopped.id))
            cursors = {
                m.entity: _Cursor(m.phase, PageCursor(m.page, m.page_token)) for m in modules
            }
            return stopped.id, cursors, stopped.since
        since = min((v for v in plan.since.values() if v is not None), default=None)
        row = Pull(
            tenant_id=plan.tenant.id,
            kind=plan.kind,
            since=since,
            state="running",
            started_at=utcnow(),
        )
        session.add(row)
        session.flush()
        return row.id, {}, since


async def _pull_module(
    db: Database,
    plan: PullPlan,
    zoho: ZohoClient,
    pull_id: int,
    spec: EntitySpec,
    cursor: _Cursor | None,
    progress: Progress,
) -> ModuleReport:
    module = plan.tenant.mapping.module_for(spec)
    report = await asyncio.to_thread(_module_report, db, pull_id, spec, module)
    report.started = time.monotonic()
    since = plan.since.get(spec.key)
    phase = cursor.phase if cursor is not None else "records"
    start = cursor.page if cursor is not None else None
    catching_up = plan.kind == "catch_up"
    try:
        if since is None and phase == "records":
            report.total = await _count(zoho, module)
        progress.module_started(report, start.page if start else 1)
        if phase == "records":
            fields = fields_of(plan, spec)
            records = partial(zoho.record_pages, module, fields=fields, modified_since=since)
            async for page in _pages_from(lambda at: records(start=at), start):
                await asyncio.to_thread(
                    _store_page, db, plan, pull_id, spec, page, report, catching_up=catching_up
                )
                progress.page_done(report)
            await asyncio.to_thread(_move_on, db, pull_id, spec, "deleted")
            start = None
        deleted = partial(zoho.deleted_pages, module, modified_since=since)
        async for page in _pages_from(lambda at: deleted(start=at), start):
            await asyncio.to_thread(
                _delete_page, db, plan, pull_id, spec, page, report, catching_up=catching_up
            )
            progress.page_done(report)
    except ZohoRejected as error:
        if error.code != "INVALID_MODULE":
            raise
        # The org has no such module (a college that does not use it): nothing to pull.
        report.skipped = f"Zoho has no module {module!r}"
        log.warning("tenant %s: %s; %s skipped", plan.tenant.slug, report.skipped, spec.label)
    await asyncio.to_thread(_move_on, db, pull_id, spec, "done", report.skipped)
    report.finished = time.monotonic()
    progress.module_done(report)
    if report.caught:
        log.warning(
            "tenant %s: the catch-up found %d %s change(s) that no webhook brought: "
            "webhooks are being lost (see docs/zoho-setup.md)",
            plan.tenant.slug,
            report.caught,
            spec.label,
        )
    return report


async def _count(zoho: ZohoClient, module: str) -> int | None:
    """The module's size for the estimate of the time left; an org that does not answer gets
    no estimate (never a failed pull)."""
    try:
        return await zoho.count(module)
    except ZohoRejected as error:
        if error.code == "INVALID_MODULE":
            raise
        return None


async def _pages_from(
    open_pages: Callable[[PageCursor | None], AsyncIterator[Page]], start: PageCursor | None
) -> AsyncIterator[Page]:
    """The pages from `start`, or from the first page when a resumed pull's page token has
    expired (Zoho keeps them a day): the pages stored before come again, and are UNCHANGED."""
    pages = open_pages(start)
    try:
        first = await anext(pages, None)
    except ZohoRejected as error:
        if start is None or start.token is None or error.code != "INVALID_DATA":
            raise
        log.warning("the pull's page token is no longer valid; going on from the first page")
        pages = open_pages(None)
        first = await anext(pages, None)
    if first is None:
        return
    yield first
    async for page in pages:
        yield page


def _module_report(db: Database, pull_id: int, spec: EntitySpec, module: str) -> ModuleReport:
    """The module's report so far (a resumed pull counts what it stored before)."""
    with db.sessions.begin() as session:
        row = session.get(PullModule, (pull_id, spec.key))
        if row is None:
            row = PullModule(
                pull_id=pull_id,
                entity=spec.key,
                phase="records",
                page=1,
                pages=0,
                records=0,
                outcomes={},
                caught=0,
                started_at=utcnow(),
            )
            session.add(row)
        return ModuleReport(
            spec.key, module, row.pages, row.records, Counter(row.outcomes), row.caught
        )


def _pull_event(session: Session, plan: PullPlan, spec: EntitySpec, what: str) -> int:
    """A small inbound event for each page, so that a record's history names where it came
    from; the records themselves are kept on the records, not twice."""
    event = InboundEvent(
        tenant_id=plan.tenant.id,
        source="pull" if plan.kind == "import" else "catch_up",
        method="GET",
        route=f"zoho:{plan.tenant.mapping.module_for(spec)}{what}"[:300],
        entity=spec.key,
        content_type=None,
        query={},
        headers={},
        body=b"",
        body_size=0,
        body_sha256="",
        body_truncated=False,
        status="received",
    )
    session.add(event)
    session.flush()
    return event.id


def _store_page(
    db: Database,
    plan: PullPlan,
    pull_id: int,
    spec: EntitySpec,
    page: Page,
    report: ModuleReport,
    *,
    catching_up: bool,
) -> None:
    with db.sessions.begin() as session:
        event_id = _pull_event(session, plan, spec, f" page {page.number}")
        results, released = pipeline.process_records(
            session, tenant=plan.tenant, entity=spec, raw_records=page.items, event_id=event_id
        )
        _account(session, event_id, spec, results, released, report, catching_up)
        _advance(session, pull_id, spec, "records", page, report)


def _delete_page(
    db: Database,
    plan: PullPlan,
    pull_id: int,
    spec: EntitySpec,
    page: Page,
    report: ModuleReport,
    *,
    catching_up: bool,
) -> None:
    ids = [entry.id for entry in deleted_entries(page)]
    with db.sessions.begin() as session:
        event_id = _pull_event(session, plan, spec, f"/deleted page {page.number}")
        results = pipeline.delete_records(
            session, tenant=plan.tenant, entity=spec, zoho_ids=ids, event_id=event_id
        )
        deleted = [r for r in results if r.outcome is Outcome.DELETED]
        _account(session, event_id, spec, deleted, [], report, catching_up)
        _advance(session, pull_id, spec, "deleted", page, report, records=False)


def _account(
    session: Session,
    event_id: int,
    spec: EntitySpec,
    results: list[RecordResult],
    released: list[RecordResult],
    report: ModuleReport,
    catching_up: bool,
) -> None:
    report.note(results, catching_up=catching_up)
    summary = pipeline.SyncReport(event_id, spec.key, results, released)
    pipeline.finish(session, [summary])


def _advance(
    session: Session,
    pull_id: int,
    spec: EntitySpec,
    phase: str,
    page: Page,
    report: ModuleReport,
    *,
    records: bool = True,
) -> None:
    """Where the module goes on from, committed with the page it stored."""
    row = session.get_one(PullModule, (pull_id, spec.key))
    following = page.next or PageCursor(page.number + 1)
    row.phase, row.page, row.page_token = phase, following.page, following.token
    report.pages += 1
    if records:
        report.records += len(page.items)
    row.pages, row.records = report.pages, report.records
    row.outcomes, row.caught = dict(report.outcomes), report.caught


def _move_on(
    db: Database, pull_id: int, spec: EntitySpec, phase: str, skipped: str | None = None
) -> None:
    with db.sessions.begin() as session:
        row = session.get_one(PullModule, (pull_id, spec.key))
        row.phase, row.page, row.page_token = phase, 1, None
        if phase == "done":
            row.finished_at, row.skipped = utcnow(), skipped


def _interrupted(db: Database, tenant_id: int, pull_id: int) -> None:
    """Catch-ups of the tenant still marked running were cut short (their worker died: only one
    runs at a time); say so."""
    with db.sessions.begin() as session:
        session.execute(
            update(Pull)
            .where(
                Pull.tenant_id == tenant_id,
                Pull.kind == "catch_up",
                Pull.state == "running",
                Pull.id != pull_id,
            )
            .values(state="stopped", error="interrupted: its worker stopped before the end")
        )


def _stop(db: Database, pull_id: int, error: str) -> None:
    with db.sessions.begin() as session:
        row = session.get_one(Pull, pull_id)
        row.state, row.error = "stopped", error[:4000]


def _finish(db: Database, pull_id: int) -> None:
    with db.sessions.begin() as session:
        row = session.get_one(Pull, pull_id)
        row.state, row.finished_at = "done", utcnow()


def catch_up_plan(db: Database, settings: Settings, tenant: TenantContext) -> PullPlan:
    """Every entity, each since its last pull to the end (less the overlap)."""
    with db.sessions() as session:
        since: dict[str, datetime | None] = {}
        since |= history.catch_up_since(
            session,
            tenant_id=tenant.id,
            entities=[spec.key for spec in ENTITIES],
            now=utcnow(),
            overlap=timedelta(minutes=settings.reconcile_overlap_minutes),
        )
    return PullPlan(tenant, "catch_up", ENTITIES, since)


def plan_for(
    db: Database,
    tenant: TenantContext,
    *,
    kind: PullKind,
    entities: Sequence[str] | None,
    since: datetime | None,
    dry_run: bool = False,
) -> PullPlan:
    """The entities to pull, in dependency order (all by default), each since `since`."""
    unknown = sorted(set(entities or ()) - set(ENTITY_BY_KEY))
    if unknown:
        raise ConfigurationError(
            f"unknown entity {', '.join(unknown)}; known: {', '.join(ENTITY_BY_KEY)}"
        )
    chosen = tuple(spec for spec in ENTITIES if not entities or spec.key in entities)
    return PullPlan(tenant, kind, chosen, dict.fromkeys((s.key for s in chosen), since), dry_run)
