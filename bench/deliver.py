"""Delivery to Moodle: the service converging a college into a fake Moodle that takes as long as
the recorded real one, beside a sequential script that writes the known final state.

    python bench/deliver.py                                   # SQLite (+ $TEST_DATABASE_URL)
    python bench/deliver.py --postgres-url postgresql://... --skip-sqlite --sizes 1
    python bench/deliver.py --latency-scale 0.2               # every Moodle time / 5
    python bench/deliver.py --setting worker_batch_size=100   # any service setting

Colleges (`--sizes`, default 1,5): the default college (tests/factories.py `build_college`: 200
students each enrolled in 4 of the 5 classes of its programme, 800 enrolments, 20 classes, 10
teachers, 4 programmes, 10 units) and the same times 5. Every Moodle call goes over HTTP to a
fake Moodle 4.5 in its own process (`python -m tests.fakes.moodle --latency`) whose latency
model answers as slowly as the recorded site, with 4 PHP workers (`--php-workers`).

For each college and database (a fresh database and a fresh fake Moodle per run; on PostgreSQL
the `public` schema of the given database is DROPPED and rebuilt by the migrations):

1. batch: every record stored in-process through ingress (`events.store_inbound` and
   `pipeline.run_sync`, what `POST /v1/sync/{entity}` runs, 500 records per request, not
   timed), then `Worker.drain()` delivers it all: timed, its Moodle calls counted from the
   fake's call log and checked against the worker's moodle_calls table. Then two short waves
   on the same Moodle: update (one student in ten renamed in Zoho) and no-op (every record
   sent again: no job, no call);
2. one by one: the same records stored one per request, as webhooks bring them (the set-up
   records first, then each student followed by its enrolments), at `--arrival-rate` records/s
   while a worker runs (`Worker.run`, polling every WORKER_POLL_SECONDS); timed from the first
   record to the last job done. Its Moodle must end up as the batch run's.

Once per college, the script (bench/moodle_script.py) writes the batch run's final Moodle state
to a fresh fake Moodle: categories, users, courses, teacher and student enrolments, 100 per
call, one call after the other, no look-ups; its Moodle must end up the same.

Printed per college: wall time, Moodle calls, their ratio to the script's, the time spent in
Moodle calls, and the calls by function.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the record factories and the fake Moodle live in tests/

from tests.fakes.moodle import DEFAULT_TOKEN  # noqa: E402

import moodle_script  # noqa: E402
import workloads  # noqa: E402
from subprocesses import Running, fresh_postgres, machine_load, running_fake_moodle  # noqa: E402
from workloads import Record  # noqa: E402
from zoho_moodle_sync import tenants  # noqa: E402
from zoho_moodle_sync.db import migrate  # noqa: E402
from zoho_moodle_sync.db.jobs import Job, JobKind, MoodleCall  # noqa: E402
from zoho_moodle_sync.db.session import Database  # noqa: E402
from zoho_moodle_sync.entities import ENTITY_BY_KEY  # noqa: E402
from zoho_moodle_sync.ingress import events, pipeline  # noqa: E402
from zoho_moodle_sync.settings import Settings  # noqa: E402
from zoho_moodle_sync.tenants import TenantContext  # noqa: E402
from zoho_moodle_sync.worker.runner import Worker  # noqa: E402

REQUEST_RECORDS = 500
"""Records per stored request in batch arrival, as a backfill sends them."""
RENAMED_SHARE = 10
"""One student in this many is renamed in the update wave."""
OPEN_STATES = ("pending", "running", "waiting", "held")
"""Job states of work still to do."""
DELIVERY = Job.kind == JobKind.DELIVER

Arrivals = list[tuple[str, list[Record]]]


# ---------------------------------------------------------------------------------------------
# A service under test: one database, its tenant, one fake Moodle
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One way of getting a college into Moodle, and what it cost."""

    name: str
    seconds: float
    calls: Counter[str]
    items: Counter[str]
    moodle_seconds: float | None = None
    """Time spent waiting for Moodle's answers (the service's HTTP round trips)."""
    jobs: Counter[str] = field(default_factory=Counter)
    """The run's jobs by final state."""
    note: str = ""
    converges: bool = True
    """A whole college put into Moodle, comparable with the script (not an update wave)."""
    timed_against_script: bool = True
    """Its wall time compares with the script's (not when it includes the arrivals)."""

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


@dataclass(frozen=True)
class Target:
    db: Database
    tenant: TenantContext
    settings: Settings
    fake: Running


@contextlib.contextmanager
def service(database: str, workdir: Path, args: argparse.Namespace) -> Iterator[Target]:
    """A fresh database (a new SQLite file for "sqlite", else the PostgreSQL database at that
    URL emptied), migrated, and a fresh fake Moodle."""
    if database == "sqlite":
        url = f"sqlite:///{workdir / f'deliver-{uuid.uuid4().hex[:8]}.db'}"
    else:
        url = database
        fresh_postgres(url)
    with running_fake_moodle(
        workdir,
        DEFAULT_TOKEN,
        latency=True,
        php_workers=args.php_workers,
        scale=args.latency_scale,
    ) as fake:
        settings = Settings(
            _env_file=None,
            database_url=url,
            moodle_url=fake.url,
            moodle_token=DEFAULT_TOKEN,
            run_worker=False,
            **args.settings,
        )
        db = Database.from_settings(settings)
        migrate.upgrade(db.engine)
        with db.sessions.begin() as session:
            tenant = tenants.context_of(tenants.ensure(session, settings.default_tenant))
        try:
            yield Target(db, tenant, settings, fake)
        finally:
            db.dispose()


def store(target: Target, entity: str, records: Sequence[Record], per_request: int) -> Counter[str]:
    """Store records the way `POST /v1/sync/{entity}` does; returns the outcomes."""
    spec = ENTITY_BY_KEY[entity]
    outcomes: Counter[str] = Counter()
    for start in range(0, len(records), per_request):
        body = orjson.dumps({"data": list(records[start : start + per_request])})
        request = events.InboundRequest(
            source="sync",
            method="POST",
            route=f"/v1/sync/{entity}",
            content_type="application/json",
            query={},
            headers={"content-type": "application/json"},
            body=body,
        )
        event_id = events.store_inbound(
            target.db, request, tenant_id=target.tenant.id, entity=entity
        )
        report = pipeline.run_sync(
            target.db,
            tenant=target.tenant,
            entity=spec,
            event_id=event_id,
            body=body,
            content_type="application/json",
            max_records=per_request,
        )
        outcomes.update({k: v for k, v in report.summary().items() if k != "total" and v})
    return outcomes


class TimedTransport(httpx.AsyncHTTPTransport):
    """Adds up the time from sending a request to having read its whole answer."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        response = await super().handle_async_request(request)
        await response.aread()
        self.seconds += time.perf_counter() - started
        return response


@dataclass(frozen=True)
class Marks:
    """Where a run starts: the last job, the last call the worker logged, the fake's calls."""

    job: int
    logged_call: int
    fake_calls: int


def _marks(target: Target) -> Marks:
    with target.db.sessions() as session:
        job = session.scalar(select(func.max(Job.id))) or 0
        logged_call = session.scalar(select(func.max(MoodleCall.id))) or 0
    return Marks(job, logged_call, len(moodle_script.fake_calls(target.fake.url)))


def _jobs_since(target: Target, mark: int) -> Counter[str]:
    with target.db.sessions() as session:
        rows = session.execute(
            select(Job.state, func.count()).where(Job.id > mark, DELIVERY).group_by(Job.state)
        ).all()
    return Counter(dict(rows))


def _calls_since(target: Target, marks: Marks) -> tuple[Counter[str], Counter[str]]:
    """Calls and items by function from the fake's call log, checked against the worker's
    moodle_calls table."""
    calls: Counter[str] = Counter()
    items: Counter[str] = Counter()
    for call in moodle_script.fake_calls(target.fake.url)[marks.fake_calls :]:
        calls[call["function"]] += 1
        items[call["function"]] += call["items"]
    with target.db.sessions() as session:
        logged = session.scalar(select(func.count()).where(MoodleCall.id > marks.logged_call))
    if logged != calls.total():
        _say(f"  WARNING: the fake saw {calls.total()} calls, moodle_calls has {logged}")
    return calls, items


def _expect(name: str, outcomes: Counter[str], expected: Counter[str]) -> None:
    if outcomes != expected:
        raise RuntimeError(f"{name}: stored {dict(outcomes)}, expected {dict(expected)}")


# ---------------------------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------------------------


def delivered_in_batch(
    target: Target, name: str, arrivals: Arrivals, expected: Counter[str]
) -> Run:
    """Store every record first, then time the worker delivering them all."""
    marks = _marks(target)
    outcomes: Counter[str] = Counter()
    for entity, records in arrivals:
        outcomes += store(target, entity, records, REQUEST_RECORDS)
    _expect(name, outcomes, expected)
    queued = _jobs_since(target, marks.job).total()
    transport = TimedTransport()

    async def drain() -> None:
        timeout = target.settings.moodle_timeout_seconds
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as http:
            rounds = queued // target.settings.worker_claim_size + 20
            worker = Worker(target.db, target.settings, http=http, kinds={JobKind.DELIVER})
            await worker.drain(max_rounds=rounds)

    started = time.perf_counter()
    asyncio.run(drain())
    seconds = time.perf_counter() - started
    calls, items = _calls_since(target, marks)
    return Run(name, seconds, calls, items, transport.seconds, _jobs_since(target, marks.job))


def delivered_one_by_one(target: Target, arrivals: Arrivals, rate: float) -> Run:
    """Store the records one per request at `rate` a second while a worker runs; until every
    job is done."""
    order = _one_by_one(arrivals)
    marks = _marks(target)
    transport = TimedTransport()

    async def arrive_and_deliver() -> tuple[float, float]:
        timeout = target.settings.moodle_timeout_seconds
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as http:
            worker = Worker(target.db, target.settings, http=http, kinds={JobKind.DELIVER})
            running = asyncio.create_task(worker.run())
            started = time.perf_counter()
            outcomes: Counter[str] = Counter()
            for index, (entity, record) in enumerate(order):
                await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
                outcomes += await asyncio.to_thread(store, target, entity, [record], 1)
            arrived = time.perf_counter() - started
            _expect("one by one", outcomes, Counter(NEW=len(order)))
            while True:  # the database is the only place that knows
                if not await asyncio.to_thread(_open_jobs, target, marks.job):
                    break
                await asyncio.sleep(0.1)
            converged = time.perf_counter() - started
            worker.stop()
            await running
            return arrived, converged

    arrived, converged = asyncio.run(arrive_and_deliver())
    calls, items = _calls_since(target, marks)
    note = (
        f"arrivals took {arrived:.1f} s ({len(order) / arrived:,.0f}/s), the last job was done "
        f"{converged - arrived:.1f} s after the last arrival"
    )
    run = Run("service, one by one", converged, calls, items, transport.seconds, note=note)
    run.jobs = _jobs_since(target, marks.job)
    run.timed_against_script = False
    return run


def _open_jobs(target: Target, mark: int) -> int:
    with target.db.sessions() as session:
        return (
            session.scalar(
                select(func.count()).where(Job.id > mark, DELIVERY, Job.state.in_(OPEN_STATES))
            )
            or 0
        )


def _one_by_one(arrivals: Arrivals) -> list[tuple[str, Record]]:
    """The order an administrator enters a college in: programmes, units, teachers and classes,
    then each student followed by its enrolments."""
    by_entity = dict(arrivals)
    order = [
        (entity, record)
        for entity in ("programs", "units", "teachers", "classes")
        for record in by_entity[entity]
    ]
    enrolments: dict[str, list[Record]] = {}
    for enrolment in by_entity["enrollments"]:
        enrolments.setdefault(enrolment["Enrolled_Students"]["id"], []).append(enrolment)
    for student in by_entity["students"]:
        order.append(("students", student))
        order += [("enrollments", e) for e in enrolments.get(student["id"], [])]
    return order


def _renamed(student: Record) -> Record:
    """The student after a change of surname in Zoho, saved an hour later."""
    edited: Record = orjson.loads(orjson.dumps(student))
    edited["Last_Name"] += "-Renamed"
    edited["Display_Name"] = f"{edited['First_Name']} {edited['Last_Name']}"
    modified = dt.datetime.fromisoformat(edited["Modified_Time"]) + dt.timedelta(hours=1)
    edited["Modified_Time"] = modified.isoformat()
    return edited


# ---------------------------------------------------------------------------------------------
# One college
# ---------------------------------------------------------------------------------------------


@dataclass
class CollegeResult:
    scale: int
    counts: dict[str, int]
    runs: dict[str, list[Run]] = field(default_factory=dict)
    """Database -> the service's runs."""
    script: Run | None = None
    reference: moodle_script.State | None = None
    """The fake Moodle's state after the first batch run: what every other run must reach."""
    mismatches: list[str] = field(default_factory=list)


def run_college(
    scale: int, databases: dict[str, str], args: argparse.Namespace, workdir: Path
) -> CollegeResult:
    arrivals = workloads.college(scale)
    result = CollegeResult(scale, {entity: len(records) for entity, records in arrivals})
    for name, database in databases.items():
        result.runs[name] = _service_runs(result, name, database, arrivals, args, workdir)
    assert result.reference is not None
    with running_fake_moodle(
        workdir, DEFAULT_TOKEN, latency=True, php_workers=args.php_workers, scale=args.latency_scale
    ) as fake:
        script = moodle_script.write(fake.url, DEFAULT_TOKEN, result.reference)
        _compare(result, "script", moodle_script.fake_state(fake.url))
    result.script = Run("script, batches of 100", script.seconds, script.calls, script.items)
    _say(f"  college x{scale} script: {script.seconds:.1f} s, {result.script.total_calls} calls")
    return result


def _service_runs(
    result: CollegeResult,
    name: str,
    database: str,
    arrivals: Arrivals,
    args: argparse.Namespace,
    workdir: Path,
) -> list[Run]:
    total = sum(result.counts.values())
    with service(database, workdir, args) as target:
        batch = delivered_in_batch(target, "service, batch", arrivals, Counter(NEW=total))
        state = moodle_script.fake_state(target.fake.url)
        if result.reference is None:
            result.reference = state
        else:
            _compare(result, f"{name} batch", state)
        students = dict(arrivals)["students"]
        renamed = [_renamed(s) for s in students[::RENAMED_SHARE]]
        update = delivered_in_batch(
            target,
            f"update ({len(renamed)} renamed)",
            [("students", renamed)],
            Counter(UPDATED=len(renamed)),
        )
        current = {r["id"]: r for r in renamed}
        resent = [(e, [current.get(r["id"], r) for r in rs]) for e, rs in arrivals]
        no_op = delivered_in_batch(target, "no-op (all resent)", resent, Counter(UNCHANGED=total))
    update.converges = no_op.converges = False
    runs = [batch, update, no_op]
    _say(
        f"  college x{result.scale} {name}: batch {batch.seconds:.1f} s, {batch.total_calls} calls"
    )
    if not args.skip_one_by_one:
        with service(database, workdir, args) as target:
            one = delivered_one_by_one(target, arrivals, args.arrival_rate)
            _compare(result, f"{name} one by one", moodle_script.fake_state(target.fake.url))
        runs.append(one)
        calls = one.total_calls
        _say(f"  college x{result.scale} {name}: one by one {one.seconds:.1f} s, {calls} calls")
    return runs


def _compare(result: CollegeResult, what: str, state: moodle_script.State) -> None:
    assert result.reference is not None
    expected = moodle_script.comparable(result.reference)
    found = moodle_script.comparable(state)
    for part in expected:
        if expected[part] != found[part]:
            missing = len(set(expected[part]) - set(found[part]))
            message = (
                f"{what}: Moodle's {part} differ from the first batch run's ({missing} missing)"
            )
            result.mismatches.append(message)
            _say(f"  WARNING {message}")


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ratio(part: float, whole: float) -> str:
    return f"{part / whole:.2f}" if whole else "-"


def report(results: Sequence[CollegeResult], args: argparse.Namespace, load_before: str) -> str:
    model = f"{args.php_workers} PHP workers" + (
        f", times x{args.latency_scale:g}" if args.latency_scale != 1 else ""
    )
    settings = ", ".join(f"{k}={v}" for k, v in args.settings.items()) or "service defaults"
    lines = [
        f"fake Moodle with the latency model of the recorded site ({model}); {settings}; "
        f"one by one at {args.arrival_rate:g} records/s; {load_before} before, "
        f"{machine_load()} after",
    ]
    for college in results:
        script = college.script
        assert script is not None
        counts = ", ".join(f"{n:,} {entity}" for entity, n in college.counts.items())
        lines += [
            "",
            f"College x{college.scale}: {counts}",
            f"  {'database':<11}{'run':<24}{'wall s':>8}{'calls':>7}{'time/script':>12}"
            f"{'calls/script':>13}{'in Moodle s':>12}  jobs",
        ]
        rows = [(db, run) for db, runs in college.runs.items() for run in runs]
        for database, run in [*rows, ("-", script)]:
            jobs = " ".join(f"{k} {v:,}" for k, v in sorted(run.jobs.items()))
            moodle = "-" if run.moodle_seconds is None else f"{run.moodle_seconds:.1f}"
            timed = run.converges and run.timed_against_script
            time_ratio = _ratio(run.seconds, script.seconds) if timed else "-"
            calls_ratio = _ratio(run.total_calls, script.total_calls) if run.converges else "-"
            lines.append(
                f"  {database:<11}{run.name:<24}{run.seconds:>8.1f}{run.total_calls:>7}"
                f"{time_ratio:>12}{calls_ratio:>13}{moodle:>12}  {jobs}"
            )
            if run.note:
                lines.append(f"  {'':<11}  {run.note}")
        for database, runs in college.runs.items():
            by_name = {run.name: run for run in runs}
            one, batch = by_name.get("service, one by one"), by_name["service, batch"]
            if one is not None:
                lines.append(
                    f"  {database}: one by one made {_ratio(one.total_calls, batch.total_calls)}"
                    " times the calls of batch arrival"
                )
        lines += _calls_table(college)
        lines += [f"  MISMATCH {m}" for m in college.mismatches]
    lines += [
        "",
        "wall s: the drain after batch arrival; for one by one, from the first record to the",
        "last job done, arrivals included. time/script, calls/script: ratios to the script.",
        "in Moodle s: time spent waiting for Moodle's answers (summed over parallel calls).",
        "update and no-op run after batch, on its Moodle. jobs: the run's jobs by final state.",
    ]
    return "\n".join(lines)


def _calls_table(college: CollegeResult) -> list[str]:
    script = college.script
    assert script is not None
    columns = [
        (f"{db} {'batch' if 'batch' in run.name else '1 by 1'}", run)
        for db, runs in college.runs.items()
        for run in runs
        if run.name.startswith("service")
    ] + [("script", script)]
    functions = sorted({f for _, run in columns for f in run.calls})
    lines = ["  Moodle calls by function, calls (items):"]
    lines.append(f"    {'function':<34}" + "".join(f"{title:>18}" for title, _ in columns))
    for function in functions:
        cells = "".join(
            f"{f'{run.calls[function]} ({run.items[function]:,})':>18}" for _, run in columns
        )
        lines.append(f"    {function:<34}{cells}")
    return lines


def _setting(text: str) -> tuple[str, Any]:
    name, _, value = text.partition("=")
    name = name.strip().lower()
    if name not in Settings.model_fields:
        raise argparse.ArgumentTypeError(f"no setting {name!r}")
    return name, value


def main(argv: Sequence[str] | None = None) -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--sizes", default="1,5", help="colleges, as multiples of the default")
    arguments.add_argument("--arrival-rate", type=float, default=50.0, help="one by one: records/s")
    arguments.add_argument("--skip-one-by-one", action="store_true", help="batch arrival only")
    arguments.add_argument("--php-workers", type=int, default=4, help="the fake Moodle's workers")
    arguments.add_argument(
        "--latency-scale", type=float, default=1.0, help="multiply every modelled Moodle time"
    )
    arguments.add_argument(
        "--setting",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting for the runs, e.g. worker_batch_size=100 (repeatable)",
    )
    arguments.add_argument(
        "--postgres-url",
        default=os.environ.get("TEST_DATABASE_URL") or None,
        help="also run on this PostgreSQL database, whose public schema is DROPPED "
        "(default: $TEST_DATABASE_URL)",
    )
    arguments.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only")
    args = arguments.parse_args(argv)
    args.settings = dict(args.setting)
    if args.skip_sqlite and not args.postgres_url:
        arguments.error("--skip-sqlite needs --postgres-url or TEST_DATABASE_URL")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    load_before = machine_load()

    databases = {} if args.skip_sqlite else {"SQLite": "sqlite"}
    if args.postgres_url:
        databases["PostgreSQL"] = Settings(
            _env_file=None, database_url=args.postgres_url
        ).database_url
    results = []
    with tempfile.TemporaryDirectory(prefix="zms-bench-") as tmp:
        for scale in (int(s) for s in args.sizes.split(",")):
            _say(f"college x{scale}...")
            results.append(run_college(scale, databases, args, Path(tmp)))
    print(report(results, args, load_before))


if __name__ == "__main__":
    main()
