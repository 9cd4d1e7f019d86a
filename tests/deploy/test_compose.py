"""The deployment files agree with the code: docker-compose.yml, the Dockerfile and the systemd
units run real CLI commands with real settings, in the right order, with no secret written down.

Docker cannot run here, so these read the files; test_entry_points.py runs what they run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deployment import (
    REPO,
    SECRET_SETTINGS,
    SETTING_NAMES,
    app_services,
    check_cli_command,
    compose_file,
    dockerfile_env,
    dockerfile_instructions,
    final_stage,
    healthcheck_command,
    only,
    service_environment,
    systemd_unit,
)
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.settings import Settings

# Variables the official PostgreSQL image reads (https://hub.docker.com/_/postgres).
POSTGRES_IMAGE_VARIABLES = frozenset(
    {
        "POSTGRES_DB",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "POSTGRES_INITDB_ARGS",
        "POSTGRES_INITDB_WALDIR",
        "POSTGRES_HOST_AUTH_METHOD",
        "PGDATA",
    }
)
# Variables of the Python base image and the interpreter, not of the service.
RUNTIME_VARIABLES = frozenset(
    {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PIP_DISABLE_PIP_VERSION_CHECK"}
    | {"PIP_NO_CACHE_DIR"}
)
UNITS = REPO / "deploy" / "systemd"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_file()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return app_services(compose)


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    assert isinstance(command, list), f"write commands in list form, got {command!r}"
    return [str(part) for part in command]


def effective_settings(service: dict[str, Any]) -> Settings:
    """The settings the service's process would get from what the compose file sets (the
    `.env` values it reads come underneath and are overridden by these)."""
    environment = service_environment(service)
    environment["DATABASE_URL"] = environment["DATABASE_URL"].replace(
        "${POSTGRES_PASSWORD:?add POSTGRES_PASSWORD to .env}", "password"
    )
    return Settings(**{name.lower(): value for name, value in environment.items()}, _env_file=None)


# --- docker-compose.yml ----------------------------------------------------------------------


def test_compose_runs_postgres_a_migration_the_api_and_workers(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert str(compose["services"]["postgres"]["image"]).startswith("postgres:")
    assert set(services) == {"migrate", "api", "worker"}
    assert command_of(services["migrate"]) == ["db", "upgrade"]
    assert command_of(services["api"])[0] == "serve"
    assert command_of(services["worker"]) == ["worker"]
    assert services["worker"]["deploy"]["replicas"] >= 2


@pytest.mark.parametrize("name", ["migrate", "api", "worker"])
def test_every_compose_command_is_a_real_cli_command(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    check_cli_command(command_of(services[name]))


def test_every_variable_compose_sets_is_a_setting_or_a_postgres_image_variable(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name, service in compose["services"].items():
        allowed = SETTING_NAMES if name in services else POSTGRES_IMAGE_VARIABLES
        unknown = set(service_environment(service)) - allowed
        assert not unknown, f"{name} sets {sorted(unknown)}, which nothing reads"


def test_the_api_the_workers_and_the_migration_use_the_one_postgres_database(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    urls = {name: service_environment(s)["DATABASE_URL"] for name, s in services.items()}
    assert len(set(urls.values())) == 1, urls
    postgres = service_environment(compose["services"]["postgres"])
    url = urls["api"]
    expected = (
        f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    assert url == expected
    assert effective_settings(services["api"]).database_url.startswith("postgresql+psycopg://")


def test_the_api_and_workers_start_only_after_the_migration_succeeded(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
    migrate = services["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no", "a one-shot migration that restarts never completes"


def test_the_api_listens_on_all_interfaces_of_its_container_and_does_not_migrate(
    services: dict[str, dict[str, Any]],
) -> None:
    api = services["api"]
    settings = effective_settings(api)
    assert settings.host == "0.0.0.0"  # noqa: S104 - inside the container, on purpose
    assert settings.auto_migrate is False
    assert settings.worker_in_process is False
    published = [str(port).rsplit(":", 1)[-1] for port in api["ports"]]
    assert published == [str(settings.port)]
    assert "healthcheck" not in api, "the API keeps the image's health check"


def test_processes_without_an_http_server_turn_the_image_health_check_off(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("migrate", "worker"):
        assert services[name]["healthcheck"] == {"disable": True}, name


def test_no_secret_is_written_in_the_compose_file(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for service in services.values():
        assert service["env_file"] == ".env"
        assert not SECRET_SETTINGS & set(service_environment(service))
    password = service_environment(compose["services"]["postgres"])["POSTGRES_PASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD:?"), "the password comes from .env"
    assert ".env" in (REPO / ".gitignore").read_text().split()


# --- Dockerfile ------------------------------------------------------------------------------


def test_the_image_runs_the_cli_as_an_unprivileged_user_on_a_slim_base() -> None:
    stage = final_stage(dockerfile_instructions())
    assert stage[0].argument.split()[0].endswith("-slim")
    user = only(stage, "USER").argument
    assert user not in {"root", "0"}
    assert any(f" {user}" in i.argument for i in stage if i.keyword == "RUN"), "user not made"
    entrypoint = only(stage, "ENTRYPOINT").exec_form()
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["zoho-moodle-sync"]
    assert entrypoint[0] in scripts
    check_cli_command(only(stage, "CMD").exec_form())


def test_the_image_health_check_asks_the_health_route_on_the_port_the_api_uses() -> None:
    stage = final_stage(dockerfile_instructions())
    command = healthcheck_command(only(stage, "HEALTHCHECK"))
    asked = re.findall(r"http://127\.0\.0\.1:[^/]+(/[\w/.-]*)", " ".join(command))
    assert asked == ["/v1/health"]
    assert "get" in create_app().openapi()["paths"][asked[0]]
    env = dockerfile_env(stage)
    assert only(stage, "EXPOSE").argument == env["PORT"]
    assert "os.environ.get('PORT', '8000')" in command[-1]


def test_the_image_sets_only_real_settings() -> None:
    instructions = dockerfile_instructions()
    unknown = set(dockerfile_env(instructions)) - SETTING_NAMES - RUNTIME_VARIABLES
    assert not unknown
    assert not SECRET_SETTINGS & set(dockerfile_env(instructions))


def test_the_build_context_holds_what_the_image_copies_and_never_dot_env() -> None:
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") :].count("*") == 1, "everything is excluded, then re-included"
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert not {".env", "data", ".git"} & included
    for instruction in dockerfile_instructions():
        if instruction.keyword == "COPY" and not instruction.argument.startswith("--from"):
            *sources, _target = instruction.argument.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert source.rstrip("/") in included, f"{source} is not in the build context"


# --- systemd ---------------------------------------------------------------------------------


def unit_files() -> list[Path]:
    return sorted(UNITS.glob("*.service"))


def test_there_are_units_for_the_api_a_worker_template_and_the_migration() -> None:
    assert [path.name for path in unit_files()] == [
        "zoho-moodle-sync-api.service",
        "zoho-moodle-sync-migrate.service",
        "zoho-moodle-sync-worker@.service",
    ]


@pytest.mark.parametrize("path", unit_files(), ids=lambda path: path.name)
def test_every_unit_runs_a_real_cli_command_as_an_unprivileged_user(path: Path) -> None:
    service = systemd_unit(path)["Service"]
    (exec_start,) = service["ExecStart"]
    program, *args = exec_start.split()
    assert Path(program).name == "zoho-moodle-sync"
    assert Path(program).is_absolute()
    check_cli_command(args)
    assert service["User"] != ["root"]
    assert service["EnvironmentFile"] == ["/etc/zoho-moodle-sync/env"]
    for line in service.get("Environment", []):
        names = {pair.partition("=")[0] for pair in line.split()}
        assert names <= SETTING_NAMES, names


def test_the_api_and_workers_require_the_migration_and_start_after_it() -> None:
    migrate = systemd_unit(UNITS / "zoho-moodle-sync-migrate.service")
    assert migrate["Service"]["Type"] == ["oneshot"]
    assert migrate["Service"]["ExecStart"][0].endswith("zoho-moodle-sync db upgrade")
    for name in ("zoho-moodle-sync-api.service", "zoho-moodle-sync-worker@.service"):
        unit = systemd_unit(UNITS / name)["Unit"]
        assert "zoho-moodle-sync-migrate.service" in unit["Requires"][0].split(), name
        assert "zoho-moodle-sync-migrate.service" in unit["After"][0].split(), name
    api = systemd_unit(UNITS / "zoho-moodle-sync-api.service")["Service"]
    assert "AUTO_MIGRATE=false" in " ".join(api["Environment"]).split()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("path", unit_files(), ids=lambda path: path.name)
def test_systemd_accepts_every_unit(path: Path, tmp_path: Path) -> None:
    for unit in unit_files():  # side by side, so that their dependencies resolve
        (tmp_path / unit.name).write_text(unit.read_text())
    verify = subprocess.run(  # noqa: S603
        ["systemd-analyze", "verify", "--man=no", path.name.replace("@.", "@1.")],  # noqa: S607
        cwd=tmp_path,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # The program itself is not installed here; anything else systemd says is a mistake.
    problems = [
        line
        for line in (verify.stdout + verify.stderr).splitlines()
        if line.strip() and "is not executable" not in line
    ]
    assert not problems, problems
