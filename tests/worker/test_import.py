"""`zoho-moodle-sync pull`: a college imported from the Zoho API through the same pipeline as
webhooks reaches Moodle exactly as webhooks would bring it; pages, page tokens, the fields asked
for, a dry run that writes nothing, a pull killed and resumed, Zoho going away mid-pull, and
records deleted in Zoho."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.factories import (
    ENROLLMENTS,
    GRADES,
    PROGRAMS,
    STUDENTS,
    build_college,
    load_sample_college,
)
from tests.fakes.moodle import FakeMoodle
from tests.fakes.zoho import FakeZoho, ManualClock
from tests.worker.conftest import ENTITY_OF_MODULE, MoodleSync, import_all, person
from tests.worker.test_convergence import INVALID_IN_SAMPLE, assert_college_in_moodle
from zoho_moodle_sync.db.jobs import Job
from zoho_moodle_sync.db.models import ENTITY_TABLES, InboundEvent
from zoho_moodle_sync.db.reconciliation import Pull, PullModule
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITIES
from zoho_moodle_sync.reconcile.pull import PullStopped
from zoho_moodle_sync.reconcile.reports import ModuleReport
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import TenantContext


def record_counts(db: Database) -> dict[str, int]:
    with db.sessions() as session:
        counts = {
            entity: session.scalar(select(func.count()).select_from(table)) or 0
            for entity, table in ENTITY_TABLES.items()
        }
        counts["events"] = session.scalar(select(func.count()).select_from(InboundEvent)) or 0
        counts["jobs"] = session.scalar(select(func.count()).select_from(Job)) or 0
        counts["pulls"] = session.scalar(select(func.count()).select_from(Pull)) or 0
    return counts


def list_calls(fake: FakeZoho, module: str) -> list[Any]:
    """The fake's record listings of `module` (not `/deleted`, not by ids)."""
    return [
        call
        for call in fake.api_calls
        if call.path.endswith(f"/{module}") and call.method == "GET" and "ids" not in call.query
    ]


def test_an_import_from_the_zoho_api_converges_in_moodle(
    moodle_sync: MoodleSync,
    fake_moodle: FakeMoodle,
    fake_zoho: FakeZoho,
    zoho_settings: Settings,
    db: Database,
    tenant: TenantContext,
) -> None:
    college = load_sample_college()
    fake_zoho.seed(college)

    report = import_all(db, zoho_settings, tenant, fake_zoho)
    moodle_sync.drain(fake_moodle)

    assert_college_in_moodle(fake_moodle, college)
    by_entity = {module.entity: module for module in report.modules}
    assert list(by_entity) == [spec.key for spec in ENTITIES]  # in dependency order
    assert sum(m.records for m in report.modules) == sum(len(r) for r in college.values())
    assert by_entity["students"].outcomes["INVALID"] == len(INVALID_IN_SAMPLE)
    assert by_entity["students"].total == len(college[STUDENTS])
    # Only the fields the mapping reads, with the id and the modification time.
    [students_call] = list_calls(fake_zoho, STUDENTS)
    fields = set(students_call.query["fields"].split(","))
    assert {"id", "Modified_Time", "Name", "First_Name", "Academic_Email"} <= fields
    assert "Phone" not in fields
    assert "Created_By" not in fields


def test_an_import_run_again_changes_nothing(
    moodle_sync: MoodleSync,
    fake_moodle: FakeMoodle,
    fake_zoho: FakeZoho,
    zoho_settings: Settings,
    db: Database,
    tenant: TenantContext,
) -> None:
    fake_zoho.seed(load_sample_college())
    import_all(db, zoho_settings, tenant, fake_zoho)
    moodle_sync.drain(fake_moodle)
    calls = len(fake_moodle.calls)

    again = import_all(db, zoho_settings, tenant, fake_zoho)

    outcomes = {o for module in again.modules for o in module.outcomes}
    assert outcomes <= {"UNCHANGED", "INVALID", "SKIPPED"}  # SKIPPED: still parked
    assert moodle_sync.drain(fake_moodle) == 0
    assert len(fake_moodle.calls) == calls


def test_a_dry_run_writes_nothing_and_says_what_moodle_would_get(
    fake_zoho: FakeZoho, zoho_settings: Settings, db: Database, tenant: TenantContext
) -> None:
    college = load_sample_college()
    fake_zoho.seed(college)
    before = record_counts(db)

    report = import_all(db, zoho_settings, tenant, fake_zoho, dry_run=True)

    assert record_counts(db) == before
    students = next(m for m in report.modules if m.entity == "students")
    assert students.outcomes["NEW"] == len(college[STUDENTS]) - len(INVALID_IN_SAMPLE)
    assert len(students.examples["NEW"]) == 3
    changes = {(c.entity, c.change): c for c in report.moodle}
    assert changes[("students", "create")].count == students.outcomes["NEW"]
    assert changes[("programs", "create")].count == len(college[PROGRAMS])
    assert len(changes[("enrollments", "create")].examples) == 3
    assert {change for _, change in changes} == {"create"}


def test_page_tokens_past_two_thousand_records(
    fake_zoho: FakeZoho, zoho_settings: Settings, db: Database, tenant: TenantContext
) -> None:
    fake = FakeZoho(modules=[GRADES], page_tokens="beyond_limit")
    college = build_college(students=700, programs=1, units=1, classes=3, enrollments_per_student=3)
    grades = college[GRADES]
    assert len(grades) > 2000
    fake.seed({GRADES: grades})

    report = import_all(db, zoho_settings, tenant, fake, entities=["grades"])

    assert report.modules[0].records == len(grades)
    pages = list_calls(fake, GRADES)
    assert len(pages) == -(-len(grades) // 200)
    assert [("page" in c.query, "page_token" in c.query) for c in pages[:10]] == [
        (True, False)
    ] * 10
    assert all("page_token" in c.query and "page" not in c.query for c in pages[10:])


class KilledAfter:
    """A progress that kills the pull (as a `kill -9` would stop it) after `pages` pages."""

    def __init__(self, pages: int) -> None:
        self.pages = pages

    def module_started(self, report: ModuleReport, resumed_from: int) -> None:
        return None

    def page_done(self, report: ModuleReport) -> None:
        self.pages -= 1
        if self.pages == 0:
            raise KeyboardInterrupt

    def module_done(self, report: ModuleReport) -> None:
        return None


def test_a_killed_pull_resumes_from_its_last_page(
    fake_zoho: FakeZoho, zoho_settings: Settings, db: Database, tenant: TenantContext
) -> None:
    college = build_college(students=450, programs=1, units=1, classes=2, payments_per_student=0)
    fake_zoho.seed(college)
    with pytest.raises(KeyboardInterrupt):
        # A page of programmes, one of teachers (no deleted list: Zoho answers 204), then two
        # pages of students.
        import_all(db, zoho_settings, tenant, fake_zoho, progress=KilledAfter(4))
    assert record_counts(db)["students"] == 400
    fake_zoho.calls.clear()

    report = import_all(db, zoho_settings, tenant, fake_zoho, resume=True)

    counts = record_counts(db)
    assert counts["students"] == len(college[STUDENTS])
    assert counts["enrollments"] == len(college[ENROLLMENTS])
    assert counts["pulls"] == 1
    # It went on from the third page of students: nothing before was asked again.
    first = next(c for c in fake_zoho.api_calls if not c.path.endswith("/actions/count"))
    assert first.path.endswith(f"/{STUDENTS}")
    assert "page_token" in first.query
    assert next(m.entity for m in report.modules) == "students"
    students = report.modules[0]
    assert students.records == len(college[STUDENTS])
    assert students.outcomes["NEW"] == len(college[STUDENTS])
    with db.sessions() as session:
        pull = session.scalars(select(Pull)).one()
        assert pull.state == "done"
        modules = session.scalars(select(PullModule)).all()
        assert {m.phase for m in modules} == {"done"}


def test_zoho_going_away_mid_pull_stops_it_with_a_clear_message_and_loses_nothing(
    fake_zoho: FakeZoho, zoho_settings: Settings, db: Database, tenant: TenantContext
) -> None:
    college = build_college(students=450, programs=1, units=1, classes=2, payments_per_student=0)
    fake_zoho.seed(college)

    class GoAway(KilledAfter):
        def page_done(self, report: ModuleReport) -> None:
            self.pages -= 1
            if self.pages == 0:
                fake_zoho.fail_next(4, status=503)  # every attempt

    with pytest.raises(PullStopped, match=re.escape("--resume")) as stopped:
        import_all(db, zoho_settings, tenant, fake_zoho, progress=GoAway(3))
    assert "Zoho" in str(stopped.value)
    stored = record_counts(db)["students"]
    assert stored == 200
    with db.sessions() as session:
        pull = session.scalars(select(Pull)).one()
        assert pull.state == "stopped"
        assert "503" in (pull.error or "")

    import_all(db, zoho_settings, tenant, fake_zoho, resume=True)

    assert record_counts(db)["students"] == len(college[STUDENTS])


def test_records_deleted_in_zoho_are_deleted_here_and_in_moodle_by_the_policy(
    moodle_sync: MoodleSync,
    fake_moodle: FakeMoodle,
    fake_zoho: FakeZoho,
    zoho_settings: Settings,
    db: Database,
    tenant: TenantContext,
) -> None:
    college = load_sample_college()
    fake_zoho.seed(college)
    import_all(db, zoho_settings, tenant, fake_zoho)
    moodle_sync.drain(fake_moodle)
    gone = next(
        s
        for s in college[STUDENTS]
        if ("students", s["id"]) not in INVALID_IN_SAMPLE and s["Status"] == "Active"
    )
    fake_zoho.delete_record(STUDENTS, gone["id"])

    report = import_all(db, zoho_settings, tenant, fake_zoho, entities=["students"])
    moodle_sync.drain(fake_moodle)

    assert report.modules[0].outcomes["DELETED"] == 1
    assert person(fake_moodle, gone["id"]).suspended  # the default removal policy: suspend


def test_a_module_the_org_does_not_have_is_skipped(
    fake_zoho: FakeZoho, zoho_settings: Settings, db: Database, tenant: TenantContext
) -> None:
    fake = FakeZoho(modules=[STUDENTS])

    report = import_all(db, zoho_settings, tenant, fake)

    skipped = {m.entity: m.skipped for m in report.modules if m.skipped}
    assert "students" not in skipped
    assert skipped["grades"] == f"Zoho has no module {GRADES!r}"
    assert len(skipped) == 8


def test_a_pull_resumed_after_its_page_token_expired_starts_the_module_again(
    zoho_settings: Settings, db: Database, tenant: TenantContext
) -> None:
    clock = ManualClock(datetime.now(UTC))
    fake = FakeZoho(modules=ENTITY_OF_MODULE, clock=clock)
    college = build_college(students=450, programs=1, units=1, classes=2, payments_per_student=0)
    fake.seed(college)
    with pytest.raises(KeyboardInterrupt):
        import_all(db, zoho_settings, tenant, fake, progress=KilledAfter(4))
    clock.advance(timedelta(days=2))  # Zoho keeps a page token for a day

    report = import_all(db, zoho_settings, tenant, fake, resume=True)

    students = report.modules[0]
    assert students.entity == "students"
    # The report counts the whole pull: 400 stored before the kill, the same 400 again (its
    # first pages came again, and are UNCHANGED), then the last 50.
    assert students.outcomes["UNCHANGED"] == 400
    assert students.outcomes["NEW"] == 450
    assert record_counts(db)["enrollments"] == len(college[ENROLLMENTS])
