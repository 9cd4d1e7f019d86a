"""Readers for the deployment files (Dockerfile, docker-compose.yml, systemd units) and a check
that a command line is one the `zoho-moodle-sync` CLI really accepts."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import SecretStr
from typer.testing import CliRunner

from zoho_moodle_sync import cli
from zoho_moodle_sync.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)
SECRET_SETTINGS = frozenset(
    name.upper() for name, field in Settings.model_fields.items() if field.annotation is SecretStr
)


def check_cli_command(args: list[str]) -> Any:
    """The CLI command `args` names, after asserting that its arguments and options parse (as the
    real CLI would parse them, without running it) and that its `--help` works."""
    assert args, "an empty command"
    command: Any = typer.main.get_command(cli.app)
    context = command.make_context("zoho-moodle-sync", [], resilient_parsing=True)
    rest = list(args)
    path: list[str] = []
    while hasattr(command, "get_command"):  # a group of commands
        assert rest, f"`zoho-moodle-sync {' '.join(path)}` is a group of commands, not a command"
        name, *rest = rest
        subcommand = command.get_command(context, name)
        assert subcommand is not None, f"`zoho-moodle-sync {' '.join([*path, name])}` is no command"
        path.append(name)
        context = subcommand.make_context(name, [], parent=context, resilient_parsing=True)
        command = subcommand
    try:
        command.make_context(path[-1], list(rest), parent=context.parent)
    except Exception as error:  # the CLI's usage error, e.g. an unknown option or a bad value
        message = getattr(error, "format_message", error.__str__)()
        raise AssertionError(f"`zoho-moodle-sync {' '.join(args)}`: {message}") from error
    result = CliRunner().invoke(cli.app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    return command


# --- Dockerfile ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str

    def exec_form(self) -> list[str]:
        """A JSON array argument (`CMD ["a", "b"]`), as a list."""
        value = json.loads(self.argument)
        assert isinstance(value, list), self.argument
        return [str(item) for item in value]


def dockerfile_instructions(path: Path = REPO / "Dockerfile") -> list[Instruction]:
    """The instructions in order, continuation lines joined and comments left out."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    instructions = []
    for text in logical:
        keyword, _, argument = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), argument.strip()))
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions of the last stage (the image that runs)."""
    starts = [i for i, instruction in enumerate(instructions) if instruction.keyword == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return instructions[starts[-1] :]


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    """`ENV NAME=value ...` of the given instructions, later ones winning."""
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.argument):
                name, sep, value = pair.partition("=")
                assert sep, f"ENV {pair}: use the NAME=value form"
                env[name] = value
    return env


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [instruction for instruction in instructions if instruction.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {len(found)}"
    return found[0]


def healthcheck_command(instruction: Instruction) -> list[str]:
    """The command of `HEALTHCHECK [options] CMD [...]`."""
    options, sep, command = instruction.argument.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {instruction.argument}"
    assert all(option.startswith("--") for option in options.split()), options
    return Instruction("CMD", command.strip()).exec_form()


# --- docker-compose.yml ----------------------------------------------------------------------


def compose_file(path: Path = REPO / "docker-compose.yml") -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.partition("=")[::2] for item in raw)
    return {str(name): str(value) for name, value in raw.items()}


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run this project's image (the others are PostgreSQL and the like)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if "build" in service or str(service.get("image", "")).startswith("zoho-moodle-sync")
    }


# --- systemd units ---------------------------------------------------------------------------

_SECTION = re.compile(r"^\[(?P<name>[A-Za-z]+)\]$")


def systemd_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Section → key → values (systemd allows a key more than once)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        header = _SECTION.match(stripped)
        if header:
            current = sections.setdefault(header["name"], {})
            continue
        key, sep, value = stripped.partition("=")
        assert sep, f"{path.name}:{number}: not a key=value line"
        assert current is not None, f"{path.name}:{number}: a setting before any [Section]"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections
