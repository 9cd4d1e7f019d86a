"""Convergence under faults: the default college delivered to the fake Moodle by the service's
real processes on PostgreSQL, while something goes wrong.

    eval "$(bash .ci/postgres.sh)"       # a throwaway server: the bench restarts it
    python bench/faults.py               # every fault; --fault NAME for one (repeatable)

Each run starts from a fresh database (the `public` schema of TEST_DATABASE_URL is DROPPED and
rebuilt, so point it at a throwaway database) and a fresh fake Moodle with its latency model (a
delivery takes seconds, as on a real site), two API processes (`serve`, no worker inside) and two
`worker` processes. The college (200 students, 20 classes, 800 enrolments, with programmes, units
and teachers) is sent to `POST /v1/sync/{entity}` in batches of 25 of one entity, the batches in
a shuffled order across entities, one batch in ten sent again later; then ten students withdraw
(Status `Withdraw`, a later `Modified_Time`) and twenty enrolments are deleted. The faults:

- `none`: nothing goes wrong (the reference: every other run must end in the same Moodle);
- `worker-kill`: a worker is killed with SIGKILL mid-delivery, and a new one started (as a
  supervisor would restart it);
- `moodle-down`: the fake Moodle answers 503 to every call for 45 seconds from the start;
- `postgres-restart`: the PostgreSQL server is stopped and started again 5 seconds later
  mid-delivery (`.ci/postgres.sh restart`; needs ZMS_PG_DIR);
- `twice-at-once`: every batch is sent at the same moment to both API processes.

For each run the bench prints the time from the first request until Moodle holds the reference
state and no job is open; the jobs held (mass-change guard) and dead; what was lost (in the
reference Moodle, missing or different here) and duplicated (two Moodle objects for one record);
and the API's 5xx answers. It fails (exit status 1) if any run misses the target: converged within
150 s, nothing held, dead, lost or duplicated, no 5xx.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the record factories and the fake Moodle live in tests/

from tests.fakes.moodle import DEFAULT_TOKEN  # noqa: E402

import workloads  # noqa: E402
from subprocesses import (  # noqa: E402
    Running,
    fresh_postgres,
    machine_load,
    running_fake_moodle,
    running_service,
    serve_command,
    stop,
)
from workloads import Record  # noqa: E402
from zoho_moodle_sync.db import migrate  # noqa: E402
from zoho_moodle_sync.db.session import make_engine  # noqa: E402

FAULTS = ("none", "worker-kill", "moodle-down", "postgres-restart", "twice-at-once")
TARGET_SECONDS = 150.0
BATCH = 25
MOODLE_DOWN_SECONDS = 45.0
RESTART_PAUSE_SECONDS = 5
WITHDRAWALS = 10
DELETIONS = 20
OPEN_JOBS = "SELECT count(*) FROM jobs WHERE kind IN ('deliver', 'webhook') AND state IN "
OPEN_JOBS += "('pending', 'running', 'waiting')"

Canonical = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# What is sent
# ---------------------------------------------------------------------------------------------


@dataclass
class Feed:
    """The requests of one run, in order: (method, path, JSON body or None)."""

    requests: list[tuple[str, str, Any]] = field(default_factory=list)


def feed(seed: int) -> Feed:
    rng = random.Random(seed)
    college = workloads.college(1)
    batches = [
        (entity, records[i : i + BATCH])
        for entity, records in college
        for i in range(0, len(records), BATCH)
    ]
    rng.shuffle(batches)
    again = rng.sample(batches, len(batches) // 10)
    result = Feed()
    for entity, records in [*batches, *again]:
        result.requests.append(("POST", f"/v1/sync/{entity}", {"data": list(records)}))
    students = dict(college)["students"]
    withdrawn = [_later(s, Status="Withdraw") for s in rng.sample(students, WITHDRAWALS)]
    result.requests.append(("POST", "/v1/sync/students", {"data": withdrawn}))
    for enrolment in rng.sample(dict(college)["enrollments"], DELETIONS):
        result.requests.append(("DELETE", f"/v1/sync/enrollments/{enrolment['id']}", None))
    return result


def _later(record: Record, **changes: Any) -> Record:
    edited = workloads.changed(record, "students")
    return {**edited, **changes}


# ---------------------------------------------------------------------------------------------
# The service's processes
# ---------------------------------------------------------------------------------------------


class Workers:
    """`zoho-moodle-sync worker` processes that can be killed and replaced."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"worker-{secrets.token_hex(3)}.log").open("wb")
        process = subprocess.Popen(
            [*serve_command(), "worker"],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def kill_one(self) -> None:
        victim = self.processes[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        self.processes.remove(victim)
        self.start()

    def stop_all(self) -> None:
        for process in self.processes:
            stop(process)


@dataclass
class Sent:
    answers: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.answers.items() if status >= 500)


def send(apis: list[str], secret: str, requests: Feed, *, twice_at_once: bool, sent: Sent) -> None:
    headers = {"Authorization": f"Bearer {secret}"}
    with ThreadPoolExecutor(2) as pool, httpx.Client(headers=headers, timeout=120) as client:

        def one(base: str, method: str, path: str, body: Any) -> None:
            try:
                response = client.request(method, f"{base}{path}", json=body)
                sent.answers[response.status_code] += 1
                if response.status_code >= 400:
                    sent.errors.append(f"{method} {path}: {response.status_code} {response.text}")
            except httpx.HTTPError as error:
                sent.errors.append(f"{method} {path}: {type(error).__name__}")

        for index, (method, path, body) in enumerate(requests.requests):
            targets = apis if twice_at_once else [apis[index % len(apis)]]
            futures = [pool.submit(one, base, method, path, body) for base in targets]
            for future in futures:
                future.result()


# ---------------------------------------------------------------------------------------------
# Moodle's state, compared by what the records are (ids differ from run to run)
# ---------------------------------------------------------------------------------------------


def canonical(moodle: Running) -> tuple[Canonical, Counter[str]]:
    """Moodle's users, categories, courses and enrolments keyed by idnumber and short name, and
    how many objects were duplicated (one record, two Moodle objects)."""
    state = httpx.get(f"{moodle.url}/_fake/state", timeout=60).json()
    users = [u for u in state["users"] if not u["deleted"] and u["idnumber"]]
    duplicated: Counter[str] = Counter()
    for kind, items, key in (
        ("users", users, "idnumber"),
        ("categories", state["categories"], "idnumber"),
        ("courses", state["courses"], "shortname"),
    ):
        seen = Counter(item[key] for item in items if item[key])
        duplicated[kind] = sum(n - 1 for n in seen.values() if n > 1)
    user_key = {u["id"]: u["idnumber"] for u in users}
    category_key = {c["id"]: c["idnumber"] for c in state["categories"]}
    course_key = {c["id"]: c["shortname"] for c in state["courses"]}
    result: Canonical = {
        "users": {
            u["idnumber"]: [
                u["username"],
                u["email"],
                u["firstname"],
                u["lastname"],
                u["suspended"],
            ]
            for u in users
        },
        "categories": {c["idnumber"]: c["name"] for c in state["categories"] if c["idnumber"]},
        "courses": {
            c["shortname"]: [c["fullname"], category_key.get(c["categoryid"]), c["idnumber"]]
            for c in state["courses"]
            if c["idnumber"]
        },
        "enrolments": {
            f"{user_key.get(e['userid'])} in {course_key.get(e['courseid'])}": [
                e["roles"],
                e["suspended"],
            ]
            for e in state["enrolments"]
            if e["userid"] in user_key
        },
    }
    return result, duplicated


def lost(reference: Canonical, found: Canonical) -> dict[str, int]:
    """Per kind, the reference's objects missing or different in `found`, and extra ones."""
    return {
        kind: sum(1 for key, value in objects.items() if found[kind].get(key) != value)
        + len(set(found[kind]) - set(objects))
        for kind, objects in reference.items()
    }


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    fault: str
    seconds: float | None
    jobs: Counter[str]
    lost: dict[str, int]
    duplicated: Counter[str]
    server_errors: int
    state: Canonical
    notes: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return (
            self.seconds is not None
            and self.seconds <= TARGET_SECONDS
            and not self.jobs.get("held")
            and not self.jobs.get("dead")
            and not any(self.lost.values())
            and not any(self.duplicated.values())
            and not self.server_errors
        )


@contextlib.contextmanager
def apis(url: str, workdir: Path, secret: str, env: dict[str, str]) -> Iterator[list[str]]:
    with (
        running_service(url, workdir, secret, env) as first,
        running_service(url, workdir, secret, env) as second,
    ):
        yield [first.url, second.url]


def open_jobs(url: str) -> int | None:
    """Jobs still to do, or None while the database cannot be reached."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.exec_driver_sql(OPEN_JOBS).scalar_one())
    except Exception:
        return None
    finally:
        engine.dispose()


def job_states(url: str) -> Counter[str]:
    engine = make_engine(url)
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT state, count(*) FROM jobs WHERE kind = 'deliver' GROUP BY state"
        )
        states = Counter({state: int(count) for state, count in rows})
    engine.dispose()
    return states


def run(fault: str, url: str, workdir: Path, reference: Canonical | None) -> Outcome:
    fresh_postgres(url)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    secret = secrets.token_urlsafe(24)
    requests = feed(seed=7)
    with running_fake_moodle(workdir, DEFAULT_TOKEN, latency=True) as moodle:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "AUTO_MIGRATE": "false",
            "WEBHOOK_SECRET": secret,
            "MOODLE_URL": moodle.url,
            "MOODLE_TOKEN": DEFAULT_TOKEN,
            "LOG_LEVEL": "WARNING",
            "RUN_WORKER": "false",
            "WORKER_POLL_SECONDS": "0.2",
            "RECONCILE_MINUTES": "0",
            "MOODLE_CHECK_HOURS": "0",
        }
        workers = Workers(env, workdir)
        sent = Sent()
        notes: list[str] = []
        with apis(url, workdir, secret, env) as bases:
            for _ in range(2):
                workers.start()
            started = time.monotonic()
            timers = schedule(fault, moodle, workers, notes)
            send(bases, secret, requests, twice_at_once=fault == "twice-at-once", sent=sent)
            notes.append(f"sent in {time.monotonic() - started:.1f} s")
            for timer in timers:
                timer.join()
            seconds = converge(url, moodle, reference, started)
            workers.stop_all()
        found, duplicated = canonical(moodle)
    states = job_states(url)
    notes += sent.errors[:3]
    return Outcome(
        fault,
        seconds,
        states,
        lost(reference, found) if reference else {},
        duplicated,
        sent.server_errors,
        found,
        notes,
    )


def schedule(fault: str, moodle: Running, workers: Workers, notes: list[str]) -> list[Any]:
    """Threads that inject the fault at its moment."""

    def later(seconds: float, action: Callable[[], None], what: str) -> threading.Thread:
        def go() -> None:
            time.sleep(seconds)
            action()
            notes.append(f"{what} at {seconds:.0f} s")

        thread = threading.Thread(target=go, daemon=True)
        thread.start()
        return thread

    if fault == "worker-kill":
        return [later(6, workers.kill_one, "a worker killed (SIGKILL) and replaced")]
    if fault == "moodle-down":
        down = {"kind": "status", "status": 503}
        httpx.post(f"{moodle.url}/_fake/faults", json=down, timeout=10)
        notes.append("Moodle answers 503 from the start")
        return [
            later(
                MOODLE_DOWN_SECONDS,
                lambda: httpx.delete(f"{moodle.url}/_fake/faults", timeout=10).raise_for_status(),
                "Moodle back",
            )
        ]
    if fault == "postgres-restart":
        directory = os.environ["ZMS_PG_DIR"]
        restart = [
            "bash",
            str(REPO / ".ci" / "postgres.sh"),
            "restart",
            directory,
            str(RESTART_PAUSE_SECONDS),
        ]
        return [
            later(
                6,
                lambda: subprocess.run(restart, check=True, capture_output=True),
                f"PostgreSQL restarted ({RESTART_PAUSE_SECONDS} s down)",
            )
        ]
    return []


def converge(
    url: str, moodle: Running, reference: Canonical | None, started: float
) -> float | None:
    """Seconds from `started` until no job is open and Moodle holds the reference (or, without
    one, until no job is open); None if that takes longer than twice the target."""
    while time.monotonic() - started < 2 * TARGET_SECONDS:
        if open_jobs(url) == 0:
            found, _ = canonical(moodle)
            if reference is None or not any(lost(reference, found).values()):
                return time.monotonic() - started
        time.sleep(0.5)
    return None


# ---------------------------------------------------------------------------------------------


def report(outcomes: list[Outcome]) -> str:
    lines = [
        f"{'fault':<18}{'converged':>11}{'held':>6}{'dead':>6}{'lost':>6}{'dupl.':>7}{'5xx':>6}"
        "  ok",
    ]
    for o in outcomes:
        seconds = f"{o.seconds:.1f} s" if o.seconds is not None else "never"
        lines.append(
            f"{o.fault:<18}{seconds:>11}{o.jobs.get('held', 0):>6}{o.jobs.get('dead', 0):>6}"
            f"{sum(o.lost.values()):>6}{sum(o.duplicated.values()):>7}{o.server_errors:>6}"
            f"  {'yes' if o.ok() else 'NO'}"
        )
    for o in outcomes:
        lines.append(f"  {o.fault}: {'; '.join(o.notes)}")
        if any(o.lost.values()) or any(o.duplicated.values()):
            lines.append(f"    lost {o.lost}, duplicated {dict(o.duplicated)}")
    return "\n".join(lines)


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--fault", action="append", choices=FAULTS, help="default: all")
    arguments.add_argument("--keep", type=Path, help="keep the processes' logs in this folder")
    args = arguments.parse_args()
    url = os.environ.get("TEST_DATABASE_URL")
    if not url or not url.startswith("postgresql"):
        raise SystemExit("TEST_DATABASE_URL must name a throwaway PostgreSQL database")
    chosen = args.fault or list(FAULTS)
    if "postgres-restart" in chosen and not os.environ.get("ZMS_PG_DIR"):
        print("postgres-restart needs ZMS_PG_DIR (a server from .ci/postgres.sh); left out")
        chosen.remove("postgres-restart")
    load = machine_load()
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            workdir = args.keep
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zms-faults-")))
        reference = run("none", url, workdir, None)
        outcomes = [reference]
        print(f"none: {reference.seconds} s", flush=True)
        for fault in (f for f in chosen if f != "none"):
            outcome = run(fault, url, workdir, reference.state)
            print(f"{fault}: {outcome.seconds} s", flush=True)
            outcomes.append(outcome)
    print(f"\nThe default college under faults (load before: {load}; after: {machine_load()})")
    print(report(outcomes))
    sizes = {kind: len(objects) for kind, objects in reference.state.items()}
    print(f"reference Moodle: {json.dumps(sizes)}")
    if not all(outcome.ok() for outcome in outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()
