"""Delivery throughput: the outbox worker draining its queue into a fake Moodle over real HTTP.

    python bench/deliver.py                                   # 1,000 students on SQLite
    python bench/deliver.py --postgres-url postgresql://...   # SQLite, then PostgreSQL
    TEST_DATABASE_URL=postgresql://... python bench/deliver.py --batch-size 200

For each database the benchmark

1. builds a fresh database (a new SQLite file; on PostgreSQL the `public` schema of the given
   database is DROPPED and rebuilt by the migrations, so point it at a throwaway database) and
   starts a fresh fake Moodle 4.5 (`python -m tests.fakes.moodle`) as a subprocess on a free
   loopback port;
2. stores, through the ingress code path in-process (`events.store_inbound` and
   `pipeline.run_sync`, what `POST /v1/sync/{entity}` runs, in requests of 500 records), one
   programme, one teacher, one unit (a class needs it; units have no Moodle counterpart), one
   class of that unit and teacher, N students of the programme and N enrolments of those
   students into the class: 2N + 3 delivery jobs;
3. times `Worker.drain()` delivering them (the "new" wave), then checks the fake Moodle holds
   N + 1 new users and N + 1 enrolments in one new course;
4. renames one student in ten in Zoho (new Last_Name, later Modified_Time), stores them and times
   the drain again (the "update" wave); then resends every record unchanged (the "no-op" wave),
   which must queue no job and make no call.

Moodle calls are counted from the fake's own call log (`GET /_fake/calls`) and cross-checked
against the worker's `moodle_calls` table. Time is split between HTTP round trips to the fake
(measured in the transport, answer read included) and the rest: claiming, reading records and
links, building calls, settling, all in this process. A last table estimates the drain against a
real Moodle from the per-call costs measured on a real Moodle 4.5.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import event, func, select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the record factories and the fake Moodle live in tests/

import factory.random  # noqa: E402
from tests import factories  # noqa: E402
from tests.fakes.moodle import DEFAULT_TOKEN  # noqa: E402

from subprocesses import free_port, stop, wait_until_answering  # noqa: E402
from zoho_moodle_sync import tenants  # noqa: E402
from zoho_moodle_sync.db import migrate  # noqa: E402
from zoho_moodle_sync.db.jobs import Job, JobKind, MoodleCall  # noqa: E402
from zoho_moodle_sync.db.session import Database, make_engine  # noqa: E402
from zoho_moodle_sync.entities import ENTITY_BY_KEY  # noqa: E402
from zoho_moodle_sync.ingress import events, pipeline  # noqa: E402
from zoho_moodle_sync.settings import Settings  # noqa: E402
from zoho_moodle_sync.tenants import TenantContext  # noqa: E402
from zoho_moodle_sync.worker.runner import Worker  # noqa: E402

Record = dict[str, Any]

SEED = 20250510
REQUEST_RECORDS = 500
"""Records per stored request, as a Zoho-side sender would batch them."""
RENAMED_SHARE = 10
"""One student in this many is renamed in the update wave."""
RENAME_SUFFIX = "-Renamed"
SEEDED_USERS = 4
"""Users of a fresh fake Moodle: guest, admin, the web-service user and one without rights."""
CALL_TARGET = 20
"""Calls the new wave may make per 1,000 students enrolled in one class."""

# Measured on a real Moodle 4.5 site (2 cores, loopback, 4 PHP workers with opcache).
REAL_SECONDS_PER_CREATED_USER = 0.010
REAL_SECONDS_PER_ENROLMENT = 0.0066
REAL_SECONDS_PER_OTHER_CALL = 0.05
"""Lookups, updates, category and course calls: single calls took 0.02-0.10 s."""


# ---------------------------------------------------------------------------------------------
# Records, generated before anything is timed
# ---------------------------------------------------------------------------------------------


@dataclass
class Workload:
    students: int
    records: list[tuple[str, list[Record]]]
    """Every record by entity, in dependency order: what the new and no-op waves send."""
    renamed: list[Record]
    """The renamed students of the update wave."""

    @property
    def jobs(self) -> int:
        return 2 * self.students + 3


def generate(students: int) -> Workload:
    factory.random.reseed_random(SEED)
    factories.ZohoRecordFactory.reset_sequence(1)
    program = factories.ProgramRecordFactory()
    teacher = factories.TeacherRecordFactory()
    unit = factories.UnitRecordFactory(program=program)
    class_ = factories.ClassRecordFactory(unit=unit, teacher=teacher, program=program)
    people = [factories.StudentRecordFactory(program=program) for _ in range(students)]
    enrolments = [factories.EnrollmentRecordFactory(student=s, class_=class_) for s in people]
    renamed = [_renamed(s) for s in people[::RENAMED_SHARE]]
    records = [
        ("programs", [program]),
        ("teachers", [teacher]),
        ("units", [unit]),
        ("classes", [class_]),
        ("students", people),
        ("enrollments", enrolments),
    ]
    return Workload(students, records, renamed)


def _renamed(student: Record) -> Record:
    """The student after a change of surname in Zoho, saved an hour later."""
    edited: Record = orjson.loads(orjson.dumps(student))
    edited["Last_Name"] += RENAME_SUFFIX
    edited["Display_Name"] = f"{edited['First_Name']} {edited['Last_Name']}"
    modified = dt.datetime.fromisoformat(edited["Modified_Time"]) + dt.timedelta(hours=1)
    edited["Modified_Time"] = modified.isoformat()
    return edited


# ---------------------------------------------------------------------------------------------
# The fake Moodle, in its own process
# ---------------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc); 0.0 where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class FakeMoodleServer:
    process: subprocess.Popen[bytes]
    url: str

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.process.pid)

    def calls(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = httpx.get(f"{self.url}/_fake/calls", timeout=60).json()
        return calls

    def state(self) -> dict[str, list[dict[str, Any]]]:
        state: dict[str, list[dict[str, Any]]] = httpx.get(
            f"{self.url}/_fake/state", timeout=60
        ).json()
        return state


@contextlib.contextmanager
def running_fake_moodle(workdir: Path) -> Iterator[FakeMoodleServer]:
    port = free_port()
    log_path = workdir / f"fake-moodle-{port}.log"
    command = [sys.executable, "-m", "tests.fakes.moodle", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--token", DEFAULT_TOKEN],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = FakeMoodleServer(process, f"http://127.0.0.1:{port}")
    try:
        wait_until_answering(
            server.process, f"{server.url}/_fake/calls", log_path, "the fake Moodle"
        )
        yield server
    finally:
        stop(process)


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


class StatementCounter:
    """Counts the SQL statements sent to a database while `counting` is active."""

    def __init__(self) -> None:
        self.count = 0

    def _count(self, *_: Any) -> None:
        self.count += 1

    @contextlib.contextmanager
    def counting(self, db: Database) -> Iterator[None]:
        event.listen(db.engine, "before_cursor_execute", self._count)
        try:
            yield
        finally:
            event.remove(db.engine, "before_cursor_execute", self._count)


# ---------------------------------------------------------------------------------------------
# One wave: store records, then time the worker's drain
# ---------------------------------------------------------------------------------------------


def store(
    db: Database, tenant: TenantContext, entity: str, records: Sequence[Record]
) -> Counter[str]:
    """Store records the way `POST /v1/sync/{entity}` does; returns the outcomes."""
    spec = ENTITY_BY_KEY[entity]
    outcomes: Counter[str] = Counter()
    for start in range(0, len(records), REQUEST_RECORDS):
        body = orjson.dumps({"data": list(records[start : start + REQUEST_RECORDS])})
        request = events.InboundRequest(
            source="sync",
            method="POST",
            route=f"/v1/sync/{entity}",
            content_type="application/json",
            query={},
            headers={"content-type": "application/json"},
            body=body,
        )
        event_id = events.store_inbound(db, request, tenant_id=tenant.id, entity=entity)
        report = pipeline.run_sync(
            db,
            tenant=tenant,
            entity=spec,
            event_id=event_id,
            body=body,
            content_type="application/json",
            max_records=REQUEST_RECORDS,
        )
        outcomes.update({k: v for k, v in report.summary().items() if k != "total" and v})
    return outcomes


@dataclass
class Wave:
    name: str
    jobs: int
    """Jobs the stored records queued."""
    states: Counter[str]
    """Those jobs by state after the drain."""
    seconds: float
    http_seconds: float
    statements: int
    """SQL statements the worker ran while draining (an executemany counts once)."""
    worker_cpu: float
    fake_cpu: float
    store_seconds: float
    calls: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Function -> (calls, items), from the fake's log."""
    logged_calls: int = 0
    """Calls in the worker's moodle_calls table."""

    @property
    def total_calls(self) -> int:
        return sum(calls for calls, _ in self.calls.values())

    @property
    def done(self) -> int:
        return self.states["done"]

    @property
    def per_second(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    @property
    def other_seconds(self) -> float:
        return self.seconds - self.http_seconds

    def real_moodle_seconds(self) -> float:
        """What the calls of this wave would take on the measured real Moodle (estimate)."""
        total = 0.0
        for function, (calls, items) in self.calls.items():
            if function == "core_user_create_users":
                total += items * REAL_SECONDS_PER_CREATED_USER
            elif function == "enrol_manual_enrol_users":
                total += items * REAL_SECONDS_PER_ENROLMENT
            else:
                total += calls * REAL_SECONDS_PER_OTHER_CALL
        return total


def _high_water(db: Database) -> tuple[int, int]:
    with db.sessions() as session:
        jobs = session.scalar(select(func.max(Job.id))) or 0
        calls = session.scalar(select(func.max(MoodleCall.id))) or 0
        return jobs, calls


@dataclass(frozen=True)
class Target:
    """What a wave runs against: one database, its tenant, and one fake Moodle."""

    db: Database
    tenant: TenantContext
    settings: Settings
    fake: FakeMoodleServer


def run_wave(
    target: Target,
    name: str,
    batches: Sequence[tuple[str, Sequence[Record]]],
    expected: Counter[str],
) -> Wave:
    db, fake = target.db, target.fake
    jobs_mark, calls_mark = _high_water(db)
    calls_before = len(fake.calls())

    started = time.perf_counter()
    outcomes: Counter[str] = Counter()
    for entity, records in batches:
        outcomes += store(db, target.tenant, entity, records)
    store_seconds = time.perf_counter() - started
    if outcomes != expected:
        raise RuntimeError(f"{name}: stored {dict(outcomes)}, expected {dict(expected)}")
    with db.sessions() as session:
        queued = session.scalar(select(func.count()).where(Job.id > jobs_mark)) or 0

    transport = TimedTransport()
    statements = StatementCounter()
    cpu_before, fake_before = time.process_time(), fake.cpu_seconds()
    started = time.perf_counter()
    with statements.counting(db):
        asyncio.run(_drain(db, target.settings, transport, queued))
    seconds = time.perf_counter() - started
    worker_cpu = time.process_time() - cpu_before
    fake_cpu = fake.cpu_seconds() - fake_before

    with db.sessions() as session:
        states = Counter(
            dict(
                session.execute(
                    select(Job.state, func.count()).where(Job.id > jobs_mark).group_by(Job.state)
                ).all()
            )
        )
        logged = session.scalar(select(func.count()).where(MoodleCall.id > calls_mark)) or 0
    by_function: dict[str, tuple[int, int]] = {}
    for call in fake.calls()[calls_before:]:
        calls, items = by_function.get(call["function"], (0, 0))
        by_function[call["function"]] = (calls + 1, items + call["items"])
    wave = Wave(
        name=name,
        jobs=queued,
        states=states,
        seconds=seconds,
        http_seconds=transport.seconds,
        statements=statements.count,
        worker_cpu=worker_cpu,
        fake_cpu=fake_cpu,
        store_seconds=store_seconds,
        calls=dict(sorted(by_function.items())),
        logged_calls=logged,
    )
    if wave.done != queued:
        _say(f"  WARNING {name}: {queued} jobs queued but {wave.done} done: {dict(states)}")
    if logged != wave.total_calls:
        _say(f"  WARNING {name}: the fake saw {wave.total_calls} calls, moodle_calls has {logged}")
    return wave


async def _drain(db: Database, settings: Settings, transport: TimedTransport, jobs: int) -> int:
    rounds = jobs // settings.worker_claim_size + 10
    async with httpx.AsyncClient(
        transport=transport, timeout=settings.moodle_timeout_seconds
    ) as http:
        worker = Worker(db, settings, http=http, kinds={JobKind.DELIVER})
        return await worker.drain(max_rounds=rounds)


# ---------------------------------------------------------------------------------------------
# One database
# ---------------------------------------------------------------------------------------------


def _fresh_postgres(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _check_moodle_after_new_wave(fake: FakeMoodleServer, students: int) -> None:
    state = fake.state()
    users = len(state["users"]) - SEEDED_USERS
    courses = [c for c in state["courses"] if c["format"] != "site"]
    if users != students + 1 or len(courses) != 1 or len(state["enrolments"]) != students + 1:
        raise RuntimeError(
            f"the fake Moodle holds {users} new users, {len(courses)} courses and "
            f"{len(state['enrolments'])} enrolments; expected {students + 1}, 1, {students + 1}"
        )


def _check_moodle_after_update_wave(fake: FakeMoodleServer, renamed: int) -> None:
    found = sum(1 for u in fake.state()["users"] if u["lastname"].endswith(RENAME_SUFFIX))
    if found != renamed:
        raise RuntimeError(f"the fake Moodle holds {found} renamed users, expected {renamed}")


def run_backend(
    name: str, url: str, work: Workload, args: argparse.Namespace, workdir: Path
) -> list[Wave]:
    with running_fake_moodle(workdir) as fake:
        settings = Settings(
            _env_file=None,
            database_url=url,
            moodle_url=fake.url,
            moodle_token=DEFAULT_TOKEN,
            run_worker=False,
            worker_batch_size=args.batch_size,
            worker_claim_size=args.claim_size,
        )
        db = Database.from_settings(settings)
        migrate.upgrade(db.engine)
        with db.sessions.begin() as session:
            tenant = tenants.context_of(tenants.ensure(session, settings.default_tenant))
        _say(f"  {name}: fake Moodle pid {fake.process.pid} on {fake.url}")

        target = Target(db, tenant, settings, fake)
        total = sum(len(records) for _, records in work.records)
        waves = [run_wave(target, "new", work.records, Counter(NEW=total))]
        _check_moodle_after_new_wave(fake, work.students)
        renamed = len(work.renamed)
        waves.append(
            run_wave(target, "update", [("students", work.renamed)], Counter(UPDATED=renamed))
        )
        _check_moodle_after_update_wave(fake, renamed)
        current = {r["id"]: r for r in work.renamed}
        resent = [
            (entity, [current.get(r["id"], r) for r in records]) for entity, records in work.records
        ]
        waves.append(run_wave(target, "no-op", resent, Counter(UNCHANGED=total)))
        db.dispose()
    for wave in waves:
        _say(
            f"  {name:<10} {wave.name:<7} {wave.done:>7,} jobs in {wave.seconds:7.2f} s "
            f"({wave.per_second:,.0f}/s), {wave.total_calls} calls"
        )
    return waves


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def _per(part: float, whole: float) -> str:
    return f"{part / whole:.1f}" if whole else "-"


def report(results: dict[str, list[Wave]], work: Workload, args: argparse.Namespace) -> str:
    per_thousand = 1000 / work.students
    lines = [
        f"{work.students:,} students + 1 programme + 1 teacher + 1 class + {work.students:,} "
        f"enrolments ({work.jobs:,} jobs); worker batch size {args.batch_size}, claim size "
        f"{args.claim_size}; fake Moodle over HTTP on loopback; {os.cpu_count()} CPUs",
        "",
        f"{'database':<11}{'wave':<8}{'jobs':>7}{'done':>7}{'drain s':>9}{'jobs/s':>8}"
        f"{'calls':>7}{'calls/1k':>9}{'HTTP':>6}{'worker':>8}{'SQL/job':>8}{'worker CPU':>11}"
        f"{'fake CPU':>9}{'store s':>8}",
    ]
    for name, waves in results.items():
        for wave in waves:
            lines.append(
                f"{name:<11}{wave.name:<8}{wave.jobs:>7,}{wave.done:>7,}{wave.seconds:>9.2f}"
                f"{wave.per_second:>8,.0f}{wave.total_calls:>7,}"
                f"{wave.total_calls * per_thousand:>9.1f}"
                f"{_share(wave.http_seconds, wave.seconds):>6}"
                f"{_share(wave.other_seconds, wave.seconds):>8}"
                f"{_per(wave.statements, wave.jobs):>8}"
                f"{wave.worker_cpu:>10.2f}s{wave.fake_cpu:>8.2f}s{wave.store_seconds:>8.2f}"
            )
    lines += [
        "",
        "jobs: queued by the wave's stored records; done: of those, delivered. drain s: wall time",
        "of Worker.drain(). calls/1k: Moodle calls per 1,000 students of the college (per 1,000",
        "enrolments in the new wave). HTTP: share of the drain spent in HTTP round trips to the",
        "fake Moodle, its processing included; worker: the rest, the worker and its database",
        "(claims, reads, call building, settling). SQL/job: SQL statements the worker sent per",
        "job. worker CPU: this process, SQLite included; fake CPU: the fake Moodle's process.",
        "store s: storing the wave's records through ingress beforehand, not timed as delivery.",
    ]
    for name, waves in results.items():
        functions = sorted({f for wave in waves for f in wave.calls})
        lines += ["", f"{name}: Moodle calls by function, calls (items)"]
        lines.append(f"  {'function':<34}" + "".join(f"{w.name:>16}" for w in waves))
        for function in functions:
            cells = "".join(
                f"{'{} ({})'.format(*wave.calls.get(function, (0, 0))):>16}" for wave in waves
            )
            lines.append(f"  {function:<34}{cells}")
        lines.append(f"  {'total':<34}" + "".join(f"{w.total_calls:>16}" for w in waves))
        new = waves[0]
        verdict = "met" if new.total_calls * per_thousand <= CALL_TARGET else "NOT met"
        lines.append(
            f"  new wave: {new.total_calls * per_thousand:.1f} calls per 1,000 enrolments "
            f"(target at most {CALL_TARGET}: {verdict})"
        )
    lines += [
        "",
        "Estimate against a real Moodle 4.5 (2 cores, loopback): the fake's time replaced by",
        f"{REAL_SECONDS_PER_CREATED_USER * 1000:g} ms per created user, "
        f"{REAL_SECONDS_PER_ENROLMENT * 1000:g} ms per enrolment and "
        f"{REAL_SECONDS_PER_OTHER_CALL * 1000:g} ms per other call, plus the worker's own time",
        f"  {'database':<11}{'wave':<8}{'Moodle s':>10}{'worker s':>10}{'total s':>9}{'jobs/s':>8}",
    ]
    for name, waves in results.items():
        for wave in waves:
            moodle = wave.real_moodle_seconds()
            total = moodle + wave.other_seconds
            rate = f"{wave.done / total:>8,.0f}" if wave.done else f"{'-':>8}"
            lines.append(
                f"  {name:<11}{wave.name:<8}{moodle:>10.1f}{wave.other_seconds:>10.2f}"
                f"{total:>9.1f}{rate}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--students", type=int, default=1000, help="students (and enrolments)")
    arguments.add_argument(
        "--batch-size",
        type=int,
        default=Settings.model_fields["worker_batch_size"].default,
        help="WORKER_BATCH_SIZE: items per Moodle call",
    )
    arguments.add_argument(
        "--claim-size",
        type=int,
        default=Settings.model_fields["worker_claim_size"].default,
        help="WORKER_CLAIM_SIZE: jobs claimed at once",
    )
    arguments.add_argument(
        "--postgres-url",
        default=os.environ.get("TEST_DATABASE_URL") or None,
        help="also run on this PostgreSQL database, whose public schema is DROPPED "
        "(default: $TEST_DATABASE_URL)",
    )
    arguments.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only")
    args = arguments.parse_args(argv)
    if args.students < RENAMED_SHARE:
        arguments.error(f"--students must be at least {RENAMED_SHARE}")
    if args.skip_sqlite and not args.postgres_url:
        arguments.error("--skip-sqlite needs --postgres-url or TEST_DATABASE_URL")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    _say(f"generating {args.students:,} students, their enrolments and the rest...")
    work = generate(args.students)
    results: dict[str, list[Wave]] = {}
    with tempfile.TemporaryDirectory(prefix="zms-bench-") as tmp:
        workdir = Path(tmp)
        if not args.skip_sqlite:
            url = f"sqlite:///{workdir / 'bench.db'}"
            results["SQLite"] = run_backend("SQLite", url, work, args, workdir)
        if args.postgres_url:
            url = Settings(_env_file=None, database_url=args.postgres_url).database_url
            _fresh_postgres(url)
            results["PostgreSQL"] = run_backend("PostgreSQL", url, work, args, workdir)
    print(report(results, work, args))


if __name__ == "__main__":
    main()
