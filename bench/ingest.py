"""Ingest throughput: `POST /v1/sync/{entity}` through a real server, against a raw bulk upsert.

    python bench/ingest.py                                   # 20,000 students on SQLite
    python bench/ingest.py --postgres-url postgresql://...   # SQLite, then PostgreSQL
    TEST_DATABASE_URL=postgresql://... python bench/ingest.py --entity enrollments

For each database the benchmark

1. builds a fresh database (a new SQLite file; on PostgreSQL the `public` schema of the given
   database is DROPPED and rebuilt by the migrations, so point it at a throwaway database);
2. generates N realistic Zoho API records (tests/factories.py: every field of the BTEC org's
   module, about 8 KB of JSON per student; `--shape mapped` keeps only the fields the service
   maps) and the request bodies, before anything is timed;
3. starts `zoho-moodle-sync serve` on a free port (access log off, LOG_LEVEL=WARNING, a fresh
   WEBHOOK_SECRET sent as `Authorization: Bearer`), sends the records the entity depends on,
   and one warm-up batch of each scenario;
4. times three scenarios through HTTP on `--clients` kept-alive connections (default 2: a
   backfill or a burst of Zoho webhooks keeps a request or two in flight, and a second one lets
   the server work while the first waits for a commit), every answer checked against the
   expected outcomes: all-NEW, all-UNCHANGED (the same bodies again) and 10%-changed (one
   record in ten has a new field value and a later Modified_Time);
5. stops the server and times the same three scenarios, the same bodies on the same
   connections, through the minimal durable app (bench/minimal_app.py: FastAPI, the body
   decoded with orjson, its records stored with COPY on PostgreSQL or executemany on SQLite in
   one transaction per request, nothing else);
6. empties the entity table and times the same three scenarios as a raw bulk upsert of the
   same rows (SQLAlchemy Core INSERT ... ON CONFLICT DO UPDATE on the same table, in the same
   batches and connections, one transaction per batch, no HTTP, no validation, no inbound
   event, no history; a conflicting row is rewritten only when its fingerprint differs);

and prints records/s for all three, the service's ratio to the minimal app and to the raw
upsert, and the CPU time spent per record by the server, the PostgreSQL server (when it runs on
this machine) and this client, which all share the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import Engine, Table, select
from sqlalchemy.dialects import postgresql, sqlite

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the record factories live in tests/

import workloads  # noqa: E402
from subprocesses import (  # noqa: E402
    CpuMeters,
    Running,
    fresh_postgres,
    machine_load,
    postgres_cpu_meter,
    read_meters,
    running_minimal_app,
    running_service,
    used_since,
)
from workloads import Record  # noqa: E402
from zoho_moodle_sync import mapper, parser, stages  # noqa: E402
from zoho_moodle_sync.db import migrate  # noqa: E402
from zoho_moodle_sync.db.base import utcnow  # noqa: E402
from zoho_moodle_sync.db.models import ENTITY_TABLES, Tenant  # noqa: E402
from zoho_moodle_sync.db.session import make_engine  # noqa: E402
from zoho_moodle_sync.entities import ENTITY_BY_KEY  # noqa: E402
from zoho_moodle_sync.field_mapping import DEFAULT_MAPPING  # noqa: E402
from zoho_moodle_sync.fingerprint import fingerprint  # noqa: E402
from zoho_moodle_sync.settings import Settings  # noqa: E402

CHANGED_SHARE = 10
"""One record in this many changes in the 10%-changed scenario."""

SCENARIOS = ("all-NEW", "all-UNCHANGED", "10%-changed")


# ---------------------------------------------------------------------------------------------
# Records and request bodies, generated before anything is timed
# ---------------------------------------------------------------------------------------------


@dataclass
class Variant:
    """One scenario's records, as request bodies and as the rows a raw upsert writes."""

    records: list[Record]
    expected: Counter[str]
    bodies: list[bytes] = field(default_factory=list)
    rows: list[list[dict[str, Any]]] = field(default_factory=list)


@dataclass
class Workload:
    entity: str
    setup: list[tuple[str, list[Record]]]
    """Records of the entities the benchmarked one depends on, in dependency order."""
    warmup: dict[str, Variant]
    timed: dict[str, Variant]


def _variants(entity: str, records: list[Record]) -> dict[str, Variant]:
    count = len(records)
    changed = [
        workloads.changed(r, entity) if i % CHANGED_SHARE == 0 else r for i, r in enumerate(records)
    ]
    n_changed = len(range(0, count, CHANGED_SHARE))
    return {
        "all-NEW": Variant(records, Counter(NEW=count)),
        "all-UNCHANGED": Variant(records, Counter(UNCHANGED=count)),
        "10%-changed": Variant(changed, Counter(UPDATED=n_changed, UNCHANGED=count - n_changed)),
    }


def _raw_rows(entity: str, records: Sequence[Record]) -> list[dict[str, Any]]:
    """The entity-table rows of `records`, as the service stores them (prepared untimed)."""
    mapping = DEFAULT_MAPPING.for_entity(ENTITY_BY_KEY[entity])
    now = utcnow()
    rows = []
    for raw in records:
        record = parser.parse_record(raw)
        assert isinstance(record, stages.ZohoRecord)
        item = mapper.map_record(mapping, record)
        assert isinstance(item, mapper.MappedRecord), item
        rows.append(
            {
                **item.record.model_dump(),
                "tenant_id": None,
                "zoho_id": item.zoho_id,
                "fingerprint": fingerprint(item.data),
                "zoho_modified_time": item.modified_time,
                "data": item.data,
                "raw": item.raw,
                "last_event_id": None,
                "created_at": now,
                "updated_at": now,
                "deleted_at": None,
            }
        )
    return rows


def _prepare(variants: dict[str, Variant], entity: str, batch: int) -> None:
    for variant in variants.values():
        chunks = workloads.batches(variant.records, batch)
        variant.bodies = [orjson.dumps({"data": list(chunk)}) for chunk in chunks]
        variant.rows = [_raw_rows(entity, chunk) for chunk in chunks]


def generate(entity: str, count: int, batch: int, shape: str = "full") -> Workload:
    workloads.reseed()
    setup = workloads.dependency_pools(entity)
    pools = dict(setup)
    warm, records = workloads.build(entity, batch, pools), workloads.build(entity, count, pools)
    if shape == "mapped":
        warm = workloads.mapped_fields_only(entity, warm)
        records = workloads.mapped_fields_only(entity, records)
    warmup = _variants(entity, warm)
    timed = _variants(entity, records)
    _prepare(warmup, entity, batch)
    _prepare(timed, entity, batch)
    return Workload(entity, setup, warmup, timed)


# ---------------------------------------------------------------------------------------------
# The server under test
# ---------------------------------------------------------------------------------------------


@dataclass
class Server:
    """A server under test (the service or the minimal app), with kept-alive client
    connections made before anything is timed."""

    process: Running
    secret: str
    """The default tenant's webhook secret, sent as `Authorization: Bearer`."""
    clients: list[httpx.Client]

    @property
    def url(self) -> str:
        return self.process.url

    def cpu_seconds(self) -> float:
        return self.process.cpu_seconds()


@contextlib.contextmanager
def connected(process: Running, secret: str, connections: int) -> Iterator[Server]:
    clients = [httpx.Client(timeout=300) for _ in range(connections)]
    try:
        _say(f"  pid {process.process.pid} listening on {process.url}")
        yield Server(process, secret, clients)
    finally:
        for client in clients:
            client.close()


# ---------------------------------------------------------------------------------------------
# Timed runs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    records: int
    seconds: float
    cpu: dict[str, float]
    """CPU seconds used meanwhile, by party: "server", "database", "client"."""

    @property
    def per_second(self) -> float:
        return self.records / self.seconds

    def cpu_per_record(self, party: str) -> float | None:
        """Microseconds of `party`'s CPU per record, None when not measured."""
        seconds = self.cpu.get(party)
        return None if seconds is None else seconds / self.records * 1e6


def _timed(meters: CpuMeters, records: int, run: Callable[[], float]) -> Timing:
    before = read_meters(meters)
    seconds = run()
    return Timing(records, seconds, used_since(meters, before))


def _run_concurrently(
    jobs: Sequence[Any], resources: Sequence[Any], work: Callable[[Any, Any], None]
) -> float:
    """Run `work(resource, job)` for every job, one thread per resource (a client connection,
    a database connection) taking the next job when done; returns the wall seconds."""
    pending: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for job in jobs:
        pending.put(job)
    errors: list[BaseException] = []
    ready = threading.Barrier(len(resources) + 1)

    def worker(resource: Any) -> None:
        ready.wait()
        while not errors:
            try:
                job = pending.get_nowait()
            except queue.Empty:
                return
            try:
                work(resource, job)
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=worker, args=(r,)) for r in resources]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


def post_bodies(
    server: Server,
    entity: str,
    bodies: Sequence[bytes],
    expected: Counter[str],
    connections: int,
    meters: CpuMeters,
    *,
    minimal: bool = False,
) -> Timing:
    """POST every body on `connections` client connections; checks each answer and the
    outcome totals (for the minimal app, that every record was stored)."""
    url = f"{server.url}/v1/sync/{entity}"
    headers = {"content-type": "application/json", "authorization": f"Bearer {server.secret}"}
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    if minimal:
        expected = Counter(stored=expected.total())

    def send(client: httpx.Client, body: bytes) -> None:
        response = client.post(url, content=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
        answer = orjson.loads(response.content)
        counts = (
            {"stored": answer["stored"]}
            if minimal
            else {k: v for k, v in answer["summary"].items() if k != "total" and v}
        )
        with lock:
            outcomes.update(counts)

    timing = _timed(
        {**meters, "server": server.cpu_seconds, "client": time.process_time},
        expected.total(),
        lambda: _run_concurrently(bodies, server.clients[:connections], send),
    )
    if outcomes != expected:
        raise RuntimeError(f"unexpected outcomes {dict(outcomes)}, expected {dict(expected)}")
    return timing


def raw_upsert_statement(engine: Engine, table: Table) -> Any:
    insert = (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(table)
    keep = {"id", "tenant_id", "zoho_id", "created_at"}
    return insert.on_conflict_do_update(
        index_elements=["tenant_id", "zoho_id"],
        set_={c.name: insert.excluded[c.name] for c in table.columns if c.name not in keep},
        where=table.c.fingerprint != insert.excluded.fingerprint,
    )


def raw_upsert(
    engine: Engine,
    table: Table,
    batches: Sequence[list[dict[str, Any]]],
    tenant_id: int,
    workers: int,
    meters: CpuMeters,
) -> Timing:
    """The floor: the same rows upserted straight into the same table, one commit per batch."""
    for rows in batches:
        for row in rows:
            row["tenant_id"] = tenant_id
    statement = raw_upsert_statement(engine, table)

    def upsert(connection: Any, rows: list[dict[str, Any]]) -> None:
        with connection.begin():
            connection.execute(statement, rows)

    connections = [engine.connect() for _ in range(workers)]
    try:
        return _timed(
            {**meters, "client": time.process_time},
            sum(len(b) for b in batches),
            lambda: _run_concurrently(batches, connections, upsert),
        )
    finally:
        for connection in connections:
            connection.close()


# ---------------------------------------------------------------------------------------------
# One database
# ---------------------------------------------------------------------------------------------


@dataclass
class BackendResult:
    name: str
    http: dict[str, Timing]
    minimal: dict[str, Timing]
    raw: dict[str, Timing]
    server_peak_mib: float | None = None
    """The server process's peak resident memory (VmHWM) over the whole run."""


def peak_rss_mib(pid: int) -> float | None:
    """A process's peak resident memory so far (Linux's VmHWM), in MiB; None where unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def _through(
    server: Server,
    work: Workload,
    args: argparse.Namespace,
    meters: CpuMeters,
    *,
    name: str,
    minimal: bool,
) -> dict[str, Timing]:
    """The warm-up, then every scenario timed, through the service or the minimal app."""
    label = "minimal" if minimal else "HTTP"
    for scenario in SCENARIOS:
        warm = work.warmup[scenario]
        post_bodies(
            server, work.entity, warm.bodies, warm.expected, args.clients, meters, minimal=minimal
        )
    timings: dict[str, Timing] = {}
    for scenario in SCENARIOS:
        variant = work.timed[scenario]
        timings[scenario] = post_bodies(
            server,
            work.entity,
            variant.bodies,
            variant.expected,
            args.clients,
            meters,
            minimal=minimal,
        )
        _say(f"  {name:<10} {label:<8} {scenario:<14} {timings[scenario].per_second:>9,.0f} rec/s")
    return timings


def run_backend(
    name: str, url: str, work: Workload, args: argparse.Namespace, workdir: Path
) -> BackendResult:
    entity = work.entity
    engine = make_engine(url)
    migrate.upgrade(engine)
    database_cpu = postgres_cpu_meter(url) if engine.dialect.name == "postgresql" else None
    meters: CpuMeters = {"database": database_cpu} if database_cpu else {}
    secret = secrets.token_urlsafe(32)
    with (
        running_service(url, workdir, secret) as process,
        connected(process, secret, args.clients) as server,
    ):
        for key, records in work.setup:
            chunks = workloads.batches(records, args.batch)
            bodies = [orjson.dumps({"data": list(c)}) for c in chunks]
            post_bodies(server, key, bodies, Counter(NEW=len(records)), 1, meters)
        http = _through(server, work, args, meters, name=name, minimal=False)
        server_peak = peak_rss_mib(process.process.pid)
    with (
        running_minimal_app(url, workdir, secret, args.minimal_record_type) as process,
        connected(process, secret, args.clients) as server,
    ):
        minimal = _through(server, work, args, meters, name=name, minimal=True)

    table = ENTITY_TABLES[entity]
    with engine.begin() as connection:
        connection.execute(table.delete())
        tenant_id = connection.scalar(select(Tenant.id).where(Tenant.slug == "default"))
    assert tenant_id is not None
    raw: dict[str, Timing] = {}
    for variants in (work.warmup, work.timed):
        for scenario in SCENARIOS:
            rows = variants[scenario].rows
            timing = raw_upsert(engine, table, rows, tenant_id, args.clients, meters)
            if variants is work.timed:
                raw[scenario] = timing
                _say(f"  {name:<10} raw      {scenario:<14} {timing.per_second:>9,.0f} rec/s")
    engine.dispose()
    return BackendResult(name, http, minimal, raw, server_peak)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _micros(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def report(results: Sequence[BackendResult], work: Workload, args: argparse.Namespace) -> str:
    new = work.timed["all-NEW"]
    body_kib = sum(len(b) for b in new.bodies) / len(new.bodies) / 1024
    lines = [
        f"{len(new.records):,} {work.entity} records ({args.shape}), {args.batch} per request "
        f"(about {body_kib:,.0f} KiB), {args.clients} client connection(s); at the end "
        f"{machine_load()}",
        "",
        f"{'':<26}{'records/s':^30}{'HTTP /':^16}  {'CPU us/record':^50}",
        f"{'':<26}{'':<30}{'':<16}  {'HTTP':^24}{'minimal':^15}{'raw':^11}",
        f"{'database':<11}{'scenario':<15}{'HTTP':>10}{'minimal':>10}{'raw':>10}"
        f"{'minimal':>9}{'raw':>7}  {'server':>8}{'database':>9}{'client':>7}"
        f"{'server':>7}{'database':>9}{'database':>9}{'bench':>6}",
    ]
    for result in results:
        for scenario in SCENARIOS:
            http, floor, raw = result.http[scenario], result.minimal[scenario], result.raw[scenario]
            lines.append(
                f"{result.name:<11}{scenario:<15}{http.per_second:>10,.0f}"
                f"{floor.per_second:>10,.0f}{raw.per_second:>10,.0f}"
                f"{http.per_second / floor.per_second:>9.2f}"
                f"{http.per_second / raw.per_second:>7.2f}  "
                f"{_micros(http.cpu_per_record('server')):>8}"
                f"{_micros(http.cpu_per_record('database')):>9}"
                f"{_micros(http.cpu_per_record('client')):>7}"
                f"{_micros(floor.cpu_per_record('server')):>7}"
                f"{_micros(floor.cpu_per_record('database')):>9}"
                f"{_micros(raw.cpu_per_record('database')):>9}"
                f"{_micros(raw.cpu_per_record('client')):>6}"
            )
    lines.append("")
    lines += [
        f"{result.name}: the server's peak RSS over its run "
        f"{'unknown' if result.server_peak_mib is None else f'{result.server_peak_mib:,.0f} MiB'}"
        for result in results
    ]
    lines += [
        "",
        "HTTP: POST /v1/sync through the server; minimal: the same bodies through the minimal",
        "durable app (decode, COPY / executemany, one transaction per request); raw: the same rows",
        "upserted straight into the table. CPU: server = the zoho-moodle-sync process or the",
        "minimal app (SQLite inside them), database = the PostgreSQL server's processes (when",
        "local; every database of that server counts), client / bench = this process.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--entity", default="students", choices=list(ENTITY_BY_KEY))
    arguments.add_argument("--records", type=int, default=20_000, help="timed records")
    arguments.add_argument("--batch", type=int, default=500, help="records per request")
    arguments.add_argument(
        "--clients", type=int, default=2, help="concurrent client connections (default 2)"
    )
    arguments.add_argument(
        "--database-url",
        help="SQLite database to use; it must not exist yet (default: a new temporary file)",
    )
    arguments.add_argument(
        "--minimal-record-type",
        choices=["text", "jsonb"],
        default="text",
        help="how the minimal app stores records on PostgreSQL (default text; jsonb is how "
        "the service stores raw records, about twice the database's work)",
    )
    arguments.add_argument(
        "--postgres-url",
        default=os.environ.get("TEST_DATABASE_URL") or None,
        help="also run on this PostgreSQL database, whose public schema is DROPPED "
        "(default: $TEST_DATABASE_URL)",
    )
    arguments.add_argument(
        "--shape",
        choices=["full", "mapped"],
        default="full",
        help="full: every field the Zoho API returns (default); mapped: only the fields the "
        "service maps, as with the API's fields= parameter",
    )
    arguments.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only")
    args = arguments.parse_args(argv)
    if args.skip_sqlite and not args.postgres_url:
        arguments.error("--skip-sqlite needs --postgres-url or TEST_DATABASE_URL")

    _say(f"generating {args.records:,} {args.entity} records and their request bodies...")
    work = generate(args.entity, args.records, args.batch, args.shape)

    results = []
    with tempfile.TemporaryDirectory(prefix="zms-bench-") as tmp:
        workdir = Path(tmp)
        if not args.skip_sqlite:
            url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
            path = Settings(database_url=url).sqlite_path()
            if path is None or path.exists():
                arguments.error(f"{url} must be a SQLite file that does not exist yet")
            results.append(run_backend("SQLite", url, work, args, workdir))
        if args.postgres_url:
            url = Settings(database_url=args.postgres_url).database_url
            fresh_postgres(url)
            results.append(run_backend("PostgreSQL", url, work, args, workdir))
    print(report(results, work, args))


if __name__ == "__main__":
    main()
