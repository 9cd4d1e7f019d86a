"""What the image and the compose services run, run here as processes: the entry point, the
one-shot migration, the API with the image's health check, and a worker stopped as Docker and
systemd stop it (SIGTERM). On SQLite files, since they need no server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.deployment import (
    SETTING_NAMES,
    app_services,
    compose_file,
    dockerfile_env,
    dockerfile_instructions,
    final_stage,
    healthcheck_command,
    only,
)
from tests.e2e.servers import console_script, free_port, wait_until_healthy
from zoho_moodle_sync.db import migrate
from zoho_moodle_sync.db.session import make_engine

pytestmark = pytest.mark.e2e

STOP_SECONDS = 30


@pytest.fixture(scope="module")
def image() -> list[Any]:
    return final_stage(dockerfile_instructions())


@pytest.fixture
def environment(tmp_path: Path, image: list[Any]) -> dict[str, str]:
    """The environment of a container of the image, on a new SQLite file: the image's ENV, with
    none of this machine's settings leaking in, and the console script found as in the image."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    env |= dockerfile_env(image)
    env["PATH"] = f"{Path(console_script()).parent}{os.pathsep}{os.environ['PATH']}"
    env["DATABASE_URL"] = f"sqlite:///{tmp_path}/zms.db"
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def entrypoint(image: list[Any]) -> list[str]:
    return only(image, "ENTRYPOINT").exec_form()


def test_the_image_entry_point_lists_the_commands_the_services_use(
    image: list[Any], environment: dict[str, str], tmp_path: Path
) -> None:
    result = run([*entrypoint(image), "--help"], environment, tmp_path)

    assert result.returncode == 0, result.stderr
    for command in ("serve", "worker", "db"):
        assert command in result.stdout


def test_the_migration_service_creates_the_schema_and_can_run_again(
    image: list[Any], environment: dict[str, str], tmp_path: Path
) -> None:
    command = app_services(compose_file())["migrate"]["command"]

    first = run([*entrypoint(image), *command], environment, tmp_path)
    again = run([*entrypoint(image), *command], environment, tmp_path)

    head = migrate.head_revision()
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"database at revision {head}"
    assert again.returncode == 0, again.stderr
    engine = make_engine(environment["DATABASE_URL"])
    try:
        assert migrate.current_revision(engine) == head
    finally:
        engine.dispose()


@pytest.fixture
def api(
    image: list[Any], environment: dict[str, str], tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    """The image's default command (ENTRYPOINT + CMD) serving on a free loopback port."""
    env = environment | {"HOST": "127.0.0.1", "PORT": str(free_port())}
    stderr_path = tmp_path / "api.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(  # noqa: S603
            [*entrypoint(image), *only(image, "CMD").exec_form()],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_until_healthy(process, f"http://127.0.0.1:{env['PORT']}", stderr_path)
            yield process, env
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=STOP_SECONDS)


def test_the_image_health_check_passes_while_the_api_serves_and_fails_once_it_stopped(
    api: tuple[subprocess.Popen[bytes], dict[str, str]], image: list[Any], tmp_path: Path
) -> None:
    process, env = api
    check = healthcheck_command(only(image, "HEALTHCHECK"))
    health = httpx.get(f"http://127.0.0.1:{env['PORT']}/v1/health", timeout=5).json()

    healthy = run(check, env, tmp_path)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=STOP_SECONDS)
    after = run(check, env, tmp_path)

    assert health["status"] == "ok"
    assert health["schema_current"] is True
    assert healthy.returncode == 0, healthy.stderr
    # Uvicorn shuts down gracefully, then dies of the signal it caught, as Docker and systemd
    # expect of a clean stop.
    assert process.returncode in (0, -signal.SIGTERM)
    assert after.returncode != 0


def test_a_worker_stops_cleanly_on_sigterm(
    image: list[Any], environment: dict[str, str], tmp_path: Path
) -> None:
    compose = app_services(compose_file())
    migrated = run([*entrypoint(image), *compose["migrate"]["command"]], environment, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    stderr_path = tmp_path / "worker.stderr"
    with stderr_path.open("wb") as stderr:
        worker = subprocess.Popen(  # noqa: S603
            [*entrypoint(image), *compose["worker"]["command"]],
            cwd=tmp_path,
            env=environment | {"LOG_LEVEL": "INFO"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + STOP_SECONDS
            while "started" not in stderr_path.read_text(errors="replace").lower():
                assert worker.poll() is None, stderr_path.read_text(errors="replace")
                assert time.monotonic() < deadline, "the worker did not start"
                time.sleep(0.1)
            worker.send_signal(signal.SIGTERM)
            returncode = worker.wait(timeout=STOP_SECONDS)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=STOP_SECONDS)

    assert returncode == 0, stderr_path.read_text(errors="replace")
    assert "stopped" in stderr_path.read_text(errors="replace").lower()
