"""What to correct in Zoho: `GET /v1/warnings`, the counts in `/v1/status` and `/metrics`, and
`zoho-moodle-sync records warnings`, for records stored with warnings."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from tests.conftest import sync, tenant_with_secret
from tests.factories import ClassRecordFactory, Record, StudentRecordFactory
from zoho_moodle_sync.cli import app


def inverted_class(**fields: Any) -> Record:
    return ClassRecordFactory(
        Start_Date="2025-09-29",
        End_Date="2025-09-26",
        BTEC_Program=None,
        Teacher=None,
        Unit=None,
        **fields,
    )


def listed(client: TestClient, query: str = "", **kwargs: Any) -> list[dict[str, Any]]:
    response = client.get(f"/v1/warnings{query}", **kwargs)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["warnings"]
    return found


def test_records_with_warnings_are_listed_with_what_to_correct_and_since_when(
    client: TestClient,
) -> None:
    klass = inverted_class(Class_Name="Networking - T1 2025")
    student = StudentRecordFactory(Birth_Date="31/12/2001", Program=None)
    fine = StudentRecordFactory(Program=None)
    sync(client, "classes", [klass])
    answer = sync(client, "students", [student, fine])

    everything = listed(client)
    students = listed(client, "?entity=students")

    assert [(w["entity"], w["zoho_id"], w["field"], w["code"]) for w in everything] == [
        ("students", student["id"], "Birth_Date", "invalid_value"),
        ("classes", klass["id"], "End_Date", "end_before_start"),
    ]
    assert everything[1]["name"] == "Networking - T1 2025"
    assert (
        everything[0]["name"]
        == f"{student['Name']} {student['First_Name']} " + (student["Last_Name"])
    )
    assert everything[0]["message"] == (
        "expected a date as YYYY-MM-DD, got '31/12/2001'; the value is left out until it is "
        "corrected in Zoho"
    )
    assert everything[0]["since"] == answer["results"][0]["warnings"][0]["since"]
    assert students == everything[:1]
    assert listed(client, "?entity=grades") == []


def test_a_deleted_record_leaves_the_list(client: TestClient) -> None:
    klass = inverted_class()
    sync(client, "classes", [klass])
    assert len(listed(client)) == 1

    assert client.delete(f"/v1/sync/classes/{klass['id']}").status_code == 200

    assert listed(client) == []


def test_the_list_is_the_callers_tenants_and_refuses_unknown_entities(
    client: TestClient,
) -> None:
    sync(client, "classes", [inverted_class()])
    other = tenant_with_secret(client.app.state.db, "other-college")  # type: ignore[attr-defined]

    unknown = client.get("/v1/warnings?entity=sections")
    anonymous = client.get("/v1/warnings", headers={"Authorization": ""})

    assert listed(client, headers=other) == []
    assert unknown.status_code == 422
    assert unknown.json()["error"]["details"] == [{"field": "entity", "message": "unknown"}]
    assert anonymous.status_code == 401


def test_status_and_metrics_count_the_records_with_warnings(client: TestClient) -> None:
    sync(client, "classes", [inverted_class(), inverted_class()])
    sync(client, "students", [StudentRecordFactory(Birth_Date="soon", Program=None)])

    status = client.get("/v1/status").json()
    samples = scrape(client)

    assert status["warnings"] == [
        {
            "tenant": "default",
            "entity": "classes",
            "records": 2,
            "codes": {"end_before_start": 2},
        },
        {"tenant": "default", "entity": "students", "records": 1, "codes": {"invalid_value": 1}},
    ]
    warnings = {k: v for k, v in samples.items() if k[0] == "zms_record_warnings"}
    assert warnings == {
        ("zms_record_warnings", ("end_before_start", "classes", "default")): 2,
        ("zms_record_warnings", ("invalid_value", "students", "default")): 1,
    }


def scrape(client: TestClient) -> dict[tuple[str, tuple[str, ...]], float]:
    """`/metrics` read as Prometheus reads it: (sample name, label values in the order of their
    names: code, entity, tenant, ...) → value."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(v for _, v in sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_the_cli_lists_the_warnings_of_a_tenant(client: TestClient, database_url: str) -> None:
    klass = inverted_class(Class_Name="Cyber Security - T2")
    runner = CliRunner()
    url = ["--database-url", database_url]

    empty = runner.invoke(app, ["records", "warnings", *url])
    sync(client, "classes", [klass])
    found = runner.invoke(app, ["records", "warnings", "--entity", "classes", *url])
    none_here = runner.invoke(app, ["records", "warnings", "--entity", "students", *url])
    unknown = runner.invoke(app, ["records", "warnings", "--entity", "sections", *url])

    assert (empty.exit_code, empty.stdout) == (0, "no record has a warning\n")
    assert found.exit_code == 0, found.output
    [line] = found.stdout.splitlines()
    entity, zoho_id, name, field, message, since = line.split("\t")
    assert (entity, zoho_id, name, field) == (
        "classes",
        klass["id"],
        "Cyber Security - T2",
        "End_Date",
    )
    assert message.startswith("End_Date 2025-09-26 is before Start_Date 2025-09-29")
    assert since.startswith("since 20")
    assert none_here.stdout == "no record has a warning\n"
    assert unknown.exit_code == 1
    assert "unknown entity 'sections'" in unknown.output
