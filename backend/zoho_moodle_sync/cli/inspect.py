"""Looking into what happened: inbound events (and their replay), parked records, records with
warnings, delivery jobs."""

from __future__ import annotations

from typing import Annotated

import typer

from zoho_moodle_sync.cli.common import (
    DatabaseUrl,
    TenantOption,
    app,
    database,
    fail,
    open_database,
    print_json,
    settings_for,
    tenant_id_of,
)
from zoho_moodle_sync.db.models import InboundEvent, ParkedRecord
from zoho_moodle_sync.ingress import events, pipeline, webhooks
from zoho_moodle_sync.jobs import operator

events_app = typer.Typer(help="Inspect and replay stored inbound requests.", no_args_is_help=True)
parked_app = typer.Typer(help="Records waiting for their dependencies.", no_args_is_help=True)
records_app = typer.Typer(help="Stored records: what to correct in Zoho.", no_args_is_help=True)
jobs_app = typer.Typer(help="Moodle delivery jobs: inspect, retry, confirm.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(parked_app, name="parked")
app.add_typer(records_app, name="records")
app.add_typer(jobs_app, name="jobs")


@events_app.command("list")
def events_list(
    status: Annotated[
        str | None, typer.Option(help="received, processed, rejected or failed.")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    database_url: DatabaseUrl = None,
) -> None:
    """List stored inbound requests, newest first."""
    with database(database_url).sessions() as session:
        for event in events.list_events(session, status=status, limit=limit):
            typer.echo(
                f"{event.id}\t{event.received_at:%Y-%m-%d %H:%M:%S}\t{event.status}\t"
                f"{event.http_status or '-'}\t{event.method} {event.route}\t{event.body_size} bytes"
            )


@events_app.command("show")
def events_show(
    event_id: int,
    body: Annotated[bool, typer.Option(help="Print the stored body too.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show one stored inbound request."""
    with database(database_url).sessions() as session:
        event = session.get(InboundEvent, event_id)
        if event is None:
            fail(f"no inbound event {event_id}")
            return
        view = {
            c.name: getattr(event, c.name)
            for c in InboundEvent.__table__.columns
            if c.name != "body"
        }
        if body:
            view["body"] = event.body.decode("utf-8", errors="replace")
        print_json(view)


@events_app.command("replay")
def events_replay(event_id: int, database_url: DatabaseUrl = None) -> None:
    """Run a stored request through the pipeline again, as a new event: a /v1/sync body, or a
    webhook (whose records are fetched from Zoho again)."""
    settings = settings_for(database_url)
    db = open_database(settings)
    if events.is_webhook(db, event_id):
        import asyncio

        import httpx

        from zoho_moodle_sync.worker import completion

        new_id = webhooks.replay_webhook(db, event_id)

        async def complete() -> None:
            async with httpx.AsyncClient(timeout=30) as http:
                await completion.complete_due(
                    db, settings, worker_id="cli", http=http, event_id=new_id
                )

        asyncio.run(complete())
        with db.sessions() as session:
            event = session.get_one(InboundEvent, new_id)
            print_json(
                {
                    "event_id": new_id,
                    "status": event.status,
                    "summary": event.summary,
                    "error": event.error,
                }
            )
        return
    report = pipeline.replay(db, event_id, max_records=settings.max_batch_records)
    print_json(
        {"event_id": report.event_id, "summary": report.summary(), "released": len(report.released)}
    )


@parked_app.command("list")
def parked_list(
    entity: Annotated[str | None, typer.Option(help="Only this entity.")] = None,
    limit: Annotated[int, typer.Option(help="How many, oldest first.")] = 100,
    database_url: DatabaseUrl = None,
) -> None:
    """List parked records, oldest first, with what they wait for."""
    from sqlalchemy import select

    from zoho_moodle_sync.entities import ENTITY_BY_KEY

    if entity is not None and entity not in ENTITY_BY_KEY:
        fail(f"unknown entity {entity!r}; known: {', '.join(ENTITY_BY_KEY)}")
    query = select(ParkedRecord).order_by(ParkedRecord.parked_at).limit(limit)
    if entity:
        query = query.where(ParkedRecord.entity == entity)
    with database(database_url).sessions() as session:
        found = list(session.scalars(query))
        if not found:
            typer.echo("no parked records" + (f" of {entity}" if entity else ""))
        for parked in found:
            waits = ", ".join(f"{w['entity']}:{w['zoho_id']}" for w in parked.waiting_for)
            typer.echo(
                f"{parked.entity}\t{parked.zoho_id}\t{parked.parked_at:%Y-%m-%d %H:%M}\t{waits}"
            )


@parked_app.command("sweep")
def parked_sweep(database_url: DatabaseUrl = None) -> None:
    """Release parked records whose dependencies are stored now."""
    typer.echo(f"released {pipeline.sweep_all_tenants(database(database_url))} record(s)")


@records_app.command("warnings")
def records_warnings(
    tenant: TenantOption = None,
    entity: Annotated[str | None, typer.Option(help="Only this entity (students, ...).")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List the records stored with warnings (values left out, an end date before the start):
    entity, Zoho id, name, field, message, since when."""
    from zoho_moodle_sync import records
    from zoho_moodle_sync.entities import ENTITY_BY_KEY

    spec = None
    if entity is not None:
        spec = ENTITY_BY_KEY.get(entity)
        if spec is None:
            fail(f"unknown entity {entity!r}; known: {', '.join(ENTITY_BY_KEY)}")
    with database(database_url).sessions() as session:
        found = records.warnings_list(
            session, tenant_id=tenant_id_of(session, tenant), entity=spec, limit=100_000
        )
    if not found:
        typer.echo("no record has a warning")
        return
    for row in found:
        typer.echo(
            f"{row['entity']}\t{row['zoho_id']}\t{row['name']}\t{row['field']}\t"
            f"{row['message']}\tsince {row['since']}"
        )


@jobs_app.command("list")
def jobs_list(
    tenant: TenantOption = None,
    state: Annotated[str | None, typer.Option(help="pending, waiting, held, dead, ...")] = None,
    entity: Annotated[str | None, typer.Option(help="students, classes, ...")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    database_url: DatabaseUrl = None,
) -> None:
    """List delivery jobs, newest first, with their last error."""
    with database(database_url).sessions() as session:
        where = operator.JobFilter.checked(tenant_id_of(session, tenant), state, entity, None)
        found = operator.list_jobs(session, where, limit=limit)
        if not found:
            typer.echo("no delivery jobs" + (f" in state {state}" if state else ""))
        for job in found:
            why = job.last_error or job.wait_reason or ""
            typer.echo(
                f"{job.id}\t{job.state}\t{job.entity}\t{job.zoho_id}\t{job.action}\t"
                f"attempts={job.attempts}\t{job.last_errorcode or ''}\t{why}"
            )


@jobs_app.command("retry")
def jobs_retry(
    job_id: Annotated[int | None, typer.Argument(help="One job; omit to retry by filter.")] = None,
    tenant: TenantOption = None,
    state: Annotated[
        str, typer.Option(help="Which jobs to retry: dead, held or waiting.")
    ] = "dead",
    entity: Annotated[str | None, typer.Option(help="Only this entity.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Retry one job, or every dead (or held, or waiting) job of a tenant."""
    with database(database_url).sessions.begin() as session:
        tenant_id = tenant_id_of(session, tenant)
        if job_id is not None:
            job = operator.retry_job(session, tenant_id=tenant_id, job_id=job_id)
            typer.echo(f"job {job.id} is pending again")
            return
        where = operator.JobFilter.checked(tenant_id, state, entity, None)
        if state not in operator.RETRYABLE_STATES:
            fail(f"only {', '.join(operator.RETRYABLE_STATES)} jobs are retried, not {state}")
        count = operator.retry_jobs(session, where)
        typer.echo(f"{count} job(s) pending again")


@jobs_app.command("confirm-held")
def jobs_confirm_held(tenant: TenantOption = None, database_url: DatabaseUrl = None) -> None:
    """Let the removals the mass-change guard holds go ahead (check `jobs list --state held`)."""
    with database(database_url).sessions.begin() as session:
        count = operator.confirm_held(session, tenant_id=tenant_id_of(session, tenant))
    typer.echo(f"{count} held job(s) confirmed")


@jobs_app.command("resume")
def jobs_resume(tenant: TenantOption = None, database_url: DatabaseUrl = None) -> None:
    """Resume a tenant's delivery paused after Moodle refused access (after fixing it)."""
    from zoho_moodle_sync.delivery import store

    db = database(database_url)
    with db.sessions() as session:
        tenant_id = tenant_id_of(session, tenant)
    resumed = store.resume(db, tenant_id=tenant_id)
    typer.echo("delivery resumed" if resumed else "delivery was not paused")
