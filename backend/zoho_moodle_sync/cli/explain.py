"""`zoho-moodle-sync explain`: why a record is, or is not, in Moodle, as readable text (or the
API's JSON with `--json`)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

import httpx
import typer

from zoho_moodle_sync import explain as explaining
from zoho_moodle_sync.cli.common import (
    DatabaseUrl,
    TenantOption,
    app,
    fail,
    open_database,
    print_json,
    settings_for,
    tenant_id_of,
)
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.explain import Explanation
from zoho_moodle_sync.settings import Settings


@app.command("explain")
def explain(
    entity: Annotated[
        str | None, typer.Argument(help="students, classes, enrollments, ...")
    ] = None,
    zoho_id: Annotated[str | None, typer.Argument(help="The record's Zoho id.")] = None,
    q: Annotated[
        str | None,
        typer.Option("--q", help="Find the record by Zoho id, student number or e-mail."),
    ] = None,
    live: Annotated[bool, typer.Option(help="Also ask Moodle what it shows now.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON answer.")] = False,
    tenant: TenantOption = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Why a record is, or is not, in Moodle: the verdict first, then what arrived from Zoho,
    what it waits for, its delivery jobs and Moodle's errors, its Moodle ids."""
    if (q is None) == (entity is None or zoho_id is None):
        fail("give ENTITY and ZOHO_ID, or --q with a Zoho id, student number or e-mail")
    settings = settings_for(database_url)
    db = open_database(settings)
    with db.sessions() as session:
        tenant_id = tenant_id_of(session, tenant)
    if q is not None:
        found = explaining.search(db, tenant_id=tenant_id, query=q, settings=settings)
        if found.explanation is None:
            if as_json:
                print_json(found.model_dump(mode="json"))
                return
            typer.echo(f"{len(found.matches)} records match {q!r}:")
            for match in found.matches:
                typer.echo(f"  {match.entity}\t{match.zoho_id}\t{match.name}\t({match.matched})")
            typer.echo("explain one with: zoho-moodle-sync explain ENTITY ZOHO_ID")
            return
        answer = found.explanation
    else:
        answer = explaining.explain(
            db, tenant_id=tenant_id, entity=str(entity), zoho_id=str(zoho_id), settings=settings
        )
    if live:
        answer = asyncio.run(_live(answer, db, tenant_id, settings))
    if as_json:
        print_json(answer.model_dump(mode="json"))
        return
    typer.echo(render(answer))


async def _live(
    answer: Explanation, db: Database, tenant_id: int, settings: Settings
) -> Explanation:
    async with httpx.AsyncClient() as http:
        return await explaining.add_live(
            answer, db=db, tenant_id=tenant_id, settings=settings, http=http
        )


def _at(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def render(answer: Explanation) -> str:
    """The explanation as lines a person reads in a terminal."""
    lines = [answer.verdict, ""]

    def row(label: str, text: str) -> None:
        lines.append(f"{label:<11} {text}")

    record = answer.record
    row("Record", f"{answer.entity} {answer.zoho_id} ({answer.name}): {record.state}")
    if record.received is not None:
        got = record.received
        row(
            "Received",
            f"{_at(got.at)} through {got.how} ({got.route}, event {got.event_id}); "
            f"Zoho Modified_Time {_at(got.zoho_modified_time)}",
        )
    if record.last_outcome is not None:
        last = record.last_outcome
        row(
            "Outcome",
            f"{last.outcome} at {_at(last.at)}" + (f": {last.message}" if last.message else ""),
        )
        for error in last.errors:
            row("", f"{error.get('field')}: {error.get('message')}")
    for warning in record.warnings:
        row("Warning", f"{warning.get('field')}: {warning.get('message')}")
    for wait in answer.waiting_for:
        row("Waits for", wait.words)
    if answer.delivery is not None:
        moodle = answer.delivery.moodle
        if moodle is not None:
            ids = f"{moodle.kind} {moodle.id}" if moodle.id else f"{moodle.kind} {moodle.detail}"
            adopted = ", adopted" if moodle.adopted else ""
            row("Moodle", f"{ids}: {moodle.state}{adopted}, delivered {_at(moodle.delivered_at)}")
        else:
            row("Moodle", "nothing delivered yet")
        if answer.delivery.paused:
            row("Paused", answer.delivery.paused)
        if not answer.delivery.moodle_configured:
            row("Moodle", "this tenant's Moodle is not configured")
        for job in answer.delivery.jobs:
            why = job.error or job.wait_reason or ""
            code = f"{job.errorcode}: " if job.errorcode else ""
            row(
                "Job",
                f"#{job.id} {job.action or ''} {job.state}, {job.attempts} attempt(s)"
                + (f": {code}{why}" if why else ""),
            )
    for related in answer.related:
        row("Related", f"{related.entity} {related.zoho_id}: {related.verdict}")
    if answer.live is not None:
        if answer.live.error:
            row("Live", answer.live.error)
        for fact in answer.live.facts:
            row("Live", fact)
    return "\n".join(lines)
