"""What the service lets out: credentials in a query string are masked however they are spelled,
ids out of range are a 404 (never a 500), the embedded database is readable by its owner only,
the API reference can be turned off, and the OpenAPI document states every error answer and
the webhook bodies."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import AUTH, sync
from tests.factories import TeacherRecordFactory
from zoho_moodle_sync.api.access_log import redact_target
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings


@pytest.mark.parametrize(
    ("target", "masked"),
    [
        ("/v1/jobs?token=s3cret", "/v1/jobs?token=***"),
        ("/v1/jobs?%74oken=s3cret&state=dead", "/v1/jobs?%74oken=***&state=dead"),
        ("/v1/jobs?TOKEN=s3cret", "/v1/jobs?TOKEN=***"),
        ("/v1/jobs?x%5Fsecret=s3cret", "/v1/jobs?x%5Fsecret=***"),
        ("/v1/jobs?api+key=s3cret", "/v1/jobs?api+key=***"),
        ("/v1/jobs?state=dead&limit=5", "/v1/jobs?state=dead&limit=5"),
        ("/v1/health", "/v1/health"),
    ],
)
def test_a_credential_in_the_query_is_masked_however_its_name_is_spelled(
    target: str, masked: str
) -> None:
    assert redact_target(target) == masked


def test_a_percent_encoded_token_authenticates_and_is_stored_redacted(
    client: TestClient, db: Database
) -> None:
    from tests.conftest import TEST_SECRET
    from zoho_moodle_sync.db.models import InboundEvent

    del client.headers["Authorization"]
    answer = client.post(
        f"/v1/sync/teachers?%74oken={TEST_SECRET}", json={"data": [TeacherRecordFactory()]}
    )

    assert answer.status_code == 200, answer.text
    with db.sessions() as session:
        stored = session.get_one(InboundEvent, answer.json()["event_id"])
    assert stored.query == {"token": "***"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/v1/jobs/{2**63}/retry"),
        ("POST", f"/v1/jobs/{2**64 + 7}/retry"),
        ("POST", "/v1/jobs/0/retry"),
        ("GET", "/v1/records/teachers/12ab"),
        ("GET", f"/v1/records/teachers/{'9' * 40}"),
    ],
)
def test_ids_out_of_range_are_not_found(client: TestClient, method: str, path: str) -> None:
    answer = client.request(method, path)

    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == "not_found"
    assert "stored" not in answer.json()["error"]["message"]


def test_the_embedded_database_is_readable_by_its_owner_only(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "data" / "zms.db"
    embedded = settings.model_copy(
        update={"database_url": f"sqlite:///{path}", "auto_migrate": True}
    )

    with TestClient(create_app(embedded), headers=AUTH) as client:
        sync(client, "teachers", [TeacherRecordFactory()])
        files = [path, path.with_name("zms.db-wal"), path.with_name("zms.db-shm")]
        modes = {file.name: stat.S_IMODE(file.stat().st_mode) for file in files if file.exists()}

    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert modes["zms.db"] == 0o600
    assert modes.get("zms.db-wal", 0o600) == 0o600
    assert set(modes.values()) == {0o600}


def test_the_api_reference_can_be_turned_off(settings: Settings, db: Database) -> None:
    quiet = settings.model_copy(update={"api_docs": "off"})
    with TestClient(create_app(quiet, db)) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs-assets/swagger-ui.css"):
            assert client.get(path).status_code == 404, path
        assert client.get("/v1/health").status_code == 200


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_the_openapi_document_states_every_error_answer_and_the_webhook_bodies(
    client: TestClient,
) -> None:
    document = client.get("/openapi.json").json()
    ops = operations(document)

    error_schema = document["components"]["schemas"]["ErrorBody"]
    assert error_schema["required"] == ["error"]
    for (method, path), operation in ops.items():
        if path in ("/v1/health", "/v1/ready"):
            continue
        codes = set(operation["responses"])
        assert {"401", "403", "500", "503"} <= codes, (method, path, codes)
        for code in codes - {"200", "202"}:
            schema = operation["responses"][code]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)
    sync_codes = set(ops[("POST", "/v1/sync/{entity}")]["responses"])
    assert {"400", "404", "409", "413", "415", "422"} <= sync_codes
    workflow = ops[("POST", "/v1/webhooks/zoho/{module}")]
    body = workflow["requestBody"]["content"]
    assert {"application/json", "application/x-www-form-urlencoded"} <= set(body)
    assert [s["title"] for s in body["application/json"]["schema"]["oneOf"]] == [
        "Record id only",
        "Merge fields",
        "Full records",
    ]
    notification = ops[("POST", "/v1/webhooks/zoho/notifications")]["requestBody"]
    schema = notification["content"]["application/json"]["schema"]
    assert {"module", "ids", "operation", "channel_id"} <= set(schema["required"])
    assert "202" in workflow["responses"]
