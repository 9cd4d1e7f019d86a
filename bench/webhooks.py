"""Webhook throughput: one record per request, 50 at a time, through a running server, beside a
minimal durable app given the same requests.

    python bench/webhooks.py                                  # SQLite (+ PostgreSQL if configured)
    python bench/webhooks.py --backend postgresql --postgres-url postgresql://...
    python bench/webhooks.py --requests 5000 --concurrency 100 --path webhook --path sync
    python bench/webhooks.py --workers 2 --env WORKER_POLL_SECONDS=0.2

Paths (`--path`, repeatable; default all three):

- `webhook`: `POST /v1/webhooks/zoho` with `{"module": "BTEC_Students", "data": [record]}`, the
  service without Zoho credentials, so the record in the body is what gets stored;
- `webhook-id`: `POST /v1/webhooks/zoho` with `{"module": "BTEC_Students", "zoho_id": "..."}`,
  the service with Zoho credentials for a fake Zoho (`python -m tests.fakes.zoho`, its own
  process) holding the records, which the service fetches after answering;
- `sync`: `POST /v1/sync/students` with `{"data": [record]}`.

For each database the benchmark builds a fresh database (a new SQLite file; on PostgreSQL the
`public` schema of the given database is DROPPED and rebuilt by the migrations) and starts
`zoho-moodle-sync serve` (access log off, LOG_LEVEL=WARNING, no Moodle configured): on SQLite
the worker that completes webhooks runs inside it, on PostgreSQL in `--workers` separate
`zoho-moodle-sync worker` processes. It stores the programmes the students refer to (so every
student is NEW), then for each path sends `--warmup` untimed requests and `--requests` timed
ones, each a new realistic student (tests/factories.py, about 8 KB of JSON), on
`--concurrency` kept-alive connections from an asyncio client in this process. It then sends
the same bodies to the minimal durable app (bench/minimal_app.py) on the same database.

Printed per path: requests/s; p50 and p99 latency; the ratio of requests/s to the minimal app's;
for webhooks, events stored per second (events `processed` in inbound_events, counted from the
first request to the last `processed_at`) and the share of 202 answers read before their event
was processed; CPU per request of the server, the database server (PostgreSQL only; every
database of that server counts) and this client; transactions committed and connections
opened per request (PostgreSQL only, from pg_stat_database for the whole database, autovacuum
included; read-only transactions that end in a rollback are not counted). The server's CPU
includes its worker processes'.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, func, select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the record factories and the fakes live in tests/

import workloads  # noqa: E402
from load import Burst, post_all  # noqa: E402
from subprocesses import (  # noqa: E402
    CpuMeters,
    Running,
    cpu_seconds,
    fresh_postgres,
    machine_load,
    postgres_cpu_meter,
    read_meters,
    running_fake_zoho,
    running_minimal_app,
    running_service,
    running_workers,
    used_since,
    zoho_settings,
)
from zoho_moodle_sync.db import migrate  # noqa: E402
from zoho_moodle_sync.db.models import InboundEvent  # noqa: E402
from zoho_moodle_sync.db.session import make_engine  # noqa: E402
from zoho_moodle_sync.settings import Settings  # noqa: E402

Record = dict[str, Any]
MODULE = "BTEC_Students"
FINAL_STATES = ("processed", "failed", "rejected", "duplicate")
STATS_DELAY = 11.0
"""Seconds within which an idle PostgreSQL backend has reported its transactions: at most
every second, and 10 s after going idle when it reported less than a second before."""


@dataclass(frozen=True)
class Endpoint:
    key: str
    route: str
    title: str
    webhook: bool
    needs_zoho: bool
    body: Callable[[Record], bytes]


PATHS = {
    "webhook": Endpoint(
        "webhook",
        "/v1/webhooks/zoho",
        "webhook, full record",
        webhook=True,
        needs_zoho=False,
        body=lambda r: orjson.dumps({"module": MODULE, "data": [r]}),
    ),
    "webhook-id": Endpoint(
        "webhook-id",
        "/v1/webhooks/zoho",
        "webhook, id only",
        webhook=True,
        needs_zoho=True,
        body=lambda r: orjson.dumps({"module": MODULE, "zoho_id": r["id"]}),
    ),
    "sync": Endpoint(
        "sync",
        "/v1/sync/students",
        "sync, one record",
        webhook=False,
        needs_zoho=False,
        body=lambda r: orjson.dumps({"data": [r]}),
    ),
}


# ---------------------------------------------------------------------------------------------
# Records, generated before anything is timed
# ---------------------------------------------------------------------------------------------


@dataclass
class Workload:
    programs: list[Record]
    warmup: dict[str, list[Record]]
    timed: dict[str, list[Record]]
    """Path -> its own new students: every request brings a student not stored yet."""

    def bodies(self, path: Endpoint, *, warm: bool) -> list[bytes]:
        return [path.body(r) for r in (self.warmup if warm else self.timed)[path.key]]

    def zoho_records(self) -> list[Record]:
        """What the fake Zoho must hold: the students named by id only."""
        return self.warmup.get("webhook-id", []) + self.timed.get("webhook-id", [])


def generate(paths: Sequence[Endpoint], requests: int, warmup: int) -> Workload:
    workloads.reseed()
    (entity, programs), *_ = workloads.dependency_pools("students")
    assert entity == "programs"
    pools = {"programs": programs}
    warm = {p.key: workloads.build("students", warmup, pools) for p in paths}
    timed = {p.key: workloads.build("students", requests, pools) for p in paths}
    return Workload(programs, warm, timed)


# ---------------------------------------------------------------------------------------------
# What the database says
# ---------------------------------------------------------------------------------------------


class DatabaseProbe:
    """Reads the events the server stored, and PostgreSQL's transaction counters."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = make_engine(url, pool_size=1)
        self.postgres = self.engine.dialect.name == "postgresql"

    def counters(self) -> Counter[str] | None:
        """Committed transactions and connections opened in this database so far (PostgreSQL).
        An idle backend reports its counts within `STATS_DELAY` seconds, so this waits first."""
        if not self.postgres:
            return None
        time.sleep(STATS_DELAY)
        query = text(
            "SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = current_database()"
        )
        with self.engine.connect() as connection:
            commits, sessions = connection.execute(query).one()
        return Counter(commits=commits, connections=sessions)

    def wait_until_final(self, ids: Sequence[int], timeout: float) -> list[Any]:
        """The events once none of them is still waiting to be processed."""
        low, high = min(ids), max(ids)
        waiting = (
            select(func.count())
            .select_from(InboundEvent)
            .where(InboundEvent.id.between(low, high), InboundEvent.status.not_in(FINAL_STATES))
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.engine.connect() as connection:
                if not connection.scalar(waiting):
                    break
            time.sleep(0.2)
        else:
            _say(f"  WARNING: events still not processed after {timeout:.0f} s")
        columns = (InboundEvent.id, InboundEvent.status, InboundEvent.processed_at)
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(*columns, InboundEvent.summary).where(InboundEvent.id.between(low, high))
            ).all()
        wanted = set(ids)
        return [row for row in rows if row.id in wanted]

    def dispose(self) -> None:
        self.engine.dispose()


# ---------------------------------------------------------------------------------------------
# One timed burst
# ---------------------------------------------------------------------------------------------


@dataclass
class Result:
    burst: Burst
    cpu: dict[str, float]
    counters: Counter[str] | None
    """Commits and connections opened meanwhile (PostgreSQL)."""
    outcomes: Counter[str] = field(default_factory=Counter)
    stored_per_second: float | None = None
    answered_first: float | None = None
    """Share of the 202 answers read before their event was processed."""

    @property
    def requests(self) -> int:
        return len(self.burst.answers)

    def per_request(self, counter: str) -> float | None:
        return None if self.counters is None else self.counters[counter] / self.requests

    def cpu_ms(self, party: str) -> float | None:
        seconds = self.cpu.get(party)
        return None if seconds is None else seconds / self.requests * 1000


@dataclass(frozen=True)
class Target:
    """A server under test (with the worker processes that complete its webhooks, if any) and
    how to observe it."""

    server: Running
    workers: list[subprocess.Popen[bytes]]
    secret: str
    probe: DatabaseProbe
    meters: CpuMeters
    concurrency: int

    def server_cpu(self) -> float:
        return self.server.cpu_seconds() + sum(cpu_seconds(w.pid) for w in self.workers)


def _post(target: Target, route: str, bodies: Sequence[bytes], concurrency: int) -> Burst:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {target.secret}"}
    return post_all(
        target.server.url, [(route, b) for b in bodies], headers=headers, concurrency=concurrency
    )


def _check_status(burst: Burst, expected: int, what: str) -> None:
    bad = [a for a in burst.answers if a.status != expected]
    if bad:
        raise RuntimeError(
            f"{what}: {len(bad)} answers were not {expected}, e.g. HTTP {bad[0].status}: "
            f"{bad[0].body[:500]!r}"
        )


def measure(target: Target, path: Endpoint, bodies: Sequence[bytes], *, minimal: bool) -> Result:
    """Send `bodies` to `path` and, for a webhook to the service, wait until every event is
    processed; CPU and commits count until then."""
    meters = {**target.meters, "server": target.server_cpu}
    counters_before = target.probe.counters()
    cpu_before = read_meters(meters)
    burst = _post(target, path.route, bodies, target.concurrency)
    answered_by = "the minimal app" if minimal else path.title
    _check_status(burst, 200 if minimal or not path.webhook else 202, answered_by)
    result = Result(burst, {}, None)
    if minimal:
        result.outcomes = Counter(stored=sum(orjson.loads(a.body)["stored"] for a in burst.answers))
    elif path.webhook:
        _settle_webhooks(target, burst, result)
    else:
        for answer in burst.answers:
            summary = orjson.loads(answer.body)["summary"]
            result.outcomes.update({k: v for k, v in summary.items() if k != "total" and v})
    result.cpu = {**used_since(meters, cpu_before), "client": burst.client_cpu}
    counters_after = target.probe.counters()
    if counters_before is not None and counters_after is not None:
        result.counters = counters_after - counters_before
    return result


def _settle_webhooks(target: Target, burst: Burst, result: Result) -> None:
    ids = [orjson.loads(a.body)["event_id"] for a in burst.answers]
    rows = {row.id: row for row in target.probe.wait_until_final(ids, 60 + len(ids) / 10)}
    processed = [rows[i] for i in ids if i in rows and rows[i].status == "processed"]
    result.outcomes = Counter(row.status for row in rows.values())
    for row in processed:
        summary = row.summary or {}
        result.outcomes.update({k: v for k, v in summary.items() if k in ("NEW", "SKIPPED") and v})
    if processed:
        last = max(row.processed_at.timestamp() for row in processed)
        result.stored_per_second = len(processed) / max(last - burst.started_at, 1e-9)
        first = sum(
            1
            for answer, event_id in zip(burst.answers, ids, strict=True)
            if event_id in rows
            and rows[event_id].processed_at is not None
            and answer.answered_at < rows[event_id].processed_at.timestamp()
        )
        result.answered_first = first / len(ids)


# ---------------------------------------------------------------------------------------------
# One database
# ---------------------------------------------------------------------------------------------

Results = dict[tuple[str, str], Result]
"""(path, "service" | "minimal") -> result."""


def _run_path(
    target: Target, work: Workload, path: Endpoint, *, minimal: bool, name: str
) -> Result:
    measure(target, path, work.bodies(path, warm=True), minimal=minimal)
    result = measure(target, path, work.bodies(path, warm=False), minimal=minimal)
    app = "minimal" if minimal else "service"
    _say(f"  {name:<10} {path.key:<11} {app:<8} {result.burst.per_second:>8,.0f} req/s")
    return result


def run_backend(
    name: str,
    url: str,
    work: Workload,
    args: argparse.Namespace,
    workdir: Path,
    fake_zoho: Running | None,
) -> Results:
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    probe = DatabaseProbe(url)
    database_cpu = postgres_cpu_meter(url) if probe.postgres else None
    meters: CpuMeters = {"database": database_cpu} if database_cpu else {}
    secret = secrets.token_urlsafe(32)
    results: Results = {}
    # No Moodle is configured: delivery jobs wait. SQLite: the worker runs inside serve.
    workers = args.workers if probe.postgres else 0
    env = {**({"RUN_WORKER": "false"} if probe.postgres else {}), **args.env}

    @contextlib.contextmanager
    def service(extra: dict[str, str]) -> Iterator[Target]:
        with (
            running_service(url, workdir, secret, {**env, **extra}) as server,
            running_workers(url, workdir, workers, {**env, **extra}) as processes,
        ):
            yield Target(server, processes, secret, probe, meters, args.concurrency)

    with service({}) as target:
        programmes = workloads.batches(work.programs, 100)
        bodies = [orjson.dumps({"data": list(batch)}) for batch in programmes]
        _check_status(_post(target, "/v1/sync/programs", bodies, 1), 200, "programmes")
        for path in (p for p in args.paths if not p.needs_zoho):
            results[path.key, "service"] = _run_path(target, work, path, minimal=False, name=name)
    fetching = [p for p in args.paths if p.needs_zoho]
    if fetching:
        assert fake_zoho is not None
        with service(zoho_settings(fake_zoho)) as target:
            for path in fetching:
                results[path.key, "service"] = _run_path(
                    target, work, path, minimal=False, name=name
                )
    with running_minimal_app(url, workdir, secret, args.minimal_record_type) as app:
        target = Target(app, [], secret, probe, meters, args.concurrency)
        for path in args.paths:
            results[path.key, "minimal"] = _run_path(target, work, path, minimal=True, name=name)
    probe.dispose()
    return results


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _figure(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _row(database: str, title: str, app: str, result: Result, floor: Result) -> str:
    burst = result.burst
    cpu = "/".join(_figure(result.cpu_ms(p), ".2f") for p in ("server", "database", "client"))
    first = None if result.answered_first is None else f"{result.answered_first:.0%}"
    outcomes = " ".join(f"{k} {v:,}" for k, v in sorted(result.outcomes.items()))
    return (
        f"{database:<11}{title:<22}{app:<9}{burst.per_second:>7,.0f}"
        f"{burst.latency_quantile(0.5) * 1000:>8,.0f}{burst.latency_quantile(0.99) * 1000:>8,.0f}"
        f"{burst.per_second / floor.burst.per_second:>9.2f}"
        f"{_figure(result.stored_per_second, ',.0f'):>9}{first or '-':>10}{cpu:>23}"
        f"{_figure(result.per_request('commits'), '.1f'):>8}"
        f"{_figure(result.per_request('connections'), '.2f'):>7}  {outcomes}"
    )


def report(results: dict[str, Results], args: argparse.Namespace, load_before: str) -> str:
    settings = " ".join(f"{k}={v}" for k, v in args.env.items())
    lines = [
        f"{args.requests:,} requests per path, one new ~8 KB student each, {args.concurrency} "
        f"connections; webhooks completed inside serve on SQLite, by {args.workers} worker "
        f"process(es) on PostgreSQL{'; ' + settings if settings else ''}",
        f"{load_before} before, {machine_load()} after",
        "",
        f"{'database':<11}{'path':<22}{'app':<9}{'req/s':>7}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'/minimal':>9}{'stored/s':>9}{'202 first':>10}{'CPU ms/req srv/db/cli':>23}"
        f"{'commits':>8}{'conns':>7}  outcomes",
    ]
    for database, by_path in results.items():
        for path in args.paths:
            floor = by_path[path.key, "minimal"]
            if (path.key, "service") in by_path:
                service = by_path[path.key, "service"]
                lines.append(_row(database, path.title, "service", service, floor))
            lines.append(_row(database, "", "minimal", floor, floor))
    lines += [
        "",
        "req/s: requests answered per second, first request to last answer; p50/p99: latency",
        "seen by the client; /minimal: req/s over the minimal app's with the same bodies;",
        "stored/s: webhook events processed per second, first request to the last processed_at;",
        "202 first: share of 202 answers read before their event was processed; CPU: the server",
        "process (SQLite inside it), the PostgreSQL server (all its databases), this client,",
        "until the last event was processed; commits, conns: transactions committed and database",
        "connections opened per request (PostgreSQL). outcomes: answers' (sync), events' and",
        "their records' (webhooks) outcomes, rows stored (minimal).",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--requests", type=int, default=2000, help="timed requests per path")
    arguments.add_argument("--warmup", type=int, default=200, help="untimed requests first")
    arguments.add_argument("--concurrency", type=int, default=50, help="client connections")
    arguments.add_argument(
        "--workers",
        type=int,
        default=1,
        help="PostgreSQL: zoho-moodle-sync worker processes completing webhooks (default 1)",
    )
    arguments.add_argument(
        "--env",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the service's processes, e.g. WORKER_POLL_SECONDS=0.2 (repeatable)",
    )
    arguments.add_argument(
        "--path",
        action="append",
        choices=list(PATHS),
        dest="path_keys",
        help="what to send (repeatable; default all three)",
    )
    arguments.add_argument(
        "--backend",
        choices=["sqlite", "postgresql", "both"],
        help="default: both when a PostgreSQL URL is given, else sqlite",
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
        help="PostgreSQL database whose public schema is DROPPED (default: $TEST_DATABASE_URL)",
    )
    args = arguments.parse_args(argv)
    args.paths = [PATHS[k] for k in dict.fromkeys(args.path_keys or PATHS)]
    args.env = dict(args.env)
    args.backend = args.backend or ("both" if args.postgres_url else "sqlite")
    if args.backend != "sqlite" and not args.postgres_url:
        arguments.error(f"--backend {args.backend} needs --postgres-url or TEST_DATABASE_URL")
    load_before = machine_load()

    _say(f"generating {len(args.paths) * (args.requests + args.warmup):,} students...")
    work = generate(args.paths, args.requests, args.warmup)
    results: dict[str, Results] = {}
    with tempfile.TemporaryDirectory(prefix="zms-bench-") as tmp:
        workdir = Path(tmp)
        seed = workdir / "zoho-records.json"
        seed.write_bytes(orjson.dumps({"modules": {MODULE: work.zoho_records()}}))
        with _fake_zoho_if_needed(args, workdir, seed) as fake_zoho:
            if args.backend in ("sqlite", "both"):
                url = f"sqlite:///{workdir / 'bench.db'}"
                results["SQLite"] = run_backend("SQLite", url, work, args, workdir, fake_zoho)
            if args.backend in ("postgresql", "both"):
                url = Settings(_env_file=None, database_url=args.postgres_url).database_url
                fresh_postgres(url)
                results["PostgreSQL"] = run_backend(
                    "PostgreSQL", url, work, args, workdir, fake_zoho
                )
    print(report(results, args, load_before))


def _setting(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    if name.strip().lower() not in Settings.model_fields:
        raise argparse.ArgumentTypeError(f"no setting {name!r}")
    return name.strip().upper(), value


def _fake_zoho_if_needed(
    args: argparse.Namespace, workdir: Path, seed: Path
) -> contextlib.AbstractContextManager[Running | None]:
    if any(p.needs_zoho for p in args.paths):
        return running_fake_zoho(workdir, seed)
    return contextlib.nullcontext(None)


if __name__ == "__main__":
    main()
