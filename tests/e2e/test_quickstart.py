"""The README's "Try it": the real server, started as an operator starts it, driven over HTTP.

`zoho-moodle-sync serve` runs as a subprocess on a free port, on a new SQLite file (which it creates
and migrates itself) and on the PostgreSQL test database. The sample college of `docs/examples/`
is sent enrolments first; the enrolments must be stored once their students and classes arrive,
without being sent again.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_SECRET
from tests.e2e.servers import console_script, free_port, wait_until_healthy
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
README_ENROLLMENT = "5725767141565000085"


@pytest.fixture
def server_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """A SQLite file that does not exist yet (the server creates and migrates it, as in the quick
    start), or the emptied PostgreSQL test database, migrated already as `db upgrade` leaves it."""
    if backend == "sqlite":
        return {
            "DATABASE_URL": f"sqlite:///{tmp_path}/data/zoho_moodle_sync.db",
            "AUTO_MIGRATE": "true",
        }
    db: Database = request.getfixturevalue("db")
    return {"DATABASE_URL": db.url, "AUTO_MIGRATE": "false", "WEBHOOK_SECRET": TEST_SECRET}


@pytest.fixture
def server(server_database: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The base URL of a running `zoho-moodle-sync serve`; the process is always stopped."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env |= server_database | {"HOST": "127.0.0.1", "PORT": str(port), "LOG_LEVEL": "INFO"}
    stderr_path = tmp_path / "server.stderr"
    base_url = f"http://127.0.0.1:{port}"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(  # noqa: S603
            [console_script(), "serve"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_until_healthy(process, base_url, stderr_path)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


def load_example(entity: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads((EXAMPLES / f"{entity}.json").read_text())["data"]
    return records


def send_example(http: httpx.Client, entity: str) -> Any:
    response = http.post(
        f"/v1/sync/{entity}",
        content=(EXAMPLES / f"{entity}.json").read_bytes(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_enrollments_sent_first_are_stored_once_their_students_and_classes_arrive(
    server: str, backend: str, tmp_path: Path
) -> None:
    enrollments = {record["id"]: record for record in load_example("enrollments")}
    ends_before_start = {i for i, r in enrollments.items() if r["End_Date"] < r["Start_Date"]}
    # The embedded install writes its first secret next to the database, as the README says.
    secret_file = tmp_path / "data" / "webhook-secret"
    secret = secret_file.read_text().strip() if backend == "sqlite" else TEST_SECRET
    auth = {"Authorization": f"Bearer {secret}"}

    with httpx.Client(base_url=server, timeout=30) as http:
        refused = http.post("/v1/sync/students", json={"data": []})
        http.headers.update(auth)
        health = http.get("/v1/health").json()
        early = send_example(http, "enrollments")
        later = {e: send_example(http, e) for e in ("programs", "teachers", "units", "students")}
        classes = send_example(http, "classes")
        readme_record = http.get(f"/v1/records/enrollments/{README_ENROLLMENT}")
        docs = http.get("/docs")
        openapi = http.get("/openapi.json")

    assert refused.status_code == 401
    if backend == "sqlite":
        assert secret_file.stat().st_mode & 0o077 == 0
    assert health["status"] == "ok"
    assert health["database"] == backend
    assert health["schema_current"] is True
    skipped = {r["zoho_id"] for r in early["results"] if r["outcome"] == "SKIPPED"}
    assert skipped == set(enrollments)
    assert README_ENROLLMENT in skipped
    refused_students = {
        r["zoho_id"] for r in later["students"]["results"] if r["outcome"] == "INVALID"
    }
    # An enrolment of a student refused for having no e-mail waits for its correction.
    waiting = {
        i for i, r in enrollments.items() if r["Enrolled_Students"]["id"] in refused_students
    }
    assert waiting
    assert {r["reason"] for r in early["results"] if r["outcome"] == "SKIPPED"} == {
        "student_not_synced_yet"
    }
    assert all(answer["released"] == [] for answer in later.values())
    assert {(r["entity"], r["outcome"]) for r in classes["released"]} == {("enrollments", "NEW")}
    assert {r["zoho_id"] for r in classes["released"]} == skipped - waiting
    # Dates that contradict each other are a warning on a stored record, not a refusal.
    warned = {
        r["zoho_id"]
        for r in classes["released"]
        if [w["code"] for w in r.get("warnings", [])] == ["end_before_start"]
    }
    assert warned == ends_before_start - waiting
    assert warned
    assert readme_record.status_code == 200, readme_record.text
    assert readme_record.json()["state"] == "stored"
    assert [h["outcome"] for h in readme_record.json()["history"]] == ["NEW", "SKIPPED"]
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/v1/sync/{entity}" in openapi.json()["paths"]
