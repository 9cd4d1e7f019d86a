"""A dry run of a pull: every page through the pipeline in one transaction that is rolled back,
so the outcomes and the deliveries they would queue are exactly a pull's, and nothing is written."""

from __future__ import annotations

import time
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.jobs import Job, JobKind, JobState, MoodleLink
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITIES, EntitySpec
from zoho_moodle_sync.errors import ZohoRejected
from zoho_moodle_sync.ingress import pipeline
from zoho_moodle_sync.reconcile.reports import (
    EXAMPLES,
    ModuleReport,
    MoodleChange,
    Progress,
    PullPlan,
    PullReport,
    fields_of,
)
from zoho_moodle_sync.service import Outcome
from zoho_moodle_sync.zoho import ZohoClient, deleted_entries


async def dry_run(db: Database, plan: PullPlan, zoho: ZohoClient, progress: Progress) -> PullReport:
    """Every page through the pipeline in one transaction, rolled back at the end: the
    outcomes, and the deliveries they queue, are exactly what a pull would give, and nothing
    is written."""
    report = PullReport(None, plan.kind, dry_run=True)
    began = utcnow()
    with db.sessions() as session, session.begin():
        for spec in plan.entities:
            module = plan.tenant.mapping.module_for(spec)
            module_report = ModuleReport(spec.key, module, started=time.monotonic())
            progress.module_started(module_report, 1)
            try:
                await _dry_module(session, plan, zoho, spec, module_report, progress)
            except ZohoRejected as error:
                if error.code != "INVALID_MODULE":
                    raise
                module_report.skipped = f"Zoho has no module {module!r}"
            module_report.finished = time.monotonic()
            progress.module_done(module_report)
            report.modules.append(module_report)
        report.moodle = _queued_changes(session, plan.tenant.id, began)
        session.rollback()
    return report


async def _dry_module(
    session: Session,
    plan: PullPlan,
    zoho: ZohoClient,
    spec: EntitySpec,
    report: ModuleReport,
    progress: Progress,
) -> None:
    since = plan.since.get(spec.key)
    fields = fields_of(plan, spec)
    async for page in zoho.record_pages(report.module, fields=fields, modified_since=since):
        results, _ = pipeline.process_records(
            session, tenant=plan.tenant, entity=spec, raw_records=page.items, event_id=None
        )
        report.note(results, catching_up=False)
        report.pages += 1
        report.records += len(page.items)
        progress.page_done(report)
    async for page in zoho.deleted_pages(report.module, modified_since=since):
        ids = [entry.id for entry in deleted_entries(page)]
        results = pipeline.delete_records(
            session, tenant=plan.tenant, entity=spec, zoho_ids=ids, event_id=None
        )
        report.note([r for r in results if r.outcome is Outcome.DELETED], catching_up=False)
        report.pages += 1
        progress.page_done(report)


def _queued_changes(session: Session, tenant_id: int, since: datetime) -> list[MoodleChange]:
    """The deliveries queued since `since` (in this transaction): per entity, what would be
    created in Moodle, updated, or removed, with the first records of each."""
    rows = session.execute(
        select(Job.entity, Job.zoho_id, Job.action, MoodleLink.moodle_id)
        .outerjoin(
            MoodleLink,
            (MoodleLink.tenant_id == Job.tenant_id)
            & (MoodleLink.entity == Job.entity)
            & (MoodleLink.zoho_id == Job.zoho_id),
        )
        .where(
            Job.tenant_id == tenant_id,
            Job.kind == JobKind.DELIVER,
            Job.state == JobState.PENDING,
            Job.updated_at >= since,
        )
        .order_by(Job.id)
    )
    changes: dict[tuple[str, str], MoodleChange] = {}
    for entity, zoho_id, action, moodle_id in rows:
        if entity is None or zoho_id is None:
            continue
        change = "remove" if action == "remove" else "update" if moodle_id else "create"
        found = changes.setdefault((entity, change), MoodleChange(entity, change))
        found.count += 1
        if len(found.examples) < EXAMPLES:
            found.examples.append(zoho_id)
    order = {spec.key: index for index, spec in enumerate(ENTITIES)}
    return sorted(changes.values(), key=lambda c: (order.get(c.entity, 99), c.change))
