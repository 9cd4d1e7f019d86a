"""Moodle drift: what an administrator changed by hand behind the service's back (an enrolment
removed or suspended, a user suspended, deleted or renamed, a course moved) is found by reading
Moodle back, reported by kind with examples, and restored with `--repair`; what the service did
not create or adopt is never touched."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.factories import (
    CLASSES,
    ENROLLMENTS,
    PROGRAMS,
    STUDENTS,
    TEACHERS,
    UNITS,
    Record,
    load_sample_college,
)
from tests.fakes.moodle import DEFAULT_SITE_URL, DEFAULT_TOKEN, FakeMoodle
from tests.security.conftest import serving
from tests.worker.conftest import (
    SITE_COURSE_ID,
    MoodleSync,
    modified,
    person,
    write_calls,
)
from tests.worker.test_convergence import (
    INVALID_IN_SAMPLE,
    NOT_DELIVERED,
    assert_college_in_moodle,
)
from zoho_moodle_sync.cli import app
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.moodle import (
    CourseUpdate,
    Enrolment,
    MoodleClient,
    NewUser,
    Unenrolment,
    UserUpdate,
)
from zoho_moodle_sync.reconcile import drift
from zoho_moodle_sync.reconcile.drift import DriftReport
from zoho_moodle_sync.settings import Settings, get_settings
from zoho_moodle_sync.tenants import TenantContext

STUDENT_ROLE = 5


def by_hand(fake: FakeMoodle, *calls: tuple[str, Any]) -> None:
    """An administrator's changes in Moodle, made through its web services."""

    async def run() -> None:
        async with httpx.AsyncClient(transport=fake.transport()) as http:
            admin = MoodleClient(base_url=DEFAULT_SITE_URL, token=DEFAULT_TOKEN, http=http)
            for method, argument in calls:
                if method == "call":
                    await admin.call(*argument)
                else:
                    await getattr(admin, method)(argument)

    asyncio.run(run())


def check(
    db: Database, settings: Settings, tenant: TenantContext, fake: FakeMoodle, *, repair: bool
) -> DriftReport:
    async def run() -> DriftReport:
        async with httpx.AsyncClient(transport=fake.transport()) as http:
            return await drift.check(db, settings, tenant, http=http, repair=repair)

    return asyncio.run(run())


def delivered_college(moodle_sync: MoodleSync, fake: FakeMoodle) -> dict[str, list[Record]]:
    college = load_sample_college()
    by_entity = {
        "programs": college[PROGRAMS],
        "units": college[UNITS],
        "teachers": college[TEACHERS],
        "students": [
            s for s in college[STUDENTS] if ("students", s["id"]) not in INVALID_IN_SAMPLE
        ],
        "classes": college[CLASSES],
        "enrollments": college[ENROLLMENTS],
    }
    for entity, records in by_entity.items():
        moodle_sync.post(entity, records)
    moodle_sync.drain(fake)
    assert_college_in_moodle(fake, college)
    return college


def enrolled(college: dict[str, list[Record]], fake: FakeMoodle) -> list[tuple[int, int]]:
    """(Moodle user, course) of each delivered student enrolment, in the college's order."""
    courses = {c.idnumber: c.id for c in fake.courses()}
    return [
        (person(fake, e["Enrolled_Students"]["id"]).id, courses[e["Classes"]["id"]])
        for e in college[ENROLLMENTS]
        if ("enrollments", e["id"]) not in NOT_DELIVERED
    ]


def test_no_drift_right_after_delivery(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, settings: Settings, tenant: TenantContext
) -> None:
    college = delivered_college(moodle_sync, fake_moodle)

    report = check(moodle_sync.db, settings, tenant, fake_moodle, repair=False)

    assert report.findings == []
    assert report.notes == []
    assert report.checked["students"] == len(college[STUDENTS]) - len(INVALID_IN_SAMPLE)
    assert report.checked["classes"] == len(college[CLASSES])
    assert report.checked["enrollments"] == len(enrolled(college, fake_moodle))


def test_changes_made_by_hand_are_reported_then_repaired(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, settings: Settings, tenant: TenantContext
) -> None:
    college = delivered_college(moodle_sync, fake_moodle)
    (user_a, course_a), (user_b, course_b), *_ = enrolled(college, fake_moodle)
    students = [
        person(fake_moodle, s["id"])
        for s in college[STUDENTS][:10]
        if ("students", s["id"]) not in INVALID_IN_SAMPLE
    ]
    active = [s for s in students if not s.suspended and s.id not in (user_a, user_b)]
    suspended, renamed, deleted = active[0], active[1], active[2]
    moved = next(c for c in fake_moodle.courses() if c.id not in (SITE_COURSE_ID, course_a))
    other_category = next(c.id for c in fake_moodle.categories() if c.id != moved.categoryid)
    by_hand(
        fake_moodle,
        ("unenrol_users", [Unenrolment(userid=user_a, courseid=course_a)]),
        (
            "enrol_users",
            [Enrolment(roleid=STUDENT_ROLE, userid=user_b, courseid=course_b, suspend=True)],
        ),
        ("update_users", [UserUpdate(id=suspended.id, suspended=True)]),
        ("update_users", [UserUpdate(id=renamed.id, email="changed.by.hand@example.org")]),
        ("call", ("core_user_delete_users", {"userids": [deleted.id]})),
        ("update_courses", [CourseUpdate(id=moved.id, categoryid=other_category)]),
    )
    writes = len(write_calls(fake_moodle))

    report = check(moodle_sync.db, settings, tenant, fake_moodle, repair=False)

    kinds = Counter(finding.kind for finding in report.findings)
    assert kinds["missing_enrolment"] >= 1
    assert kinds["enrolment_suspended"] == 1
    assert kinds["user_suspended"] == 1
    assert kinds["user_changed"] == 1
    assert kinds["missing_user"] == 1
    assert kinds["course_moved"] == 1
    found = {(f.kind, f.moodle_id) for f in report.findings}
    assert ("user_suspended", suspended.id) in found
    assert ("missing_user", deleted.id) in found
    assert ("course_moved", moved.id) in found
    changed = next(f for f in report.findings if f.kind == "user_changed")
    assert "changed.by.hand@example.org" in changed.detail
    assert report.repaired == 0
    assert len(write_calls(fake_moodle)) == writes  # a check only reads

    repaired = check(moodle_sync.db, settings, tenant, fake_moodle, repair=True)
    assert repaired.repaired >= len(kinds)
    moodle_sync.drain(fake_moodle)

    assert_college_in_moodle(fake_moodle, college)
    assert check(moodle_sync.db, settings, tenant, fake_moodle, repair=False).findings == []


def test_what_the_service_did_not_create_or_adopt_is_never_reported(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, settings: Settings, tenant: TenantContext
) -> None:
    delivered_college(moodle_sync, fake_moodle)
    course = next(c for c in fake_moodle.courses() if c.id != SITE_COURSE_ID)
    by_hand(
        fake_moodle,
        (
            "create_users",
            [
                NewUser(
                    username="visitor",
                    firstname="A",
                    lastname="Visitor",
                    email="visitor@example.org",
                    createpassword=True,
                )
            ],
        ),
    )
    visitor = fake_moodle.user("visitor")
    assert visitor is not None
    by_hand(
        fake_moodle,
        ("enrol_users", [Enrolment(roleid=STUDENT_ROLE, userid=visitor.id, courseid=course.id)]),
        ("update_users", [UserUpdate(id=visitor.id, suspended=True)]),
    )

    report = check(moodle_sync.db, settings, tenant, fake_moodle, repair=True)

    assert report.findings == []
    assert report.repaired == 0
    assert fake_moodle.enrolment(visitor.id, course.id) is not None
    assert fake_moodle.user("visitor").suspended


def test_a_repair_that_would_suspend_many_waits_for_the_guard(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, settings: Settings, tenant: TenantContext
) -> None:
    """Users reactivated by hand in bulk, whom Zoho has suspended: restoring Zoho's state
    suspends them all, which the mass-change guard holds for an operator to confirm."""
    college = delivered_college(moodle_sync, fake_moodle)
    valid = [s for s in college[STUDENTS] if ("students", s["id"]) not in INVALID_IN_SAMPLE]
    leaving = [s for s in valid if s["Status"] == "Active"][:2]
    moodle_sync.post("students", [modified(s, Status="Withdraw") for s in leaving])
    moodle_sync.drain(fake_moodle)
    withdrawn = [person(fake_moodle, s["id"]) for s in valid]
    withdrawn = [user for user in withdrawn if user.suspended]
    assert len(withdrawn) >= 3
    moodle_sync.set_policy(mass_change_min=1, mass_change_share=0.01)
    by_hand(
        fake_moodle,
        ("update_users", [UserUpdate(id=user.id, suspended=False) for user in withdrawn]),
    )

    report = check(moodle_sync.db, settings, tenant, fake_moodle, repair=True)
    moodle_sync.drain(fake_moodle)

    assert Counter(f.kind for f in report.findings) == {"user_active": len(withdrawn)}
    assert moodle_sync.states("students").get("held") == len(withdrawn)
    assert not any(person(fake_moodle, u.idnumber).suspended for u in withdrawn)


def test_moodle_check_on_the_command_line(
    client: TestClient,
    moodle_sync: MoodleSync,
    fake_moodle: FakeMoodle,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """`zoho-moodle-sync moodle check default [--repair]`: the report, exit status 1 while
    differences remain, and the repair queued."""
    college = delivered_college(moodle_sync, fake_moodle)
    (user, course), *_ = enrolled(college, fake_moodle)
    by_hand(fake_moodle, ("unenrol_users", [Unenrolment(userid=user, courseid=course)]))
    with serving(fake_moodle) as moodle_url:
        for name in Settings.model_fields:
            monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.setenv("DATABASE_URL", settings.database_url)
        monkeypatch.setenv("MOODLE_URL", moodle_url)
        monkeypatch.setenv("MOODLE_TOKEN", DEFAULT_TOKEN)
        monkeypatch.chdir(tmp_path)  # no .env
        get_settings.cache_clear()
        try:
            found = CliRunner().invoke(app, ["moodle", "check", "default"])
            repaired = CliRunner().invoke(app, ["moodle", "check", "default", "--repair"])
        finally:
            get_settings.cache_clear()
    moodle_sync.drain(fake_moodle)

    assert found.exit_code == 1, found.output
    assert "missing_enrolment" in found.output
    assert "--repair" in found.output
    assert repaired.exit_code == 0, repaired.output
    assert "queued for delivery again" in repaired.output
    assert fake_moodle.enrolment(user, course) is not None
    status = client.get("/v1/status").json()["reconcile"]["drift"]["default"]
    assert status["differences"] == 1
    assert status["repaired"] == 1
