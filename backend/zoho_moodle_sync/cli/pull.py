"""`zoho-moodle-sync pull`: import a tenant's records from the Zoho API, with a progress bar per
module on a terminal (plain log lines elsewhere) and a summary table at the end."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from zoho_moodle_sync import tenants
from zoho_moodle_sync.api.app import prepare_database
from zoho_moodle_sync.cli.common import (
    DatabaseUrl,
    app,
    fail,
    open_database,
    settings_for,
    tenant_row,
)
from zoho_moodle_sync.errors import ConfigurationError
from zoho_moodle_sync.reconcile import pull as pulling
from zoho_moodle_sync.reconcile.reports import ModuleReport, PullReport

PLAIN_EVERY_SECONDS = 10.0
"""How often a pull not on a terminal logs how far it has got within a module."""


@app.command("pull")
def pull(
    slug: Annotated[str, typer.Argument(help="The tenant to import (e.g. default).")],
    entity: Annotated[
        list[str] | None,
        typer.Option(
            "--entity", help="Only this entity (repeatable): programs, units, teachers, ..."
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only records modified after this ISO date or time (UTC if no zone)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write nothing; show what would happen.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Go on with the last import that did not finish.")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Import every record of the tenant's Zoho modules through the same pipeline as webhooks
    (same outcomes, parking and Moodle delivery), in dependency order, and the records deleted
    in Zoho. Safe to run again: what is stored already comes out UNCHANGED. Migrates the
    database first unless AUTO_MIGRATE=false, as `serve` does."""
    if dry_run and resume:
        fail("--dry-run and --resume cannot be used together")
    settings = settings_for(database_url)
    db = open_database(settings)
    prepare_database(db, settings)  # a fresh install may import before it ever served
    with db.sessions() as session:
        context = tenants.context_of(tenant_row(session, slug))
    try:
        plan = pulling.plan_for(
            db,
            context,
            kind="import",
            entities=entity,
            since=_moment(since) if since else None,
            dry_run=dry_run,
        )
    except ConfigurationError as error:
        fail(str(error))
    console = Console(stderr=True)
    view = BarView(console) if console.is_terminal else LogView()

    async def run() -> PullReport:
        async with httpx.AsyncClient(timeout=60) as http:
            with view:
                return await pulling.pull(
                    db, settings, plan, http=http, progress=view, resume=resume
                )

    try:
        report = asyncio.run(run())
    except pulling.PullStopped as error:
        fail(str(error))
    except ConfigurationError as error:
        fail(str(error))
    out = Console()
    out.print(summary_table(report))
    if report.dry_run:
        out.print(moodle_table(report))
        out.print("Dry run: nothing was written.")


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since {value!r} is not an ISO date or time such as 2026-09-01T08:00:00+01:00")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _outcomes(report: ModuleReport) -> str:
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(report.outcomes.items())) or "-"


class BarView:
    """A progress bar per module: pages, records (of the module's count when Zoho gives it),
    outcomes so far, rate and time left."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.fields[module]:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("records, {task.fields[pages]} pages"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[outcomes]}"),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> BarView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def module_started(self, report: ModuleReport, resumed_from: int) -> None:
        self.tasks[report.entity] = self.progress.add_task(
            report.entity,
            total=report.total,
            completed=report.records,
            module=f"{report.entity} ({report.module})",
            pages=report.pages,
            rate="",
            outcomes=_outcomes(report),
        )

    def page_done(self, report: ModuleReport) -> None:
        elapsed = max(time.monotonic() - report.started, 1e-6)
        self.progress.update(
            self.tasks[report.entity],
            completed=report.records,
            pages=report.pages,
            rate=f"{report.records / elapsed:,.0f}/s",
            outcomes=_outcomes(report),
        )

    def module_done(self, report: ModuleReport) -> None:
        task = self.tasks[report.entity]
        self.progress.update(
            task,
            total=report.records,
            completed=report.records,
            outcomes=report.skipped or _outcomes(report),
        )


class LogView:
    """Log lines instead of bars, for a pull whose output is not a terminal (cron, a pipe)."""

    def __init__(self) -> None:
        self.log = logging.getLogger("zoho_moodle_sync.pull")
        self.last = 0.0
        if not logging.getLogger().handlers:
            logging.basicConfig(
                stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(message)s"
            )
        self.log.setLevel(logging.INFO)

    def __enter__(self) -> LogView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def module_started(self, report: ModuleReport, resumed_from: int) -> None:
        total = f" of about {report.total}" if report.total is not None else ""
        start = f", from page {resumed_from}" if resumed_from > 1 else ""
        self.log.info("%s (%s): pulling%s%s", report.entity, report.module, total, start)
        self.last = time.monotonic()

    def page_done(self, report: ModuleReport) -> None:
        if time.monotonic() - self.last >= PLAIN_EVERY_SECONDS:
            self.last = time.monotonic()
            self.log.info(
                "%s: %d records, %d pages: %s",
                report.entity,
                report.records,
                report.pages,
                _outcomes(report),
            )

    def module_done(self, report: ModuleReport) -> None:
        elapsed = (report.finished or time.monotonic()) - report.started
        self.log.info(
            "%s: done, %d records in %.1f s: %s",
            report.entity,
            report.records,
            elapsed,
            report.skipped or _outcomes(report),
        )


def summary_table(report: PullReport) -> Table:
    kinds = sorted({outcome for module in report.modules for outcome in module.outcomes})
    title = "Dry run: what the import would do" if report.dry_run else "Import"
    table = Table(title=title)
    for name in ("Entity", "Module", "Records", *kinds, "Seconds", "Examples"):
        table.add_column(
            name, justify="left" if name in ("Entity", "Module", "Examples") else "right"
        )
    for module in report.modules:
        elapsed = (module.finished or module.started) - module.started
        examples = "; ".join(
            f"{outcome}: {', '.join(ids)}" for outcome, ids in sorted(module.examples.items())
        )
        table.add_row(
            module.entity,
            module.module,
            str(module.records),
            *(str(module.outcomes.get(kind, 0)) for kind in kinds),
            f"{elapsed:.1f}",
            module.skipped or (examples if report.dry_run else ""),
        )
    return table


def moodle_table(report: PullReport) -> Table:
    table = Table(title="What Moodle would get")
    for name in ("Entity", "Change", "Records", "First records (Zoho ids)"):
        table.add_column(name)
    for change in report.moodle:
        table.add_row(change.entity, change.change, str(change.count), ", ".join(change.examples))
    if not report.moodle:
        table.add_row("-", "nothing", "0", "")
    return table
