"""The `zoho-moodle-sync` command line on real databases (a fresh SQLite file, and PostgreSQL).

Commands run through typer's CliRunner; where the point is what an operator reads when something
is wrong, they run through `main()`, the console script's entry point, which turns the service's
errors into one `error: ...` line and exit status 1.
"""

from __future__ import annotations

import json
import runpy
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from tests.conftest import sync, tenant_with_secret
from tests.factories import (
    ClassRecordFactory,
    EnrollmentRecordFactory,
    ProgramRecordFactory,
    Record,
    StudentRecordFactory,
    TeacherRecordFactory,
    UnitRecordFactory,
)
from zoho_moodle_sync import parser, service, stages, tenants
from zoho_moodle_sync.cli import app, main
from zoho_moodle_sync.db import migrate
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITY_BY_KEY
from zoho_moodle_sync.jobs.operator import JOB_STATES
from zoho_moodle_sync.mapper import map_record
from zoho_moodle_sync.settings import Settings, get_settings

HEAD = migrate.head_revision()


@pytest.fixture(autouse=True)
def settings_from_nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No setting leaks in from the environment or a `.env` file; get_settings() reads afresh."""
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def errors(stderr: str) -> str:
    """What a command printed on stderr, less the line naming its database."""
    return "".join(
        line for line in stderr.splitlines(keepends=True) if not line.startswith("database: ")
    )


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def cli_ok(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.stdout


@dataclass(frozen=True)
class Exited:
    code: int
    out: str
    err: str


@pytest.fixture
def console(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Exited]:
    """Run `zoho-moodle-sync ARGS...` in this process, as the console script does."""

    def run(*args: str) -> Exited:
        monkeypatch.setattr(sys, "argv", ["zoho-moodle-sync", *args])
        monkeypatch.setattr(sys, "excepthook", sys.excepthook)
        with pytest.raises(SystemExit) as exited:
            main()
        captured = capsys.readouterr()
        code = exited.value.code
        return Exited(code if isinstance(code, int) else 1, captured.out, errors(captured.err))

    return run


@pytest.fixture
def fresh_database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """A database with no schema at all: a new SQLite file, or the PostgreSQL test database taken
    down to `base` (and brought back to head afterwards for the tests that follow)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/not-yet/zoho_moodle_sync.db"
        return
    db: Database = request.getfixturevalue("db")
    migrate.downgrade(db.engine, "base")
    try:
        yield db.url
    finally:
        migrate.upgrade(db.engine)


def test_db_upgrade_current_and_downgrade(fresh_database_url: str) -> None:
    url = ("--database-url", fresh_database_url)
    sqlite_file = Settings(database_url=fresh_database_url, _env_file=None).sqlite_path()

    if sqlite_file is None:
        assert cli_ok("db", "current", *url) == f"current: None  head: {HEAD}\n"
    else:  # no file yet: only `db upgrade` makes one
        missing = cli("db", "current", *url)
        assert missing.exit_code == 1
        assert f"error: no database at {sqlite_file}." in errors(missing.stderr)
        assert not sqlite_file.exists()
    assert cli_ok("db", "upgrade", *url) == f"database at revision {HEAD}\n"
    assert cli_ok("db", "current", *url) == f"current: {HEAD}  head: {HEAD}\n"
    assert cli_ok("tenant", "list", *url) == "default\tactive\tdefault\n"
    assert cli_ok("db", "downgrade", "base", *url) == "database at revision None\n"
    assert cli_ok("db", "current", *url) == f"current: None  head: {HEAD}\n"
    assert cli_ok("db", "upgrade", *url) == f"database at revision {HEAD}\n"
    assert cli_ok("tenant", "list", *url) == "default\tactive\tdefault\n"


def test_tenants_are_created_listed_and_shown(
    db: Database, database_url: str, console: Callable[..., Exited]
) -> None:
    url = ("--database-url", database_url)
    cli_ok("db", "upgrade", *url)

    created = cli_ok("tenant", "create", "north", "--name", "North Campus — Şişli", *url)
    listed = cli_ok("tenant", "list", *url)
    shown = json.loads(cli_ok("tenant", "show", "north", *url))
    missing = cli("tenant", "show", "ghost", *url)
    again = console("tenant", "create", "north", *url)
    bad_slug = console("tenant", "create", "North Campus", *url)

    assert created.startswith("created tenant north (id ")
    assert listed.splitlines() == [
        "default\tactive\tdefault",
        "north\tactive\tNorth Campus — Şişli",
    ]
    assert shown["slug"] == "north"
    assert shown["name"] == "North Campus — Şişli"
    assert shown["disabled_at"] is None
    assert shown["mapping"] == {}
    assert missing.exit_code == 1
    assert errors(missing.stderr) == "error: no tenant 'ghost'\n"
    assert again == Exited(1, "", "error: tenant 'north' exists already\n")
    assert bad_slug.code == 1
    assert bad_slug.err.startswith("error: a tenant slug is 1-63 lower-case letters")
    assert cli_ok("tenant", "list", *url).count("\n") == 2


MAPPING = {
    "entities": {
        "students": {
            "fields": {"student_number": "Student_No"},
            "status_values": {"Aktif": "Active"},
        }
    }
}


def test_a_mapping_set_from_a_json_file_changes_how_the_tenant_reads_records(
    client: TestClient, db: Database, database_url: str, tmp_path: Path
) -> None:
    url = ("--database-url", database_url)
    cli_ok("tenant", "create", "north", *url)
    mapping_file = tmp_path / "north-mapping.json"
    mapping_file.write_text(json.dumps(MAPPING), encoding="utf-8")

    updated = cli_ok("tenant", "set-mapping", "north", str(mapping_file), *url)
    shown = json.loads(cli_ok("tenant", "show", "north", *url))
    student = StudentRecordFactory(Status="Aktif")
    student["Student_No"] = student.pop("Name")
    north = tenant_with_secret(db, "north")
    in_north = sync(client, "students", [student], headers=north)
    in_default = sync(client, "students", [student])

    assert updated == "mapping of north updated\n"
    assert shown["mapping"] == MAPPING
    assert in_north["results"][0]["outcome"] == "NEW"
    view = client.get(f"/v1/records/students/{student['id']}", headers=north)
    assert view.json()["stored"]["data"]["student_number"] == student["Student_No"]
    assert view.json()["stored"]["data"]["status"] == "Active"
    assert in_default["results"][0]["errors"] == [
        {"field": "Name", "message": "required, but missing"}
    ]


INVALID_MAPPINGS = {
    "unknown-field": (
        json.dumps({"entities": {"students": {"fields": {"nope": "X"}}}}),
        "error: invalid field mapping: students: unknown fields ['nope']; known: student_number, ",
    ),
    "unknown-entity": (
        json.dumps({"entities": {"contacts": {"module": "Contacts"}}}),
        "error: invalid field mapping: unknown entity 'contacts'; known: programs, ",
    ),
    "same-module": (
        json.dumps({"entities": {"students": {"module": "BTEC_Teachers"}}}),
        "error: invalid field mapping: two entities are mapped to the same Zoho module\n",
    ),
    "no-status-field": (
        json.dumps({"entities": {"teachers": {"status_values": {"A": "B"}}}}),
        "error: invalid field mapping: teachers: has no status field to translate\n",
    ),
    "unknown-key": (
        json.dumps({"entities": {"students": {"modul": "Contacts"}}}),
        "error: invalid field mapping: entities.students.modul: not a key this document has\n",
    ),
    "array": ("[1, 2]", "error: invalid field mapping: Input should be a valid dictionary"),
    "not-json": ("{not json", "error: cannot read "),
}


def test_an_invalid_mapping_is_refused_with_a_clear_error_and_changes_nothing(
    db: Database, database_url: str, tmp_path: Path, console: Callable[..., Exited]
) -> None:
    url = ("--database-url", database_url)
    cli_ok("db", "upgrade", *url)
    mapping_file = tmp_path / "mapping.json"

    for case, (content, message) in INVALID_MAPPINGS.items():
        mapping_file.write_text(content, encoding="utf-8")

        refused = console("tenant", "set-mapping", "default", str(mapping_file), *url)

        assert refused.code == 1, case
        assert refused.err.startswith(message), (case, refused.err)
        assert "pydantic" not in refused.err, case
        assert "validation error for" not in refused.err, case
        assert refused.out == "", case
    mapping_file.write_text(json.dumps(MAPPING), encoding="utf-8")
    no_file = cli("tenant", "set-mapping", "default", str(tmp_path / "nowhere.json"), *url)
    no_tenant = cli("tenant", "set-mapping", "ghost", str(mapping_file), *url)

    assert no_file.exit_code == 1
    assert errors(no_file.stderr).startswith(f"error: cannot read {tmp_path / 'nowhere.json'}: ")
    assert no_tenant.exit_code == 1
    assert errors(no_tenant.stderr) == "error: no tenant 'ghost'\n"
    assert json.loads(cli_ok("tenant", "show", "default", *url))["mapping"] == {}


def event_lines(*args: str) -> list[list[str]]:
    return [line.split("\t") for line in cli_ok("events", "list", *args).splitlines()]


def test_stored_requests_are_listed_newest_first_and_shown_by_id(
    client: TestClient, database_url: str
) -> None:
    url = ("--database-url", database_url)
    students: list[Record] = [StudentRecordFactory(First_Name="Şükrü"), StudentRecordFactory()]
    processed = sync(client, "students", students)["event_id"]
    broken = b'{"data": ['
    rejected = client.post(
        "/v1/sync/students", content=broken, headers={"Content-Type": "application/json"}
    ).json()["error"]["event_id"]

    everything = event_lines(*url)
    only_rejected = event_lines("--status", "rejected", *url)
    newest = event_lines("--limit", "1", *url)
    shown = json.loads(cli_ok("events", "show", str(processed), "--body", *url))
    without_body = json.loads(cli_ok("events", "show", str(rejected), *url))

    assert [(line[0], line[2], line[3], line[4]) for line in everything] == [
        (str(rejected), "rejected", "400", "POST /v1/sync/students"),
        (str(processed), "processed", "200", "POST /v1/sync/students"),
    ]
    assert everything[0][5] == f"{len(broken)} bytes"
    assert [line[0] for line in only_rejected] == [str(rejected)]
    assert [line[0] for line in newest] == [str(rejected)]
    assert shown["id"] == processed
    assert shown["status"] == "processed"
    assert shown["entity"] == "students"
    assert shown["summary"]["NEW"] == 2
    assert json.loads(shown["body"]) == {"data": students}
    assert "body" not in without_body
    assert without_body["error"].startswith("Body is not valid JSON: ")
    unknown = cli("events", "show", "999999", *url)
    assert unknown.exit_code == 1
    assert errors(unknown.stderr) == "error: no inbound event 999999\n"


def test_replaying_a_stored_request_finds_every_record_unchanged(
    client: TestClient, database_url: str, console: Callable[..., Exited]
) -> None:
    url = ("--database-url", database_url)
    teachers = TeacherRecordFactory.build_batch(2)
    original = sync(client, "teachers", teachers)["event_id"]
    unknown_entity = client.post("/v1/sync/contacts", json={"data": []}).json()["error"]
    too_large = client.post("/v1/sync/teachers", json={"data": [{"pad": "x" * 3_000_000}]}).json()[
        "error"
    ]

    replayed = json.loads(cli_ok("events", "replay", str(original), *url))
    copy = json.loads(cli_ok("events", "show", str(replayed["event_id"]), *url))
    of_unknown = console("events", "replay", str(unknown_entity["event_id"]), *url)
    of_too_large = console("events", "replay", str(too_large["event_id"]), *url)
    of_nothing = console("events", "replay", "999999", *url)

    assert replayed["event_id"] > original
    assert replayed["summary"]["total"] == 2
    assert replayed["summary"]["UNCHANGED"] == 2
    assert replayed["released"] == 0
    assert (copy["source"], copy["replay_of"], copy["status"]) == ("replay", original, "processed")
    assert of_unknown == Exited(
        1, "", f"error: inbound event {unknown_entity['event_id']} names no entity to replay\n"
    )
    assert of_too_large == Exited(
        1,
        "",
        f"error: inbound event {too_large['event_id']} was over the size limit; its body is cut\n",
    )
    assert of_nothing == Exited(1, "", "error: no inbound event 999999\n")


def store_without_releasing(db: Database, entity: str, record: dict[str, Any]) -> None:
    """Store a record the way a concurrent transaction does: without seeing the parked records
    that wait for it, so only a sweep can release them."""
    spec = ENTITY_BY_KEY[entity]
    with db.sessions.begin() as session:
        tenant = tenants.get_by_slug(session, "default")
        assert tenant is not None
        context = tenants.context_of(tenant)
        mapping = context.mapping.for_entity(spec)
        parsed = parser.parse_record(record)
        assert isinstance(parsed, stages.ZohoRecord)
        service.apply_batch(
            session=session,
            tenant_id=context.id,
            mapping=mapping,
            items=[(0, map_record(mapping, parsed))],
            event_id=None,
        )


def test_parked_records_are_listed_and_a_sweep_releases_those_now_ready(
    client: TestClient, db: Database, database_url: str
) -> None:
    url = ("--database-url", database_url)
    program = ProgramRecordFactory()
    unit = UnitRecordFactory(program=program)
    student, klass = StudentRecordFactory(), ClassRecordFactory()
    enrollment = EnrollmentRecordFactory(student=student, class_=klass)
    sync(client, "enrollments", [enrollment])
    sync(client, "units", [unit])

    listed = [line.split("\t") for line in cli_ok("parked", "list", *url).splitlines()]
    only_units = cli_ok("parked", "list", "--entity", "units", *url).splitlines()
    nothing_ready = cli_ok("parked", "sweep", *url)
    store_without_releasing(db, "programs", program)
    swept = cli_ok("parked", "sweep", *url)

    assert [(line[0], line[1], line[3]) for line in listed] == [
        (
            "enrollments",
            enrollment["id"],
            f"students:{student['id']}, classes:{klass['id']}",
        ),
        ("units", unit["id"], f"programs:{program['id']}"),
    ]
    assert [line.split("\t")[1] for line in only_units] == [unit["id"]]
    assert nothing_ready == "released 0 record(s)\n"
    assert swept == "released 1 record(s)\n"
    assert client.get(f"/v1/records/units/{unit['id']}").json()["state"] == "stored"
    assert cli_ok("parked", "list", "--entity", "units", *url) == "no parked records of units\n"
    assert cli_ok("parked", "list", "--entity", "enrollments", *url).startswith("enrollments\t")


def test_the_cli_runs_as_a_python_module(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["zoho_moodle_sync.cli", "--help"])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)

    with pytest.raises(SystemExit) as exited:
        runpy.run_module("zoho_moodle_sync.cli", run_name="__main__")

    assert exited.value.code == 0
    assert "Usage:" in capsys.readouterr().out


def test_an_invalid_database_url_is_a_clear_error(console: Callable[..., Exited]) -> None:
    refused = console("db", "current", "--database-url", "mysql://zms@localhost/zms")

    assert refused.code == 1
    assert refused.err.startswith("error: ")
    assert "DATABASE_URL must be a sqlite:/// or postgresql:// URL" in refused.err


def test_a_database_without_schema_is_a_clear_error(
    console: Callable[..., Exited], tmp_path: Path
) -> None:
    refused = console("tenant", "list", "--database-url", f"sqlite:///{tmp_path}/empty.db")

    assert refused.code == 1
    assert refused.err.startswith("error: ")
    assert "db upgrade" in refused.err


# ---- what an operator reads: empty lists, unknown values, which database ----


def test_every_command_names_the_database_it_uses_on_stderr(
    db: Database, database_url: str
) -> None:
    listed = cli("tenant", "list", "--database-url", database_url)

    assert listed.exit_code == 0
    [line] = [line for line in listed.stderr.splitlines() if line.startswith("database: ")]
    if database_url.startswith("sqlite"):
        assert line == f"database: SQLite {database_url.removeprefix('sqlite:///')}"
    else:
        assert line.startswith("database: PostgreSQL 127.0.0.1:")
        password = database_url.split("://", 1)[1].split("@", 1)[0].split(":")[1]
        assert password not in listed.stderr


def test_a_command_run_from_another_folder_refuses_instead_of_making_a_second_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, console: Callable[..., Exited]
) -> None:
    home = tmp_path / "service"
    home.mkdir()
    monkeypatch.chdir(home)
    cli_ok("db", "upgrade")  # the default: ./data/zoho_moodle_sync.db, here
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    refused = console("jobs", "list")

    assert refused.code == 1
    assert refused.err.startswith(
        f"error: no database at {elsewhere / 'data' / 'zoho_moodle_sync.db'}. Run the command "
        "from the folder the service runs in, or set DATABASE_URL"
    )
    assert not (elsewhere / "data").exists()
    monkeypatch.chdir(home)
    assert cli_ok("jobs", "list") == "no delivery jobs\n"


def test_an_unknown_job_state_is_an_error_naming_the_states(
    db: Database, database_url: str, console: Callable[..., Exited]
) -> None:
    url = ("--database-url", database_url)
    cli_ok("db", "upgrade", *url)

    listed = console("jobs", "list", "--state", "bogus", *url)
    retried = console("jobs", "retry", "--state", "bogus", *url)
    no_entity = console("jobs", "list", "--entity", "pupils", *url)

    assert listed == Exited(
        1, "", f"error: unknown job state 'bogus'; known: {', '.join(JOB_STATES)}\n"
    )
    assert retried.code == 1
    assert retried.err.startswith("error: unknown job state 'bogus'; known: pending, ")
    assert no_entity.code == 1
    assert no_entity.err == "error: unknown entity 'pupils'\n"
    assert cli_ok("jobs", "list", "--state", "dead", *url) == "no delivery jobs in state dead\n"


def test_empty_lists_say_so(db: Database, database_url: str) -> None:
    url = ("--database-url", database_url)
    cli_ok("db", "upgrade", *url)

    assert cli_ok("parked", "list", *url) == "no parked records\n"
    assert cli_ok("parked", "list", "--entity", "enrollments", *url) == (
        "no parked records of enrollments\n"
    )
    unknown = cli("parked", "list", "--entity", "pupils", *url)
    assert unknown.exit_code == 1
    assert errors(unknown.stderr).startswith("error: unknown entity 'pupils'; known: programs, ")


def test_tenant_show_tells_which_secrets_are_set_without_showing_any(
    db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = ("--database-url", database_url)
    cli_ok("db", "upgrade", *url)
    secret = cli_ok("tenant", "add-secret", "default", *url).strip()

    before = json.loads(cli_ok("tenant", "show", "default", *url))
    monkeypatch.setenv("SECRET_KEY", "a-key-to-seal-the-stored-zoho-secrets")
    monkeypatch.setenv("ZOHO_CLIENT_SECRET_INPUT", "zoho-client-secret-value")
    monkeypatch.setenv("ZOHO_REFRESH_TOKEN_INPUT", "zoho-refresh-token-value")
    get_settings.cache_clear()
    cli_ok(
        "tenant", "set-zoho", "default", "--client-id", "1000.CLIENT", "--data-centre", "eu", *url
    )
    shown = cli_ok("tenant", "show", "default", *url)
    after = json.loads(shown)

    assert before["caller_secrets"] == {"active": 1, "WEBHOOK_SECRET": "not used"}
    assert [s["state"] for s in before["secrets"]] == ["active"]
    assert before["zoho"] == {"source": "not set: id-only webhooks and pulls are refused"}
    assert after["zoho"] == {
        "source": "stored for this tenant (tenant set-zoho)",
        "client_id": "1000.CLIENT",
        "data_centre": "eu",
        "client_secret": "set (encrypted)",
        "refresh_token": "set (encrypted)",
    }
    for value in (secret, "zoho-client-secret-value", "zoho-refresh-token-value"):
        assert value not in shown
