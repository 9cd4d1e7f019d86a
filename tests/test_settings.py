"""Settings: every one is documented in .env.example, and bad values fail early and clearly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from zoho_moodle_sync.settings import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"


def _documented() -> dict[str, str]:
    """NAME -> the comment block above `NAME=...` in .env.example (settings listed right after
    one another share the block)."""
    documented: dict[str, str] = {}
    comment: list[str] = []
    block = ""
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            comment.append(line.lstrip("# "))
        elif match := re.match(r"^([A-Z_]+)=", line):
            block = " ".join(comment) if comment else block
            documented[match.group(1)] = block
            comment = []
        else:
            comment, block = [], ""
    return documented


def test_every_setting_is_in_env_example_with_a_comment() -> None:
    documented = _documented()
    names = {name.upper() for name in Settings.model_fields}
    assert names <= documented.keys(), f"missing from .env.example: {names - documented.keys()}"
    assert documented.keys() <= names, f"unknown in .env.example: {documented.keys() - names}"
    assert all(documented[name].strip() for name in names)


def test_env_example_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if match := re.match(r"^([A-Z_]+)=(.*)$", line):
            monkeypatch.setenv(match.group(1), match.group(2))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url == "sqlite:///./data/zoho_moodle_sync.db"
    assert settings.is_sqlite


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_database_url_forms(url: str, expected: str) -> None:
    assert Settings(database_url=url, _env_file=None).database_url == expected  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("database_url", "mysql://x"),
        ("port", 0),
        ("default_tenant", "Bad Slug"),
        ("log_level", "x"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as error:
        Settings(**{field: value}, _env_file=None)  # type: ignore[arg-type]
    assert field in str(error.value)
