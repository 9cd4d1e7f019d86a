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
5. stops the server, empties the entity table and times the same three scenarios as a raw bulk
   upsert of the same rows (SQLAlchemy Core INSERT ... ON CONFLICT DO UPDATE on the same
   table, in the same batches and connections, one transaction per batch, no HTTP, no
   validation, no inbound event, no history; a conflicting row is rewritten only when its
   fingerprint differs);

and prints records/s for both, their ratio, and the CPU time spent per record by the server,
the PostgreSQL server (when it runs on this machine) and this client, which all share the
machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import queue
import secrets
import shutil
import subprocess
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
from sqlalchemy import Engine, Table, make_url, select, text
from sqlalchemy.dialects import postgresql, sqlite

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the record factories live in tests/

import factory.random  # noqa: E402
from tests import factories  # noqa: E402

from subprocesses import free_port, stop, wait_until_answering  # noqa: E402
from zoho_moodle_sync import (  # noqa: E402
    mapper,
    parser,
    stages,
)
from zoho_moodle_sync.db import migrate  # noqa: E402
from zoho_moodle_sync.db.base import utcnow  # noqa: E402
from zoho_moodle_sync.db.models import ENTITY_TABLES, Tenant  # noqa: E402
from zoho_moodle_sync.db.session import make_engine  # noqa: E402
from zoho_moodle_sync.entities import ENTITIES, ENTITY_BY_KEY  # noqa: E402
from zoho_moodle_sync.field_mapping import DEFAULT_MAPPING  # noqa: E402
from zoho_moodle_sync.fingerprint import fingerprint  # noqa: E402
from zoho_moodle_sync.settings import Settings  # noqa: E402

Record = dict[str, Any]

SEED = 20250510
POOL_SIZE = 200
"""Records of each entity the benchmarked one refers to, stored before timing."""
CHANGED_SHARE = 10
"""One record in this many changes in the 10%-changed scenario."""

RELATED: dict[str, dict[str, str]] = {
    "units": {"program": "programs"},
    "students": {"program": "programs"},
    "classes": {"unit": "units", "teacher": "teachers"},
    "enrollments": {"student": "students", "class_": "classes"},
    "registrations": {"student": "students"},
    "payments": {"registration": "registrations"},
    "grades": {"student": "students", "class_": "classes"},
}
"""Factory parameter -> the entity whose pool it is picked from, per entity."""

CHANGED_FIELD = {
    "programs": "Program_ID",
    "teachers": "Phone_Number",
    "students": "Phone_Number",
    "units": "Unit_Credit",
    "classes": "Class_Short_Name",
    "enrollments": "Name",
    "registrations": "Name",
    "payments": "Name",
    "grades": "Name",
}
"""The Zoho field an edit in Zoho changes, per entity (a text field of the domain record)."""

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


def _build(entity: str, count: int, pools: dict[str, list[Record]]) -> list[Record]:
    make = factories.FACTORIES[ENTITY_BY_KEY[entity].module]
    related = RELATED.get(entity, {})
    return [
        make(**{param: pools[key][i % len(pools[key])] for param, key in related.items()})
        for i in range(count)
    ]


def _pools(entity: str) -> list[tuple[str, list[Record]]]:
    needed: set[str] = set()
    pending = list(RELATED.get(entity, {}).values())
    while pending:
        key = pending.pop()
        if key not in needed:
            needed.add(key)
            pending += RELATED.get(key, {}).values()
    pools: dict[str, list[Record]] = {}
    for spec in ENTITIES:
        if spec.key in needed:
            pools[spec.key] = _build(spec.key, POOL_SIZE, pools)
    return list(pools.items())


def _changed(record: Record, entity: str) -> Record:
    """The record after an edit in Zoho: one field changed, Modified_Time an hour later."""
    edited: Record = orjson.loads(orjson.dumps(record))
    name = CHANGED_FIELD[entity]
    edited[name] = f"{edited[name] or ''} (rev 2)".strip()
    modified = dt.datetime.fromisoformat(edited["Modified_Time"]) + dt.timedelta(hours=1)
    edited["Modified_Time"] = modified.isoformat()
    return edited


def _variants(entity: str, records: list[Record]) -> dict[str, Variant]:
    count = len(records)
    changed = [_changed(r, entity) if i % CHANGED_SHARE == 0 else r for i, r in enumerate(records)]
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


def _batches(values: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _prepare(variants: dict[str, Variant], entity: str, batch: int) -> None:
    for variant in variants.values():
        chunks = _batches(variant.records, batch)
        variant.bodies = [orjson.dumps({"data": list(chunk)}) for chunk in chunks]
        variant.rows = [_raw_rows(entity, chunk) for chunk in chunks]


def _mapped_fields_only(entity: str, records: list[Record]) -> list[Record]:
    """Records cut down to the fields the service maps (and `id`, `Modified_Time`), as a
    Zoho API call with `fields=...` or a workflow webhook with chosen merge fields sends them."""
    mapping = DEFAULT_MAPPING.for_entity(ENTITY_BY_KEY[entity])
    kept = {"id", "Modified_Time", *(zoho for _, zoho in mapping.zoho_names)}
    return [{k: v for k, v in record.items() if k in kept} for record in records]


def generate(entity: str, count: int, batch: int, shape: str = "full") -> Workload:
    factory.random.reseed_random(SEED)
    factories.ZohoRecordFactory.reset_sequence(1)
    setup = _pools(entity)
    pools = dict(setup)
    warm, records = _build(entity, batch, pools), _build(entity, count, pools)
    if shape == "mapped":
        warm, records = _mapped_fields_only(entity, warm), _mapped_fields_only(entity, records)
    warmup = _variants(entity, warm)
    timed = _variants(entity, records)
    _prepare(warmup, entity, batch)
    _prepare(timed, entity, batch)
    return Workload(entity, setup, warmup, timed)


# ---------------------------------------------------------------------------------------------
# The server under test
# ---------------------------------------------------------------------------------------------


def _serve_command() -> list[str]:
    script = Path(sys.executable).with_name("zoho-moodle-sync")
    if script.exists():
        return [str(script)]
    found = shutil.which("zoho-moodle-sync")
    if found:
        return [found]
    return [sys.executable, "-c", "from zoho_moodle_sync.cli import main; main()"]


def _proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (Linux); [] when unreadable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU time of a process, with that of its exited children if asked."""
    fields = _proc_stat(pid)
    if not fields:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_meter(url: str) -> Callable[[], float] | None:
    """CPU time of the local PostgreSQL server at `url` (postmaster and every backend), or None
    when it is not a server on this machine that was started with `-p PORT` (.ci/postgres.sh)."""
    port = str(make_url(url).port or 5432)
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()] if Path("/proc").is_dir() else []
    postmaster = None
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        options = command[1:]
        is_postgres = command[0].endswith(b"/postgres") and b"-p" in options[:-1]
        if is_postgres and options[options.index(b"-p") + 1] == port.encode():
            postmaster = pid
    if postmaster is None:
        return None

    def cpu() -> float:
        children = [
            pid
            for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if (fields := _proc_stat(pid)) and int(fields[1]) == postmaster
        ]
        own = _cpu_seconds(postmaster, reaped_children=True)
        return own + sum(_cpu_seconds(pid) for pid in children)

    return cpu


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    secret: str
    """The default tenant's webhook secret, sent as `Authorization: Bearer`."""
    clients: list[httpx.Client]
    """Kept-alive client connections, made before anything is timed."""

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.process.pid)


@contextlib.contextmanager
def running_server(database_url: str, workdir: Path, connections: int) -> Iterator[Server]:
    port = free_port()
    secret = secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "WEBHOOK_SECRET": secret,
        "LOG_LEVEL": "WARNING",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*_serve_command(), "serve", "--no-access-log"],
            cwd=workdir,  # away from any .env of the checkout
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    clients = [httpx.Client(timeout=300) for _ in range(connections)]
    server = Server(process, f"http://127.0.0.1:{port}", secret, clients)
    try:
        wait_until_answering(server.process, f"{server.url}/v1/health", log_path, "the server")
        _say(f"  server pid {process.pid} listening on {server.url}")
        yield server
    except Exception:
        _say(f"server log (last lines of {log_path}):")
        _say("\n".join(log_path.read_text(errors="replace").splitlines()[-40:]))
        raise
    finally:
        for client in clients:
            client.close()
        stop(process)


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


CpuMeters = dict[str, Callable[[], float]]


def _timed(meters: CpuMeters, records: int, run: Callable[[], float]) -> Timing:
    before = {party: read() for party, read in meters.items()}
    seconds = run()
    cpu = {party: read() - before[party] for party, read in meters.items()}
    return Timing(records, seconds, cpu)


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
) -> Timing:
    """POST every body on `connections` client connections; checks each answer and the
    outcome totals."""
    url = f"{server.url}/v1/sync/{entity}"
    headers = {"content-type": "application/json", "authorization": f"Bearer {server.secret}"}
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def send(client: httpx.Client, body: bytes) -> None:
        response = client.post(url, content=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
        summary = orjson.loads(response.content)["summary"]
        with lock:
            outcomes.update({k: v for k, v in summary.items() if k != "total" and v})

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
    raw: dict[str, Timing]


def _fresh_postgres(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def run_backend(
    name: str, url: str, work: Workload, args: argparse.Namespace, workdir: Path
) -> BackendResult:
    entity = work.entity
    engine = make_engine(url)
    migrate.upgrade(engine)
    database_cpu = postgres_cpu_meter(url) if engine.dialect.name == "postgresql" else None
    meters: CpuMeters = {"database": database_cpu} if database_cpu else {}
    http: dict[str, Timing] = {}
    with running_server(url, workdir, args.clients) as server:
        for key, records in work.setup:
            bodies = [orjson.dumps({"data": list(c)}) for c in _batches(records, args.batch)]
            post_bodies(server, key, bodies, Counter(NEW=len(records)), 1, meters)
        for scenario in SCENARIOS:
            warm = work.warmup[scenario]
            post_bodies(server, entity, warm.bodies, warm.expected, args.clients, meters)
        for scenario in SCENARIOS:
            variant = work.timed[scenario]
            http[scenario] = post_bodies(
                server, entity, variant.bodies, variant.expected, args.clients, meters
            )
            _say(f"  {name:<10} HTTP  {scenario:<14} {http[scenario].per_second:>9,.0f} rec/s")

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
                _say(f"  {name:<10} raw   {scenario:<14} {timing.per_second:>9,.0f} rec/s")
    engine.dispose()
    return BackendResult(name, http, raw)


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
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [
        f"{len(new.records):,} {work.entity} records ({args.shape}), {args.batch} per request "
        f"(about {body_kib:,.0f} KiB), {args.clients} client connection(s); "
        f"{os.cpu_count()} CPUs, load average at the end {load}",
        "",
        f"{'':<26}{'records/s':^31}   {'CPU us/record, HTTP':^24}  {'CPU us/record, raw':^17}",
        f"{'database':<11}{'scenario':<15}{'HTTP':>10}{'raw':>10}{'HTTP/raw':>11}   "
        f"{'server':>8}{'database':>9}{'client':>7}  {'database':>9}{'bench':>8}",
    ]
    for result in results:
        for scenario in SCENARIOS:
            http, raw = result.http[scenario], result.raw[scenario]
            lines.append(
                f"{result.name:<11}{scenario:<15}{http.per_second:>10,.0f}{raw.per_second:>10,.0f}"
                f"{http.per_second / raw.per_second:>11.2f}   "
                f"{_micros(http.cpu_per_record('server')):>8}"
                f"{_micros(http.cpu_per_record('database')):>9}"
                f"{_micros(http.cpu_per_record('client')):>7}  "
                f"{_micros(raw.cpu_per_record('database')):>9}"
                f"{_micros(raw.cpu_per_record('client')):>8}"
            )
    lines += [
        "",
        "HTTP: POST /v1/sync through the server; raw: the same rows upserted straight into the",
        "table. CPU: server = the zoho-moodle-sync process (with SQLite inside it), database = the",
        "PostgreSQL server's processes (when local), client / bench = this process.",
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
            _fresh_postgres(url)
            results.append(run_backend("PostgreSQL", url, work, args, workdir))
    print(report(results, work, args))


if __name__ == "__main__":
    main()
