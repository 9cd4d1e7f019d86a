"""The documentation says what the code does: every setting is documented with its real default,
every `curl` to the service sends a credential, and the health example is the real answer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.deploy.deployment import REPO, SETTING_NAMES
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.db import migrate
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings

DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
# Where the examples reach the service (not Zoho's or Moodle's APIs, which have their own tokens).
SERVICE_URL = re.compile(r"localhost:8000|127\.0\.0\.1:8000|\$SYNC\b|sync\.example\.edu")
CREDENTIAL = re.compile(r"""-H ["']Authorization: Bearer \$\{?[A-Z_]+\}?["']""")
_ROW = re.compile(
    r"^\| `(?P<name>[A-Z][A-Z0-9_]*)` \| (?P<default>[^|]+) \| (?P<meaning>[^|]+) \|$"
)


def env_example_names() -> list[str]:
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    return re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE)


def documented_settings() -> dict[str, tuple[str, str]]:
    """Variable → (default, meaning) from the settings table of docs/configuration.md."""
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        row = _ROW.match(line.strip())
        if row:
            assert row["name"] not in rows, f"{row['name']} is documented twice"
            rows[row["name"]] = (row["default"].strip(), row["meaning"].strip())
    assert rows, "no settings table found in docs/configuration.md"
    return rows


def as_documented(default: Any) -> str:
    """A setting's default as the table writes it."""
    if isinstance(default, SecretStr):
        default = default.get_secret_value()
    if default is None or default == "":
        return "empty"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    return f"`{default}`"


def test_env_example_holds_every_setting_and_nothing_else() -> None:
    names = env_example_names()

    assert len(names) == len(set(names)), "a variable is listed twice in .env.example"
    assert set(names) == SETTING_NAMES


def test_configuration_md_documents_every_setting_with_its_real_default() -> None:
    documented = documented_settings()

    assert set(documented) == SETTING_NAMES | set(env_example_names())
    for name, field in Settings.model_fields.items():
        default, meaning = documented[name.upper()]
        assert default == as_documented(field.default), name
        assert len(meaning) > 10, name


def shell_commands(path: Path) -> list[str]:
    """Commands in the page's code blocks (continuation lines joined) and in inline code."""
    text = path.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        commands += re.sub(r"\\\n\s*", " ", block).splitlines()
    commands += re.findall(r"`(curl [^`]+)`", text)
    return commands


def test_every_curl_example_to_the_service_sends_a_credential() -> None:
    checked = 0
    for path in DOCS:
        for command in shell_commands(path):
            if "curl " not in command or not SERVICE_URL.search(command):
                continue
            if "/v1/health" in command:
                continue  # the one route that needs none
            assert CREDENTIAL.search(command), f"{path.name}: {command.strip()}"
            checked += 1
    assert checked >= 10, "the examples were not found: has the pattern gone stale?"


def json_block_after(path: Path, heading: str) -> list[Any]:
    section = path.read_text(encoding="utf-8").split(heading, 1)[1].split("\n## ", 1)[0]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.DOTALL)]


@pytest.fixture
def health_client(tmp_path: Path) -> TestClient:
    """The app on a migrated SQLite file, without its lifespan (the route needs only the db)."""
    url = f"sqlite:///{tmp_path}/health.db"
    app = create_app(Settings(database_url=url, _env_file=None))
    app.state.db = Database(url)
    migrate.upgrade(app.state.db.engine)
    return TestClient(app)


def test_api_md_shows_the_health_answers_the_route_gives(
    health_client: TestClient, tmp_path: Path
) -> None:
    ok_example, unavailable_example = json_block_after(REPO / "docs" / "api.md", "`GET /v1/health`")

    ok = health_client.get("/v1/health")
    app: Any = health_client.app
    app.state.db = Database(f"sqlite:///{tmp_path}/no-such-folder/health.db")
    unavailable = health_client.get("/v1/health")

    assert ok.status_code == 200
    assert list(ok_example) == list(ok.json())
    assert {k: type(v) for k, v in ok_example.items()} == {k: type(v) for k, v in ok.json().items()}
    assert (ok_example["status"], ok_example["schema_current"]) == ("ok", True)
    assert unavailable.status_code == 503
    assert unavailable_example == {**unavailable.json(), "version": unavailable_example["version"]}


def test_readme_links_every_page_of_the_documentation() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for page in (REPO / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in readme, page.name
