"""Explain: why a record is, or is not, in Moodle, as an operator asks it (`GET /v1/explain`,
`zoho-moodle-sync explain`). The records go through the API and a worker delivers them to the
fake Moodle, so every verdict is about a real chain: parked records, invalid dependencies,
Moodle's refusals, what was delivered, and what Moodle shows now."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import DEFAULT_TENANT, tenant_with_secret
from tests.factories import ClassRecordFactory, EnrollmentRecordFactory, StudentRecordFactory
from tests.fakes.moodle import FakeMoodle
from tests.worker.conftest import POST_ORDER, MoodleSync, one_class, post_all
from zoho_moodle_sync import explain
from zoho_moodle_sync.cli import app
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings


def post_all_but_classes(moodle_sync: MoodleSync, records: dict[str, list[Any]]) -> None:
    for entity in POST_ORDER:
        if entity != "classes":
            moodle_sync.post(entity, records[entity])


def explained(client: TestClient, entity: str, zoho_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/v1/explain/{entity}/{zoho_id}", params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_an_enrolment_whose_class_never_arrived_says_it_waits_for_that_class(
    moodle_sync: MoodleSync,
) -> None:
    world = one_class(students=1)
    post_all_but_classes(moodle_sync, world.by_entity())
    [student], [enrollment] = world.students, world.enrollments

    answer = explained(moodle_sync.client, "enrollments", enrollment["id"])

    class_id = world.class_["id"]
    assert answer["status"] == "waiting"
    assert answer["verdict"] == (
        f"{student['Name']} is not in '{world.class_['Class_Name']}' because the enrollment "
        f"waits for class {class_id[:4]}… which has never arrived from Zoho"
    )
    assert answer["record"]["state"] == "parked"
    assert answer["record"]["received"]["how"] == "a re-sync sent to the service"
    assert answer["record"]["received"]["route"] == "POST /v1/sync/enrollments"
    assert answer["record"]["last_outcome"]["outcome"] == "SKIPPED"
    assert [(w["entity"], w["zoho_id"], w["state"]) for w in answer["waiting_for"]] == [
        ("classes", class_id, "never_arrived")
    ]
    assert answer["delivery"]["jobs"] == []


def test_a_dependency_that_arrived_only_invalid_is_named_with_its_errors(
    moodle_sync: MoodleSync,
) -> None:
    world = one_class(students=1)
    post_all_but_classes(moodle_sync, world.by_entity())
    broken = {**world.class_, "Class_Name": None}
    assert moodle_sync.post("classes", [broken])["summary"]["INVALID"] == 1

    answer = explained(moodle_sync.client, "enrollments", world.enrollments[0]["id"])

    [wait] = answer["waiting_for"]
    assert wait["state"] == "invalid"
    assert wait["errors"] == [{"field": "Class_Name", "message": "required, but empty"}]
    assert (
        "which arrived from Zoho only invalid (Class_Name: required, but empty)"
        in (answer["verdict"])
    )


def test_an_enrolment_whose_student_moodle_refused_names_moodle_s_reason(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    world = one_class(students=2)
    taken = world.students[0]
    other = fake_moodle.add_user("someone.else", email=taken["Academic_Email"])
    moodle_sync.set_policy(user_match=["idnumber", "username"])
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)
    moodle_sync.make_due()
    moodle_sync.drain(fake_moodle)

    answer = explained(moodle_sync.client, "enrollments", world.enrollments[0]["id"])
    student = explained(moodle_sync.client, "students", taken["id"])

    assert student["status"] == "refused"
    assert student["verdict"].startswith(
        f"{taken['Name']} has no Moodle account because Moodle refused the account: "
        "Invalid parameter value detected"
    )
    [dead] = [job for job in student["delivery"]["jobs"] if job["state"] == "dead"]
    assert dead["errorcode"] == "invalidparameter"
    assert answer["status"] == "waiting"
    assert answer["verdict"].startswith(
        f"{taken['Name']} is not in '{world.class_['Class_Name']}' because its student "
        f"{taken['Name']} has no Moodle account: Moodle refused the account: "
    )
    roles = {r["role"]: r for r in answer["related"]}
    assert roles["student_zoho_id"]["status"] == "refused"
    assert roles["class_zoho_id"]["status"] == "in_moodle"
    assert other.id not in {job.get("id") for job in student["delivery"]["jobs"]}


def test_a_delivered_enrolment_is_in_moodle_and_live_shows_what_moodle_holds(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, db: Database, settings: Settings
) -> None:
    world = one_class(students=1)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)
    [student], [enrollment] = world.students, world.enrollments
    user = moodle_sync.link("students", student["id"])
    course = moodle_sync.link("classes", world.class_["id"])
    assert user is not None
    assert course is not None

    answer = explained(moodle_sync.client, "enrollments", enrollment["id"])
    found = explain.explain(
        db,
        tenant_id=moodle_sync.tenant.id,
        entity="enrollments",
        zoho_id=enrollment["id"],
        settings=settings,
    )
    with_live = asyncio.run(_live(found, db, moodle_sync.tenant.id, settings, fake_moodle))

    assert answer["status"] == "in_moodle"
    assert answer["verdict"] == (
        f"{student['Name']} is in '{world.class_['Class_Name']}' (Moodle course "
        f"{course.moodle_id}) and up to date"
    )
    assert answer["delivery"]["moodle"]["detail"]["userid"] == user.moodle_id
    assert [job["state"] for job in answer["delivery"]["jobs"]] == ["done"]
    assert {r["role"]: r["status"] for r in answer["related"]} == {
        "student_zoho_id": "in_moodle",
        "class_zoho_id": "in_moodle",
    }
    assert with_live.live is not None
    assert with_live.live.error is None
    assert with_live.live.facts == [
        f"Moodle user {user.moodle_id} ({student['Name'].lower()}) exists and is active",
        f"Moodle course {course.moodle_id} ({world.class_['Class_Short_Name']}) exists",
        f"user {user.moodle_id} is enrolled in course {course.moodle_id} as student, active",
    ]
    assert with_live.live.enrolment == {"enrolled": True, "roles": ["student"], "active": True}


async def _live(
    found: explain.Explanation, db: Database, tenant_id: int, settings: Settings, fake: FakeMoodle
) -> explain.Explanation:
    async with httpx.AsyncClient(transport=fake.transport()) as http:
        return await explain.add_live(
            found, db=db, tenant_id=tenant_id, settings=settings, http=http
        )


def test_a_queued_record_says_so_and_live_without_a_moodle_says_why(
    client: TestClient, db: Database
) -> None:
    student = StudentRecordFactory(program=None)
    beta = tenant_with_secret(db, "beta")  # a tenant with no Moodle of its own
    client.post("/v1/sync/students", json={"data": [student]})
    client.post("/v1/sync/students", json={"data": [student]}, headers=beta)

    queued = explained(client, "students", student["id"])
    response = client.get(f"/v1/explain/students/{student['id']}?live=1", headers=beta)

    [job] = queued["delivery"]["jobs"]
    assert queued["status"] == "on_its_way"
    assert queued["verdict"] == (
        f"{student['Name']} has no Moodle account because its delivery is queued (job {job['id']})"
    )
    answer = response.json()
    assert answer["verdict"].endswith(
        "but this tenant's Moodle is not configured (MOODLE_URL, tenant set-moodle)"
    )
    assert answer["live"]["error"] == (
        "this tenant's Moodle is not configured (MOODLE_URL, tenant set-moodle)"
    )


def test_units_are_explained_as_kept_for_reporting(moodle_sync: MoodleSync) -> None:
    world = one_class(students=1)
    post_all(moodle_sync, world.by_entity())

    answer = explained(moodle_sync.client, "units", world.unit["id"])

    assert answer["status"] == "not_for_moodle"
    assert answer["delivery"] is None
    assert answer["verdict"].endswith("units are kept for reporting and do not go to Moodle")


def test_q_finds_a_student_by_number_e_mail_or_id_and_lists_several_matches(
    client: TestClient,
) -> None:
    first = StudentRecordFactory(program=None)
    twin = StudentRecordFactory(program=None, Email=first["Email"])
    client.post("/v1/sync/students", json={"data": [first, twin]})

    by_number = client.get("/v1/explain", params={"q": first["Name"].lower()}).json()
    by_id = client.get("/v1/explain", params={"q": first["id"]}).json()
    by_email = client.get("/v1/explain", params={"q": first["Email"].upper()}).json()
    nothing = client.get("/v1/explain", params={"q": "nobody@example.org"})
    no_q = client.get("/v1/explain")

    assert [m["zoho_id"] for m in by_number["matches"]] == [first["id"]]
    assert by_number["explanation"]["zoho_id"] == first["id"]
    assert by_id["matches"] == [
        {
            "entity": "students",
            "zoho_id": first["id"],
            "name": f"{first['Name']} {first['First_Name']} {first['Last_Name']}",
            "matched": "zoho_id",
        }
    ]
    assert [m["zoho_id"] for m in by_email["matches"]] == [first["id"], twin["id"]]
    assert by_email["explanation"] is None
    assert nothing.status_code == 404
    assert nothing.json()["error"]["code"] == "not_found"
    assert no_q.status_code == 422
    assert no_q.json()["error"]["message"].startswith("q must be a Zoho id, a student number")


def test_unknown_records_and_entities_are_refused_and_tenants_see_only_their_own(
    client: TestClient, db: Database
) -> None:
    student = StudentRecordFactory(program=None)
    client.post("/v1/sync/students", json={"data": [student]})
    other = tenant_with_secret(db, "beta")

    unknown = client.get("/v1/explain/students/5725767141565999999")
    bad_entity = client.get(f"/v1/explain/pupils/{student['id']}")
    not_an_id = client.get("/v1/explain/students/A2025-0003")
    foreign = client.get(f"/v1/explain/students/{student['id']}", headers=other)
    foreign_q = client.get("/v1/explain", params={"q": student["Name"]}, headers=other)

    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == (
        "no student 5725767141565999999 has reached this service for this tenant"
    )
    assert bad_entity.status_code == 422
    assert bad_entity.json()["error"]["message"].startswith("unknown entity 'pupils'; known: ")
    assert not_an_id.status_code == 404
    assert foreign.status_code == 404
    assert foreign_q.status_code == 404
    assert client.get(f"/v1/explain/students/{student['id']}").status_code == 200


def test_the_cli_prints_the_verdict_first_then_the_chain(
    moodle_sync: MoodleSync, database_url: str
) -> None:
    klass = ClassRecordFactory()
    enrollment = EnrollmentRecordFactory(class_=klass)
    moodle_sync.post("enrollments", [enrollment])
    runner = CliRunner()
    url = ["--database-url", database_url, "--tenant", DEFAULT_TENANT]

    text = runner.invoke(app, ["explain", "enrollments", enrollment["id"], *url])
    as_json = runner.invoke(app, ["explain", "--q", enrollment["id"], "--json", *url])
    neither = runner.invoke(app, ["explain", *url])

    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].endswith("which has never arrived from Zoho")
    assert lines[1] == ""
    assert lines[2] == f"Record      enrollments {enrollment['id']} ({enrollment['Name']}): parked"
    assert any(line.startswith("Waits for   student ") for line in lines)
    assert as_json.exit_code == 0
    assert '"status": "waiting"' in as_json.stdout
    assert neither.exit_code == 1
