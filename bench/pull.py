"""Import throughput: `zoho-moodle-sync pull` of a large college from the fake Zoho over HTTP.

    python bench/pull.py                                    # 10,000 students, SQLite
    TEST_DATABASE_URL=postgresql://.../zms_bench python bench/pull.py --backend both

For each database the benchmark

1. builds the records before anything is timed: a college of `--students` students (default
   10,000) each enrolled in `--enrolments-per-student` classes (default 5: 50,000 enrolments),
   with its programmes, units, teachers and classes, every record with all the fields of the
   BTEC org's modules (tests/factories.py). Factories are slow, so a college of 200 students is
   built once and copied with new record ids (lookups renumbered alike, student numbers made
   unique) until it has the size asked for;
2. starts the fake Zoho (accounts server and CRM API, tests/fakes/zoho.py) in a child process
   holding those records, on a fresh database (a new SQLite file; on PostgreSQL the `public`
   schema of the given database is DROPPED and rebuilt, so point it at a throwaway database);
3. runs `zoho-moodle-sync pull default --entity ...` in a child process (not on a terminal, so
   it logs plain lines) and times it, reading its peak resident memory (VmHWM) from the kernel
   while it runs;

and prints records/s in all and per module, the pages read, and the peak RSS of the pull.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the record factories and the fake Zoho live in tests/

from tests import factories  # noqa: E402

from subprocesses import (  # noqa: E402
    fresh_postgres,
    machine_load,
    running_fake_zoho,
    serve_command,
    zoho_settings,
)
from zoho_moodle_sync.db import migrate  # noqa: E402
from zoho_moodle_sync.db.session import make_engine  # noqa: E402

ENTITIES = ("programs", "units", "teachers", "students", "classes", "enrollments")
MODULES = {
    "programs": factories.PROGRAMS,
    "units": factories.UNITS,
    "teachers": factories.TEACHERS,
    "students": factories.STUDENTS,
    "classes": factories.CLASSES,
    "enrollments": factories.ENROLLMENTS,
}
BLOCK = 200
"""Students in the college that is built once and copied."""
ZOHO_ID = re.compile(rb'"(\d{19})"')
STUDENT_NUMBER = re.compile(rb'"Name":"(A\d{4}[A-Z0-9]+-\d+)"')


def college(students: int, enrolments_per_student: int) -> dict[str, list[dict[str, object]]]:
    """`students` students (a multiple of BLOCK) with their classes, enrolments and what those
    need, by module: copies of one college of BLOCK students with fresh ids."""
    block = factories.build_college(
        students=BLOCK,
        teachers=10,
        programs=4,
        units=8,  # two per programme: the classes spread evenly over the programmes
        classes=4 * enrolments_per_student,
        enrollments_per_student=enrolments_per_student,
        payments_per_student=0,
        seed=20261202,
    )
    text = orjson.dumps({module: block[module] for module in MODULES.values()})
    copies = max(1, students // BLOCK)
    modules: dict[str, list[dict[str, object]]] = {module: [] for module in MODULES.values()}
    for copy in range(copies):

        def renumber(match: re.Match[bytes], copy: int = copy) -> bytes:
            return b'"%d"' % (int(match.group(1)) + copy * 10**9)

        def student_number(match: re.Match[bytes], copy: int = copy) -> bytes:
            return b'"Name":"%s-%d"' % (match.group(1), copy)

        copied = STUDENT_NUMBER.sub(student_number, ZOHO_ID.sub(renumber, text))
        for module, records in orjson.loads(copied).items():
            modules[module].extend(records)
    return modules


@dataclass
class Result:
    backend: str
    records: int
    seconds: float
    peak_rss_mib: float
    log: str


def run_pull(database_url: str, workdir: Path, seed: Path, entities: list[str]) -> Result:
    with running_fake_zoho(workdir, seed) as zoho:
        env = {
            **os.environ,
            **zoho_settings(zoho),
            "DATABASE_URL": database_url,
            "ZOHO_REQUESTS_PER_MINUTE": "0",
            "LOG_LEVEL": "WARNING",
        }
        command = [*serve_command(), "pull", "default"]
        for entity in entities:
            command += ["--entity", entity]
        log_path = workdir / "pull.log"
        with log_path.open("wb") as output:
            started = time.perf_counter()
            process = subprocess.Popen(
                command, cwd=workdir, env=env, stdout=output, stderr=subprocess.STDOUT
            )
            peak = peak_rss_mib(process)
            seconds = time.perf_counter() - started
    log = log_path.read_text(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"the pull failed (status {process.returncode}):\n{log}")
    return Result("", 0, seconds, peak, log)


def peak_rss_mib(process: subprocess.Popen[bytes]) -> float:
    """The process's peak resident memory (the kernel's VmHWM), read until it exits. (The
    rusage of a child would count the memory of this process, which it was forked from.)"""
    peak = 0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            break
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
        time.sleep(0.05)
    process.wait()
    return peak / 1024


def fresh_database(backend: str, workdir: Path) -> str:
    if backend == "sqlite":
        url = f"sqlite:///{workdir / 'pull.db'}"
    else:
        url = os.environ.get("TEST_DATABASE_URL", "")
        if not url:
            raise SystemExit("--backend postgresql needs TEST_DATABASE_URL (a throwaway database)")
        fresh_postgres(url)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


def per_module(log: str) -> list[str]:
    """The pull's own lines: `students: done, 10000 records in 12.3 s: ...`."""
    return [line.split(" ", 2)[-1] for line in log.splitlines() if ": done, " in line]


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--students", type=int, default=10_000)
    arguments.add_argument("--enrolments-per-student", type=int, default=5)
    arguments.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="sqlite")
    args = arguments.parse_args()

    load_before = machine_load()
    print(f"building the college ({args.students} students) ...", flush=True)
    built = time.perf_counter()
    modules = college(args.students, args.enrolments_per_student)
    records = sum(len(modules[MODULES[entity]]) for entity in ENTITIES)
    counts = ", ".join(f"{len(modules[MODULES[e]])} {e}" for e in ENTITIES)
    print(f"built {records} records in {time.perf_counter() - built:.1f} s: {counts}")

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = []
    with tempfile.TemporaryDirectory(prefix="zms-pull-") as tmp:
        workdir = Path(tmp)
        seed = workdir / "college.json"
        seed.write_bytes(orjson.dumps({"modules": modules}))
        del modules
        for backend in backends:
            url = fresh_database(backend, workdir)
            print(f"\n{backend}: pulling ...", flush=True)
            result = run_pull(url, workdir, seed, list(ENTITIES))
            result.backend, result.records = backend, records
            results.append(result)
            for line in per_module(result.log):
                print(f"  {line}")

    print(f"\nImport of {records} records from the fake Zoho over HTTP ({counts})")
    print(f"machine load before: {load_before}; after: {machine_load()}")
    print(f"{'database':<12}{'seconds':>10}{'records/s':>12}{'peak RSS':>12}")
    for result in results:
        print(
            f"{result.backend:<12}{result.seconds:>10.1f}"
            f"{result.records / result.seconds:>12,.0f}{result.peak_rss_mib:>9.0f} MiB"
        )


if __name__ == "__main__":
    main()
