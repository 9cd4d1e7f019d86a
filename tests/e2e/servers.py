"""Running the service's own processes in tests: the console script of the Python running
the tests, a free port, waiting for `/v1/health`, and processes that are always stopped."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

STARTUP_SECONDS = 60


def console_script() -> str:
    """The `zoho-moodle-sync` script of the Python running the tests (or else the one on PATH)."""
    beside_python = Path(sysconfig.get_path("scripts")) / "zoho-moodle-sync"
    if beside_python.exists():
        return str(beside_python)
    on_path = shutil.which("zoho-moodle-sync")
    if on_path is None:
        pytest.fail("the zoho-moodle-sync console script is not installed: pip install -e .")
    return on_path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_healthy(process: subprocess.Popen[bytes], base_url: str, stderr: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the server exited with status {process.returncode} before answering; "
                f"its stderr:\n{stderr.read_text(errors='replace')}"
            )
        try:
            if httpx.get(f"{base_url}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(
        f"the server did not answer /v1/health within {STARTUP_SECONDS}s; "
        f"its stderr:\n{stderr.read_text(errors='replace')}"
    )


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `zoho-moodle-sync` process, stopped (SIGTERM, then SIGKILL) whatever happens."""
    with log.open("wb") as output:
        running = subprocess.Popen(  # noqa: S603
            [console_script(), *args], env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            yield running
        finally:
            running.terminate()
            try:
                running.wait(timeout=30)
            except subprocess.TimeoutExpired:
                running.kill()
                running.wait(timeout=15)
