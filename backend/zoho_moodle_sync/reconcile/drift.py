"""Moodle drift: read back from Moodle what the service manages (the users, categories, courses
and enrolments it created or adopted) and compare it with what it delivered. Someone may have
unenrolled a student by hand, suspended a user, moved a course or changed an e-mail address.

Only what the service links to is read, and records with a delivery still open are left out
(Moodle is behind them, not drifted). Each check is kept (`moodle_checks`); a repair queues the
deliveries that restore Zoho's state, and the mass-change guard judges them as any other.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zoho_moodle_sync import projection, tenants
from zoho_moodle_sync.db.jobs import OPEN_STATES, Job, JobKind, JobState, MoodleLink
from zoho_moodle_sync.db.models import ENTITY_TABLES, Tenant
from zoho_moodle_sync.db.reconciliation import MoodleCheck
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import ENTITY_BY_KEY, MOODLE_SIDES, MoodleKind
from zoho_moodle_sync.errors import ConfigurationError, MoodleRejected
from zoho_moodle_sync.moodle import Course, MoodleClient, MoodleUser
from zoho_moodle_sync.moodle.models import unescape_moodle_text
from zoho_moodle_sync.projection import DeliveryPolicy, ProjectionError
from zoho_moodle_sync.reconcile import drift_repair
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.tenants import TenantContext

log = logging.getLogger(__name__)

KINDS: dict[str, str] = {
    "missing_user": "a user the service made or adopted is not in Moodle any more",
    "user_suspended": "suspended in Moodle, active in Zoho",
    "user_active": "active in Moodle, suspended in Zoho",
    "user_changed": "e-mail, name or username changed in Moodle",
    "missing_category": "a programme's category is not in Moodle any more",
    "missing_course": "a class's course is not in Moodle any more",
    "course_moved": "a course is in another category than its programme's",
    "missing_enrolment": "a student is not enrolled in Moodle",
    "enrolment_suspended": "an enrolment is not active in Moodle, active in Zoho",
    "enrolment_active": "an enrolment is active in Moodle, suspended by the removal policy",
}
"""Every kind of drift, in words."""
EXAMPLES = 5
DELETED_EMAIL = re.compile(r"[0-9a-f]{32}")
IDS_PER_CALL = 200
"""Ids per look-up call (users by id, courses by ids)."""


@dataclass(frozen=True)
class Finding:
    kind: str
    entity: str
    zoho_id: str
    moodle_id: int | None
    detail: str


@dataclass
class DriftReport:
    tenant: str
    checked: dict[str, int] = field(default_factory=dict)
    """Entity → how many of its linked records were compared with Moodle."""
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What could not be checked, and why."""
    repaired: int = 0

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, dict[str, Any]] = {}
        for finding in self.findings:
            kind = kinds.setdefault(
                finding.kind, {"count": 0, "meaning": KINDS[finding.kind], "examples": []}
            )
            kind["count"] += 1
            if len(kind["examples"]) < EXAMPLES:
                kind["examples"].append(
                    {
                        "entity": finding.entity,
                        "zoho_id": finding.zoho_id,
                        "moodle_id": finding.moodle_id,
                        "detail": finding.detail,
                    }
                )
        return {"checked": self.checked, "kinds": kinds, "notes": self.notes}


@dataclass(frozen=True)
class _Managed:
    """A linked record whose Moodle side can be compared: no delivery of it is open."""

    zoho_id: str
    moodle_id: int | None
    adopted: bool
    state: str
    detail: dict[str, Any]
    data: dict[str, Any]
    deleted: bool


@dataclass
class _Snapshot:
    by_entity: dict[str, dict[str, _Managed]] = field(default_factory=dict)
    moodle_ids: dict[str, dict[str, int]] = field(default_factory=dict)
    """Entity → Zoho id → Moodle id, for every link (open deliveries included): the targets of
    lookups."""


async def check(
    db: Database,
    settings: Settings,
    tenant: TenantContext,
    *,
    http: httpx.AsyncClient,
    repair: bool,
) -> DriftReport:
    """Compare the tenant's Moodle with what was delivered; with `repair`, queue the deliveries
    that restore Zoho's state. The report is kept as the tenant's last check."""
    client, policy = await asyncio.to_thread(_client, db, settings, tenant, http)
    snapshot = await asyncio.to_thread(_snapshot, db, tenant.id)
    report = DriftReport(tenant.slug)
    started = time.monotonic()
    await _users(client, snapshot, policy, report)
    missing_courses = await _courses(client, snapshot, policy, report)
    await _enrolments(client, snapshot, report, skip_courses=missing_courses)
    if repair and report.findings:
        report.repaired = await asyncio.to_thread(
            drift_repair.repair, db, tenant.id, report.findings
        )
    await asyncio.to_thread(_keep, db, tenant.id, report)
    log.log(
        logging.WARNING if report.findings else logging.INFO,
        "tenant %s: drift check in %.1f s: %d difference(s)%s",
        tenant.slug,
        time.monotonic() - started,
        len(report.findings),
        f", {report.repaired} record(s) queued again" if repair else "",
    )
    return report


def _client(
    db: Database, settings: Settings, tenant: TenantContext, http: httpx.AsyncClient
) -> tuple[MoodleClient, DeliveryPolicy]:
    with db.sessions() as session:
        row = session.get_one(Tenant, tenant.id)
        connection = tenants.moodle_connection(row, settings)
        policy = tenants.delivery_policy(row)
    if connection is None:
        raise ConfigurationError(
            f"tenant {tenant.slug!r} has no Moodle: set MOODLE_URL and MOODLE_TOKEN (or "
            "`zoho-moodle-sync tenant set-moodle`)"
        )
    client = MoodleClient(
        base_url=connection.base_url,
        token=connection.token.get_secret_value(),
        http=http,
        timeout=settings.moodle_timeout_seconds,
        max_input_vars=settings.moodle_max_input_vars,
    )
    return client, policy


def _snapshot(db: Database, tenant_id: int) -> _Snapshot:
    snapshot = _Snapshot()
    with db.sessions() as session:
        open_jobs = {
            (entity, zoho_id)
            for entity, zoho_id in session.execute(
                select(Job.entity, Job.zoho_id).where(
                    Job.tenant_id == tenant_id,
                    Job.kind == JobKind.DELIVER,
                    Job.state.in_([*OPEN_STATES, JobState.RUNNING]),
                )
            )
        }
        for spec, _ in MOODLE_SIDES:
            links = list(
                session.scalars(
                    select(MoodleLink).where(
                        MoodleLink.tenant_id == tenant_id, MoodleLink.entity == spec.key
                    )
                )
            )
            snapshot.moodle_ids[spec.key] = {
                link.zoho_id: link.moodle_id for link in links if link.moodle_id is not None
            }
            table = ENTITY_TABLES[spec.key]
            records = {
                zoho_id: (data, deleted is not None)
                for zoho_id, data, deleted in session.execute(
                    select(table.c.zoho_id, table.c.data, table.c.deleted_at).where(
                        table.c.tenant_id == tenant_id
                    )
                )
            }
            managed = {}
            for link in links:
                record = records.get(link.zoho_id)
                if record is None or (spec.key, link.zoho_id) in open_jobs:
                    continue
                managed[link.zoho_id] = _Managed(
                    link.zoho_id,
                    link.moodle_id,
                    link.adopted,
                    link.state,
                    dict(link.detail),
                    record[0],
                    record[1],
                )
            snapshot.by_entity[spec.key] = managed
    return snapshot


def _entities(kind: MoodleKind) -> list[str]:
    return [spec.key for spec, side in MOODLE_SIDES if side.kind == kind]


def _chunks(values: Sequence[int], size: int = IDS_PER_CALL) -> Iterable[Sequence[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


async def _users(
    client: MoodleClient, snapshot: _Snapshot, policy: DeliveryPolicy, report: DriftReport
) -> None:
    """Users by id: gone, suspended or active against Zoho, or edited by hand."""
    for entity in _entities(MoodleKind.USER):
        linked = {
            m.moodle_id: m
            for m in snapshot.by_entity[entity].values()
            if m.moodle_id is not None and m.state != "removed" and not m.deleted
        }
        found: dict[int, MoodleUser] = {}
        for ids in _chunks(sorted(linked)):
            found |= {u.id: u for u in await client.get_users_by_field("id", list(ids))}
        report.checked[entity] = len(linked)
        shape_of = projection.USER_SHAPES[entity]
        for moodle_id, managed in linked.items():
            user = found.get(moodle_id)
            if user is None or deleted_user(user):
                report.findings.append(
                    Finding("missing_user", entity, managed.zoho_id, moodle_id, "no such user")
                )
                continue
            try:
                shape = shape_of(managed.zoho_id, managed.data, policy)
            except ProjectionError:
                continue  # never delivered as it stands: a data problem, shown elsewhere
            if bool(user.suspended) != shape.suspended:
                kind = "user_suspended" if user.suspended else "user_active"
                report.findings.append(
                    Finding(kind, entity, managed.zoho_id, moodle_id, f"user {user.username}")
                )
            changed = _user_changes(user, shape, adopted=managed.adopted)
            if changed:
                report.findings.append(
                    Finding("user_changed", entity, managed.zoho_id, moodle_id, changed)
                )


def deleted_user(user: MoodleUser) -> bool:
    """Moodle keeps a deleted user's row and still returns it by id, its e-mail replaced by a
    hash (no `@`) and its idnumber emptied."""
    return bool(DELETED_EMAIL.fullmatch(user.email or "")) and not user.idnumber


def _user_changes(user: MoodleUser, shape: projection.UserShape, *, adopted: bool) -> str:
    """What differs, in words: `email is a@x in Moodle, b@x in Zoho`."""
    compared = [
        ("email", (user.email or "").casefold(), shape.email.casefold()),
        ("firstname", unescape_moodle_text(user.firstname or ""), shape.firstname),
        ("lastname", unescape_moodle_text(user.lastname or ""), shape.lastname),
    ]
    if not adopted:  # an adopted account keeps its own username
        compared.append(("username", user.username or "", shape.username))
    return "; ".join(
        f"{name} is {moodle!r} in Moodle, {zoho!r} in Zoho"
        for name, moodle, zoho in compared
        if moodle != zoho
    )


async def _courses(
    client: MoodleClient, snapshot: _Snapshot, policy: DeliveryPolicy, report: DriftReport
) -> set[int]:
    """Categories and courses: gone, or a course in another category. The ids of courses that
    are gone (their enrolments went with them)."""
    for entity in _entities(MoodleKind.CATEGORY):
        linked = {m.moodle_id: m for m in snapshot.by_entity[entity].values() if m.moodle_id}
        if not linked:
            continue
        visible = {category.id for category in await client.get_categories()}
        if not visible:
            report.notes.append(
                "Moodle lists no category to the service user: it lacks "
                "moodle/category:viewcourselist, so categories were not checked"
            )
            continue
        report.checked[entity] = len(linked)
        for moodle_id, managed in linked.items():
            if moodle_id not in visible:
                report.findings.append(
                    Finding(
                        "missing_category", entity, managed.zoho_id, moodle_id, "no such category"
                    )
                )
    gone: set[int] = set()
    for entity in _entities(MoodleKind.COURSE):
        linked = {m.moodle_id: m for m in snapshot.by_entity[entity].values() if m.moodle_id}
        found: dict[int, Course] = {}
        for ids in _chunks(sorted(linked)):
            value = ",".join(str(i) for i in ids)
            found |= {c.id: c for c in await client.get_courses_by_field("ids", value)}
        report.checked[entity] = len(linked)
        program = ENTITY_BY_KEY[entity].field_by_name["program_zoho_id"].lookup
        categories = snapshot.moodle_ids.get(program or "", {})
        for moodle_id, managed in linked.items():
            course = found.get(moodle_id)
            if course is None:
                gone.add(moodle_id)
                report.findings.append(
                    Finding("missing_course", entity, managed.zoho_id, moodle_id, "no such course")
                )
                continue
            program_id = managed.data.get("program_zoho_id")
            expected = categories.get(program_id) if program_id else policy.default_category
            if expected is not None and course.categoryid != expected:
                report.findings.append(
                    Finding(
                        "course_moved",
                        entity,
                        managed.zoho_id,
                        moodle_id,
                        f"course {unescape_moodle_text(course.shortname)} is in category "
                        f"{course.categoryid}, its programme's is {expected}",
                    )
                )
    return gone


async def _enrolments(
    client: MoodleClient, snapshot: _Snapshot, report: DriftReport, *, skip_courses: set[int]
) -> None:
    """Per managed course, who is enrolled and whose enrolment is not active, against the
    enrolments the service made (active, or suspended by the removal policy)."""
    now = int(time.time())
    for entity in _entities(MoodleKind.ENROLMENT):
        by_course: dict[int, list[_Managed]] = defaultdict(list)
        for managed in snapshot.by_entity[entity].values():
            course = managed.detail.get("courseid")
            if managed.state in ("active", "suspended") and course and course not in skip_courses:
                by_course[int(course)].append(managed)
        checked = 0
        for course_id, enrolments in sorted(by_course.items()):
            try:
                everyone = {u.id for u in await client.get_enrolled_users(course_id)}
                inactive = {
                    u.id for u in await client.get_enrolled_users(course_id, onlysuspended=True)
                }
            except MoodleRejected as error:
                report.notes.append(
                    f"the enrolments of course {course_id} could not be read: "
                    f"{error.errorcode}: {error.message}"
                )
                continue
            checked += len(enrolments)
            for managed in enrolments:
                finding = _enrolment_drift(managed, everyone, inactive, now)
                if finding is not None:
                    kind, detail = finding
                    report.findings.append(
                        Finding(kind, entity, managed.zoho_id, managed.moodle_id, detail)
                    )
        report.checked[entity] = checked


def _enrolment_drift(
    managed: _Managed, everyone: set[int], inactive: set[int], now: int
) -> tuple[str, str] | None:
    user, course = int(managed.detail["userid"]), int(managed.detail["courseid"])
    where = f"user {user} in course {course}"
    if user not in everyone:
        return "missing_enrolment", where
    if managed.state == "suspended":
        return None if user in inactive else ("enrolment_active", where)
    start, end = int(managed.detail.get("timestart") or 0), int(managed.detail.get("timeend") or 0)
    within = start <= now and (not end or end > now)
    if within and user in inactive:
        return "enrolment_suspended", where
    return None


def _keep(db: Database, tenant_id: int, report: DriftReport) -> None:
    with db.sessions.begin() as session:
        session.add(
            MoodleCheck(
                tenant_id=tenant_id,
                findings=len(report.findings),
                repaired=report.repaired,
                summary=report.summary(),
            )
        )


def last_checks(session: Session) -> dict[int, MoodleCheck]:
    """Tenant id → its last drift check."""
    newest = select(func.max(MoodleCheck.id).label("id")).group_by(MoodleCheck.tenant_id).subquery()
    rows = session.scalars(select(MoodleCheck).join(newest, newest.c.id == MoodleCheck.id))
    return {row.tenant_id: row for row in rows}
