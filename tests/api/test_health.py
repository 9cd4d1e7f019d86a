"""`/v1/health` answers from a schema revision read at start and now and then, never from the
migration scripts per call; `/v1/ready` reads the revision now and says whether it is current."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.db import migrate
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every reading of the database's schema revision, and every reading of the scripts."""
    seen: list[str] = []
    current, scripts = migrate.current_revision, migrate.ScriptDirectory.from_config

    def counted_current(engine: Any) -> str | None:
        seen.append("database")
        return current(engine)

    def counted_scripts(config: Any) -> Any:
        seen.append("scripts")
        return scripts(config)

    monkeypatch.setattr(migrate, "current_revision", counted_current)
    monkeypatch.setattr(migrate.ScriptDirectory, "from_config", counted_scripts)
    migrate.head_revision.cache_clear()
    return seen


def test_health_reads_the_schema_revision_once_not_per_call(
    settings: Settings, db: Database, reads: list[str]
) -> None:
    with TestClient(create_app(settings, db)) as client:
        at_start = list(reads)
        answers = [client.get("/v1/health") for _ in range(5)]

    assert at_start == ["database"]
    assert [a.status_code for a in answers] == [200] * 5
    assert {a.json()["schema_current"] for a in answers} == {True}
    assert reads == ["database", "scripts"]


def test_health_reads_the_revision_again_once_it_is_old(
    settings: Settings, db: Database, reads: list[str]
) -> None:
    app = create_app(settings, db)
    with TestClient(app) as client:
        app.state.schema_check.refresh_seconds = 0
        client.get("/v1/health")

    assert reads.count("database") == 2


def test_ready_reads_the_revision_now_and_is_503_while_the_schema_is_behind(
    settings: Settings, db: Database, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(settings, db)) as client:
        ready = client.get("/v1/ready")
        monkeypatch.setattr(migrate, "head_revision", lambda: "9999")  # the code moved on
        behind = client.get("/v1/ready")
        healthy = client.get("/v1/health")

    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"
    assert reads.count("database") == 3
    assert behind.status_code == 503
    assert behind.json()["status"] == "schema_behind"
    assert behind.json()["schema_current"] is False
    assert healthy.status_code == 200
    assert healthy.json()["schema_current"] is False
