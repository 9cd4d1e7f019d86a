"""The Moodle side: `moodle check` compares Moodle with what was delivered (drift), and repairs."""

from __future__ import annotations

import asyncio
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from zoho_moodle_sync import tenants
from zoho_moodle_sync.cli.common import (
    DatabaseUrl,
    app,
    fail,
    open_database,
    print_json,
    settings_for,
    tenant_row,
)
from zoho_moodle_sync.errors import ConfigurationError, MoodleRejected, MoodleUnavailable
from zoho_moodle_sync.reconcile import drift
from zoho_moodle_sync.reconcile.drift import DriftReport

moodle_app = typer.Typer(help="The Moodle side: drift checks and repairs.", no_args_is_help=True)
app.add_typer(moodle_app, name="moodle")


@moodle_app.command("check")
def moodle_check(
    slug: Annotated[str, typer.Argument(help="The tenant whose Moodle to check.")],
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="Queue the deliveries that restore Zoho's state (a worker sends them)."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Read back from Moodle the users, categories, courses and enrolments the service manages
    and compare them with what it delivered: missing, suspended or active against Zoho, a
    course in another category, a user edited by hand. Never touches what the service did not
    create or adopt. Exit status 1 when differences remain (none repaired)."""
    settings = settings_for(database_url)
    db = open_database(settings)
    with db.sessions() as session:
        context = tenants.context_of(tenant_row(session, slug))

    async def run() -> DriftReport:
        async with httpx.AsyncClient(timeout=settings.moodle_timeout_seconds) as http:
            return await drift.check(db, settings, context, http=http, repair=repair)

    try:
        report = asyncio.run(run())
    except (ConfigurationError, MoodleRejected, MoodleUnavailable) as error:
        fail(str(error))
    if as_json:
        print_json({"tenant": slug, **report.summary(), "repaired": report.repaired})
    else:
        _print(report, repair=repair)
    if report.findings and not report.repaired:
        raise typer.Exit(code=1)


def _print(report: DriftReport, *, repair: bool) -> None:
    out = Console()
    checked = ", ".join(f"{n} {entity}" for entity, n in report.checked.items()) or "nothing"
    out.print(f"Compared with Moodle: {checked}.")
    for note in report.notes:
        out.print(f"Not checked: {note}")
    if not report.findings:
        out.print("Moodle holds what the service delivered: no difference.")
        return
    table = Table(title=f"Differences in {report.tenant}'s Moodle")
    for name in ("Kind", "Records", "Meaning", "Examples"):
        table.add_column(name)
    for kind, found in report.summary()["kinds"].items():
        examples = "\n".join(
            f"{e['entity']} {e['zoho_id']} (Moodle {e['moodle_id']}): {e['detail']}"
            for e in found["examples"]
        )
        table.add_row(kind, str(found["count"]), found["meaning"], examples)
    out.print(table)
    if repair:
        out.print(
            f"{report.repaired} record(s) queued for delivery again; a worker restores them "
            "(a repair that suspends or unenrols many waits for `jobs confirm-held`, as any other)."
        )
    else:
        out.print("Run again with --repair to restore Zoho's state.")
