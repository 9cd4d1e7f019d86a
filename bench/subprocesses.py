"""Running the benchmarks' servers (the service, the minimal app, the fake Moodle and Zoho) as
child processes on fresh databases, and measuring the CPU time they use.

The benchmarks put the repository on `sys.path` before importing this (the fakes live in tests/).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import make_url, text
from tests.fakes.zoho import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_REFRESH_TOKEN

from zoho_moodle_sync.db.session import make_engine

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_answering(
    process: subprocess.Popen[bytes],
    url: str,
    log_path: Path,
    what: str,
    *,
    any_status: bool = False,
) -> None:
    """Until `url` answers 200 (or anything, with `any_status`); the process's log is in the
    error if it dies or never does."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{log_path.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200 or any_status:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start:\n{log_path.read_text(errors='replace')}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Running:
    """A server in a child process, listening on `url`."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)


@contextlib.contextmanager
def running(
    command: list[str],
    *,
    what: str,
    workdir: Path,
    ready_path: str,
    any_status: bool = False,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[Running]:
    """Start `command` (which listens on `port`), wait until GET `ready_path` answers 200, and
    stop it at the end; the last lines of its log are shown if anything fails meanwhile."""
    port = port or free_port()
    log_path = workdir / f"{what.replace(' ', '-')}-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd or workdir,  # away from any .env of the checkout
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Running(process, f"http://127.0.0.1:{port}", log_path)
    try:
        url = f"{server.url}{ready_path}"
        wait_until_answering(process, url, log_path, what, any_status=any_status)
        yield server
    except Exception:
        lines = log_path.read_text(errors="replace").splitlines()[-40:]
        print(f"{what} log (last lines of {log_path}):", *lines, sep="\n", file=sys.stderr)
        raise
    finally:
        stop(process)


# ---------------------------------------------------------------------------------------------
# The servers
# ---------------------------------------------------------------------------------------------


def serve_command() -> list[str]:
    script = Path(sys.executable).with_name("zoho-moodle-sync")
    if script.exists():
        return [str(script)]
    found = shutil.which("zoho-moodle-sync")
    if found:
        return [found]
    return [sys.executable, "-c", "from zoho_moodle_sync.cli import main; main()"]


@contextlib.contextmanager
def running_service(
    database_url: str, workdir: Path, secret: str, env: Mapping[str, str] | None = None
) -> Iterator[Running]:
    """`zoho-moodle-sync serve` on a free port, access log off, LOG_LEVEL=WARNING, `secret` as
    the default tenant's WEBHOOK_SECRET; `env` adds or overrides settings."""
    port = free_port()
    settings = {
        "DATABASE_URL": database_url,
        "WEBHOOK_SECRET": secret,
        "LOG_LEVEL": "WARNING",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        **(env or {}),
    }
    with running(
        [*serve_command(), "serve", "--no-access-log"],
        what="the server",
        workdir=workdir,
        ready_path="/v1/health",
        port=port,
        env=settings,
    ) as server:
        yield server


@contextlib.contextmanager
def running_workers(
    database_url: str, workdir: Path, count: int, env: Mapping[str, str] | None = None
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` `zoho-moodle-sync worker` processes, LOG_LEVEL=WARNING; `env` adds settings."""
    settings = {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", **(env or {})}
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for _ in range(count):
            log_path = workdir / f"worker-{secrets.token_hex(4)}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [*serve_command(), "worker"],
                    cwd=workdir,
                    env={**os.environ, **settings},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            started.append((process, log_path))
        time.sleep(1)
        for process, log_path in started:
            if process.poll() is not None:
                raise RuntimeError(f"a worker exited:\n{log_path.read_text(errors='replace')}")
        yield [process for process, _ in started]
    finally:
        for process, _ in started:
            stop(process)


@contextlib.contextmanager
def running_minimal_app(
    database_url: str, workdir: Path, secret: str, record_type: str = "text"
) -> Iterator[Running]:
    """The minimal durable app (bench/minimal_app.py) on a free port."""
    port = free_port()
    command = [sys.executable, str(BENCH / "minimal_app.py"), "--port", str(port)]
    with running(
        [*command, "--database-url", database_url, "--record-type", record_type],
        what="the minimal app",
        workdir=workdir,
        ready_path="/health",
        port=port,
        env={"WEBHOOK_SECRET": secret},
    ) as server:
        yield server


@contextlib.contextmanager
def running_fake_moodle(
    workdir: Path, token: str, *, latency: bool = False, php_workers: int = 4, scale: float = 1.0
) -> Iterator[Running]:
    """A fresh fake Moodle 4.5 (tests/fakes/moodle.py), with its latency model if asked."""
    port = free_port()
    command = [sys.executable, "-m", "tests.fakes.moodle", "--port", str(port), "--token", token]
    if latency:
        command += ["--latency", "--php-workers", str(php_workers), "--latency-scale", str(scale)]
    with running(
        command,
        what="the fake Moodle",
        workdir=workdir,
        ready_path="/_fake/calls",
        port=port,
        cwd=REPO,
    ) as server:
        yield server


@contextlib.contextmanager
def running_fake_zoho(workdir: Path, seed: Path) -> Iterator[Running]:
    """The fake Zoho (accounts server and CRM API, tests/fakes/zoho.py) holding the records of
    the JSON file `seed`; its default OAuth client is what `zoho_settings` configures."""
    port = free_port()
    with running(
        [sys.executable, "-m", "tests.fakes.zoho", "--port", str(port), "--seed", str(seed)],
        what="the fake Zoho",
        workdir=workdir,
        ready_path="/",
        any_status=True,
        port=port,
        cwd=REPO,
    ) as server:
        yield server


def zoho_settings(fake_zoho: Running) -> dict[str, str]:
    """The service's settings for the default tenant's Zoho API client on the fake Zoho."""
    return {
        "ZOHO_CLIENT_ID": DEFAULT_CLIENT_ID,
        "ZOHO_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
        "ZOHO_REFRESH_TOKEN": DEFAULT_REFRESH_TOKEN,
        "ZOHO_ACCOUNTS_URL": fake_zoho.url,
        # Access tokens are shared through the database only when they can be sealed.
        "SECRET_KEY": secrets.token_urlsafe(32),
    }


# ---------------------------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------------------------


def fresh_postgres(url: str) -> None:
    """DROP the `public` schema of the database at `url` and create it empty again."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


# ---------------------------------------------------------------------------------------------
# CPU time
# ---------------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (Linux); [] when unreadable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU time of a process, with that of its exited children if asked; 0.0
    where it cannot be read."""
    fields = _proc_stat(pid)
    if not fields:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_meter(url: str) -> Callable[[], float] | None:
    """CPU time of the local PostgreSQL server at `url` (postmaster and every backend), or None
    when it is not a server on this machine that was started with `-p PORT` (.ci/postgres.sh).
    Other databases of the same server count too."""
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
        own = cpu_seconds(postmaster, reaped_children=True)
        return own + sum(cpu_seconds(pid) for pid in children)

    return cpu


def machine_load() -> str:
    """CPUs and load averages, for the report."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{os.cpu_count()} CPUs, load average {load}"


Meter = Callable[[], float]
CpuMeters = dict[str, Meter]


def read_meters(meters: CpuMeters) -> dict[str, float]:
    return {party: read() for party, read in meters.items()}


def used_since(meters: CpuMeters, before: dict[str, float]) -> dict[str, float]:
    return {party: read() - before[party] for party, read in meters.items()}
