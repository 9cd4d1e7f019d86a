"""The `zoho-moodle-sync` command: serve, database, tenants, inbound events, parked records."""

from __future__ import annotations

import gc
import json
import logging
import re
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from zoho_moodle_sync import credentials, tenants
from zoho_moodle_sync.db import migrate
from zoho_moodle_sync.db.models import InboundEvent, ParkedRecord, Tenant
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.errors import SyncServiceError
from zoho_moodle_sync.ingress import events, pipeline, webhooks
from zoho_moodle_sync.jobs import operator
from zoho_moodle_sync.settings import Settings, get_settings

app = typer.Typer(help="Keeps Moodle LMS in sync with Zoho CRM.", no_args_is_help=True)
db_app = typer.Typer(help="Create, upgrade or inspect the database schema.", no_args_is_help=True)
tenant_app = typer.Typer(help="Manage tenants (schools).", no_args_is_help=True)
events_app = typer.Typer(help="Inspect and replay stored inbound requests.", no_args_is_help=True)
parked_app = typer.Typer(help="Records waiting for their dependencies.", no_args_is_help=True)
zoho_app = typer.Typer(help="The Zoho side: Notifications API channels.", no_args_is_help=True)
jobs_app = typer.Typer(help="Moodle delivery jobs: inspect, retry, confirm.", no_args_is_help=True)
records_app = typer.Typer(help="Stored records: what to correct in Zoho.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tenant_app, name="tenant")
app.add_typer(events_app, name="events")
app.add_typer(parked_app, name="parked")
app.add_typer(jobs_app, name="jobs")
app.add_typer(zoho_app, name="zoho")
app.add_typer(records_app, name="records")

DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="Overrides DATABASE_URL for this command.")
]


def _settings(database_url: str | None = None) -> Settings:
    settings = get_settings()
    if database_url:
        settings = Settings(**{**settings.model_dump(), "database_url": database_url})
    return settings


def _database(database_url: str | None = None) -> Database:
    return Database.from_settings(_settings(database_url))


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
) -> None:
    """Run the HTTP API (migrating the database first unless AUTO_MIGRATE=false)."""
    import uvicorn

    from zoho_moodle_sync.api.app import create_app

    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # A batch of Zoho records parses into tens of thousands of dicts that live until the
    # request is answered. At the default threshold (700 new objects) the cycle collector
    # walks them again and again while they are still in use: measured at about a fifth of
    # the server's CPU. Request data is freed by reference counting; cycles are rare here.
    gc.set_threshold(50_000)
    logging.getLogger("uvicorn.access").addFilter(_QueryTokenFilter())
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        access_log=access_log,
    )


class _QueryTokenFilter(logging.Filter):
    """The access log prints request lines; a `?token=` secret in one is masked."""

    _TOKEN = re.compile(r"([?&](?:token|secret|key)=)[^&\s]*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._TOKEN.sub(r"\1***", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: DatabaseUrl = None,
) -> None:
    """Create the database or bring it to the latest schema; creates the default tenant."""
    settings = _settings(database_url)
    db = Database.from_settings(settings)
    migrate.upgrade(db.engine, revision)
    with db.sessions.begin() as session:
        tenants.ensure(session, settings.default_tenant)
    typer.echo(f"database at revision {migrate.current_revision(db.engine)}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. base.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Step the schema back to an earlier revision (drops what later revisions added)."""
    db = _database(database_url)
    migrate.downgrade(db.engine, revision)
    typer.echo(f"database at revision {migrate.current_revision(db.engine)}")


@db_app.command("current")
def db_current(database_url: DatabaseUrl = None) -> None:
    """Print the schema revision of the database and the newest one this version knows."""
    db = _database(database_url)
    typer.echo(f"current: {migrate.current_revision(db.engine)}  head: {migrate.head_revision()}")


@tenant_app.command("create")
def tenant_create(
    slug: str,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a tenant."""
    with _database(database_url).sessions.begin() as session:
        tenant = tenants.create(session, slug=slug, name=name)
        typer.echo(f"created tenant {tenant.slug} (id {tenant.id})")


@tenant_app.command("list")
def tenant_list(database_url: DatabaseUrl = None) -> None:
    """List tenants."""
    with _database(database_url).sessions() as session:
        for tenant in tenants.list_all(session):
            state = "disabled" if tenant.disabled_at else "active"
            typer.echo(f"{tenant.slug}\t{state}\t{tenant.name}")


@tenant_app.command("show")
def tenant_show(slug: str, database_url: DatabaseUrl = None) -> None:
    """Show a tenant and its field mapping."""
    with _database(database_url).sessions() as session:
        tenant = _tenant(session, slug)
        _print_json(
            {
                "slug": tenant.slug,
                "name": tenant.name,
                "disabled_at": tenant.disabled_at,
                "mapping": tenants.mapping_of(tenant.config).model_dump(exclude_defaults=True),
                "zoho": {
                    "client_id": (tenant.config.get("zoho") or {}).get("client_id"),
                    "data_centre": (tenant.config.get("zoho") or {}).get("data_centre"),
                    "secrets": "set (encrypted)" if tenant.config.get("zoho") else "not set",
                },
                "moodle": {
                    "url": (tenant.config.get("moodle") or {}).get("base_url"),
                    "token": "set (encrypted)"
                    if (tenant.config.get("moodle") or {}).get("token")
                    else "not set",
                },
                "delivery": tenants.delivery_policy(tenant).model_dump(mode="json"),
                "secrets": [
                    {
                        "id": view.id,
                        "label": view.label,
                        "starts": view.hint + "…",
                        "created_at": view.created_at,
                        "expires_at": view.expires_at,
                        "state": "active" if view.active else "expired or revoked",
                    }
                    for view in credentials.list_for(session, tenant)
                ],
            }
        )


@tenant_app.command("add-secret")
def tenant_add_secret(
    slug: str,
    label: Annotated[str, typer.Option(help="What the secret is for.")] = "webhook",
    database_url: DatabaseUrl = None,
) -> None:
    """Make a new secret for the tenant and print it once (only its digest is stored)."""
    with _database(database_url).sessions.begin() as session:
        tenant = _tenant(session, slug)
        secret = credentials.add_secret(session, tenant, label=label)
    typer.echo(secret)


@tenant_app.command("rotate-secret")
def tenant_rotate_secret(
    slug: str,
    overlap_hours: Annotated[
        float, typer.Option(help="How long the current secrets keep working.")
    ] = 24.0,
    database_url: DatabaseUrl = None,
) -> None:
    """Make a new secret and let the current ones expire after the overlap window."""
    from datetime import timedelta

    with _database(database_url).sessions.begin() as session:
        tenant = _tenant(session, slug)
        secret = credentials.rotate(
            session, tenant, overlap=timedelta(hours=overlap_hours), label="rotated"
        )
    typer.echo(secret)
    typer.secho(f"the previous secrets of {slug} stop working in {overlap_hours:g} h", err=True)


@tenant_app.command("revoke-secret")
def tenant_revoke_secret(slug: str, credential_id: int, database_url: DatabaseUrl = None) -> None:
    """Stop one secret working at once (ids from `tenant show`)."""
    with _database(database_url).sessions.begin() as session:
        if not credentials.revoke(session, _tenant(session, slug), credential_id):
            _fail(f"tenant {slug!r} has no active secret {credential_id}")
    typer.echo(f"secret {credential_id} of {slug} revoked")


@tenant_app.command("disable")
def tenant_disable(slug: str, database_url: DatabaseUrl = None) -> None:
    """Refuse every request of the tenant and stop its delivery (its data is kept)."""
    from zoho_moodle_sync.db.base import utcnow

    with _database(database_url).sessions.begin() as session:
        tenant = _tenant(session, slug)
        tenant.disabled_at = tenant.disabled_at or utcnow()
    typer.echo(f"tenant {slug} disabled")


@tenant_app.command("enable")
def tenant_enable(slug: str, database_url: DatabaseUrl = None) -> None:
    """Undo `disable`."""
    with _database(database_url).sessions.begin() as session:
        _tenant(session, slug).disabled_at = None
    typer.echo(f"tenant {slug} enabled")


def _tenant(session: Any, slug: str) -> Tenant:
    tenant = tenants.get_by_slug(session, slug)
    if tenant is None:
        _fail(f"no tenant {slug!r}")
    return tenant


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        _fail(f"cannot read {path}: {exc}")


@tenant_app.command("set-mapping")
def tenant_set_mapping(
    slug: str,
    mapping_file: Annotated[Path, typer.Argument(help="JSON file with the field mapping.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Replace a tenant's field mapping (module, field and status-value overrides)."""
    document = _read_json(mapping_file)
    with _database(database_url).sessions.begin() as session:
        tenant = _tenant(session, slug)
        tenants.set_mapping(session, tenant, document)
    typer.echo(f"mapping of {slug} updated")


@events_app.command("list")
def events_list(
    status: Annotated[
        str | None, typer.Option(help="received, processed, rejected or failed.")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    database_url: DatabaseUrl = None,
) -> None:
    """List stored inbound requests, newest first."""
    with _database(database_url).sessions() as session:
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
    with _database(database_url).sessions() as session:
        event = session.get(InboundEvent, event_id)
        if event is None:
            _fail(f"no inbound event {event_id}")
            return
        view = {
            c.name: getattr(event, c.name)
            for c in InboundEvent.__table__.columns
            if c.name != "body"
        }
        if body:
            view["body"] = event.body.decode("utf-8", errors="replace")
        _print_json(view)


@events_app.command("replay")
def events_replay(event_id: int, database_url: DatabaseUrl = None) -> None:
    """Run a stored request through the pipeline again, as a new event: a /v1/sync body, or a
    webhook (whose records are fetched from Zoho again)."""
    settings = _settings(database_url)
    db = Database.from_settings(settings)
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
            _print_json(
                {
                    "event_id": new_id,
                    "status": event.status,
                    "summary": event.summary,
                    "error": event.error,
                }
            )
        return
    report = pipeline.replay(db, event_id, max_records=settings.max_batch_records)
    _print_json(
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

    query = select(ParkedRecord).order_by(ParkedRecord.parked_at).limit(limit)
    if entity:
        query = query.where(ParkedRecord.entity == entity)
    with _database(database_url).sessions() as session:
        for parked in session.scalars(query):
            waits = ", ".join(f"{w['entity']}:{w['zoho_id']}" for w in parked.waiting_for)
            typer.echo(
                f"{parked.entity}\t{parked.zoho_id}\t{parked.parked_at:%Y-%m-%d %H:%M}\t{waits}"
            )


@parked_app.command("sweep")
def parked_sweep(database_url: DatabaseUrl = None) -> None:
    """Release parked records whose dependencies are stored now."""
    typer.echo(f"released {pipeline.sweep_all_tenants(_database(database_url))} record(s)")


@app.command()
def worker(database_url: DatabaseUrl = None) -> None:
    """Deliver stored changes to Moodle until stopped (SIGTERM or Ctrl-C finish the batch in
    flight and hand back the rest). Run as many as you like against PostgreSQL."""
    import asyncio
    import signal

    from zoho_moodle_sync.worker.runner import Worker

    settings = _settings(database_url)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    db = Database.from_settings(settings)

    async def run() -> None:
        delivery = Worker(db, settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, delivery.stop)
        await delivery.run()

    asyncio.run(run())


def _tenant_id(session: Any, slug: str | None) -> int:
    return int(_tenant(session, slug or get_settings().default_tenant).id)


TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="Tenant slug (default: DEFAULT_TENANT).")
]


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
            _fail(f"unknown entity {entity!r}; known: {', '.join(ENTITY_BY_KEY)}")
    with _database(database_url).sessions() as session:
        found = records.warnings_list(
            session, tenant_id=_tenant_id(session, tenant), entity=spec, limit=100_000
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
    with _database(database_url).sessions() as session:
        where = operator.JobFilter(_tenant_id(session, tenant), state, entity)
        for job in operator.list_jobs(session, where, limit=limit):
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
    with _database(database_url).sessions.begin() as session:
        tenant_id = _tenant_id(session, tenant)
        if job_id is not None:
            job = operator.retry_job(session, tenant_id=tenant_id, job_id=job_id)
            typer.echo(f"job {job.id} is pending again")
            return
        count = operator.retry_jobs(session, operator.JobFilter(tenant_id, state, entity))
        typer.echo(f"{count} job(s) pending again")


@jobs_app.command("confirm-held")
def jobs_confirm_held(tenant: TenantOption = None, database_url: DatabaseUrl = None) -> None:
    """Let the removals the mass-change guard holds go ahead (check `jobs list --state held`)."""
    with _database(database_url).sessions.begin() as session:
        count = operator.confirm_held(session, tenant_id=_tenant_id(session, tenant))
    typer.echo(f"{count} held job(s) confirmed")


@jobs_app.command("resume")
def jobs_resume(tenant: TenantOption = None, database_url: DatabaseUrl = None) -> None:
    """Resume a tenant's delivery paused after Moodle refused access (after fixing it)."""
    from zoho_moodle_sync.delivery import store

    db = _database(database_url)
    with db.sessions() as session:
        tenant_id = _tenant_id(session, tenant)
    resumed = store.resume(db, tenant_id=tenant_id)
    typer.echo("delivery resumed" if resumed else "delivery was not paused")


@app.command()
def status(database_url: DatabaseUrl = None) -> None:
    """Delivery per tenant and entity: jobs by state, queue depth, oldest waiting job."""
    with _database(database_url).sessions() as session:
        slugs = {tenant.id: tenant.slug for tenant in tenants.list_all(session)}
        rows = operator.status(session)
    if not rows:
        typer.echo("no delivery jobs yet")
    for row in rows:
        jobs = ", ".join(f"{k}={v}" for k, v in row["jobs"].items() if v)
        age = row["oldest_pending_seconds"]
        typer.echo(
            f"{slugs.get(row['tenant_id'], 'all')}\t{row['entity'] or row['kind']}\t"
            f"queue={row['queue_depth']}\t"
            f"oldest={'-' if age is None else f'{age:.0f}s'}\t{jobs}"
            + (f"\tPAUSED: {row['paused']}" if row["paused"] else "")
        )


@tenant_app.command("set-moodle")
def tenant_set_moodle(
    slug: str,
    url: Annotated[str, typer.Option(help="Base URL of the tenant's Moodle.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Set a tenant's Moodle; the token is read from the prompt or MOODLE_TOKEN_INPUT, never
    from the command line, and stored encrypted with SECRET_KEY."""
    import os

    token = os.environ.get("MOODLE_TOKEN_INPUT") or typer.prompt("Moodle token", hide_input=True)
    settings = _settings(database_url)
    with Database.from_settings(settings).sessions.begin() as session:
        tenant = _tenant(session, slug)
        tenants.set_moodle(session, tenant, base_url=url, token=token, settings=settings)
    typer.echo(f"Moodle of {slug} set to {url}")


@tenant_app.command("set-zoho")
def tenant_set_zoho(
    slug: str,
    client_id: Annotated[str, typer.Option(help="OAuth client id (api-console.zoho.com).")],
    data_centre: Annotated[str, typer.Option(help="us, eu, in, au, cn, jp, ca, sa or uk.")] = "us",
    database_url: DatabaseUrl = None,
) -> None:
    """Set a tenant's Zoho API client. The client secret and refresh token are read from hidden
    prompts (or ZOHO_CLIENT_SECRET_INPUT / ZOHO_REFRESH_TOKEN_INPUT), never from the command
    line, and stored encrypted with SECRET_KEY."""
    import os

    from zoho_moodle_sync.sealing import seal
    from zoho_moodle_sync.zoho import DataCentre

    if data_centre not in {dc.value for dc in DataCentre}:
        _fail(f"unknown data centre {data_centre!r}")
    secret = os.environ.get("ZOHO_CLIENT_SECRET_INPUT") or typer.prompt(
        "Zoho client secret", hide_input=True
    )
    refresh = os.environ.get("ZOHO_REFRESH_TOKEN_INPUT") or typer.prompt(
        "Zoho refresh token", hide_input=True
    )
    settings = _settings(database_url)
    with Database.from_settings(settings).sessions.begin() as session:
        tenant = _tenant(session, slug)
        tenant.config = {
            **tenant.config,
            "zoho": {
                "client_id": client_id,
                "client_secret": seal(secret, settings.secret_key),
                "refresh_token": seal(refresh, settings.secret_key),
                "data_centre": data_centre,
            },
        }
    typer.echo(f"Zoho API client of {slug} set ({data_centre} data centre)")


@tenant_app.command("set-policy")
def tenant_set_policy(
    slug: str,
    policy_file: Annotated[Path, typer.Argument(help="JSON file with the delivery policy.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Replace a tenant's delivery policy (removal policy, guard, roles, time zone, ...)."""
    document = _read_json(policy_file)
    with _database(database_url).sessions.begin() as session:
        tenant = _tenant(session, slug)
        change = tenants.set_delivery_policy(session, tenant, document)
    typer.echo(f"delivery policy of {slug} updated")
    if change.requeued_enrolments:
        typer.echo(
            f"{change.requeued_enrolments} enrolment(s) queued again: their Moodle dates change"
        )


@zoho_app.command("watch")
def zoho_watch(
    slug: str,
    notify_url: Annotated[
        str, typer.Option(help="Public URL of /v1/webhooks/zoho/notifications on this service.")
    ],
    days: Annotated[float, typer.Option(help="Channel lifetime (Zoho allows at most 7).")] = 7,
    database_url: DatabaseUrl = None,
) -> None:
    """Enable, or renew, the tenant's Notifications API channel for all its modules. Channels
    expire: run this daily (cron) to keep it alive. Each run issues a new channel token."""
    import asyncio
    import secrets
    from datetime import timedelta

    import httpx

    from zoho_moodle_sync.entities import ENTITIES
    from zoho_moodle_sync.zoho import ZohoClient
    from zoho_moodle_sync.zoho_tokens import token_store_for

    settings = _settings(database_url)
    db = Database.from_settings(settings)
    with db.sessions() as session:
        tenant = _tenant(session, slug)
        zoho = tenants.zoho_credentials(tenant, settings)
        mapping = tenants.mapping_of(tenant.config)
        channel = (tenant.config.get("zoho_channel") or {}).get("channel_id")
    if zoho is None:
        _fail(f"tenant {slug!r} has no Zoho API credentials (ZOHO_CLIENT_ID, ...)")
    events = [f"{mapping.module_for(spec)}.all" for spec in ENTITIES]
    token = secrets.token_urlsafe(30)[:40]
    channel_id = channel or str(10**12 + secrets.randbelow(9 * 10**12))
    expiry = timedelta(days=min(days, 7) - 0.01)

    async def call() -> list[Any]:
        async with httpx.AsyncClient(timeout=30) as http:
            client = ZohoClient(http, zoho, token_store=token_store_for(db, settings.secret_key))
            if channel:
                return await client.renew_watch(
                    channel_id=channel_id,
                    events=events,
                    expiry=expiry,
                    token=token,
                    notify_url=notify_url,
                )
            return await client.enable_watch(
                channel_id=channel_id,
                events=events,
                notify_url=notify_url,
                token=token,
                expiry=expiry,
            )

    subscriptions = asyncio.run(call())
    with db.sessions.begin() as session:
        tenant = _tenant(session, slug)
        # Notifications already on their way with the previous token are still accepted.
        credentials.expire_current(session, tenant, overlap=timedelta(minutes=15), kind="channel")
        credentials.add_secret(
            session,
            tenant,
            label=credentials.channel_label(channel_id),
            kind="channel",
            secret=token,
        )
        tenant.config = {**tenant.config, "zoho_channel": {"channel_id": channel_id}}
    for subscription in subscriptions:
        typer.echo(
            f"{subscription.resource_name}: channel {subscription.channel_id} until "
            f"{subscription.channel_expiry:%Y-%m-%d %H:%M} UTC"
        )


def main() -> None:
    try:
        app()
    except SyncServiceError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        typer.secho(f"error: invalid setting: {problems}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except OperationalError as exc:
        typer.secho(
            f"error: the database is not reachable or not set up ({exc.orig or exc}); "
            "check DATABASE_URL and run `zoho-moodle-sync db upgrade`",
            fg=typer.colors.RED,
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
