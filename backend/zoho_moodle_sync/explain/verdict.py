"""The verdict on one record, in plain words: is it in Moodle as Zoho has it, and if not, the
first reason why, following the chain (an enrolment waits for its class, whose course Moodle
refused). Pure: it reads the facts it is given and asks for those of related records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from zoho_moodle_sync.db.jobs import Job, JobState
from zoho_moodle_sync.entities import ENTITY_BY_KEY, EntitySpec, MoodleKind
from zoho_moodle_sync.explain.facts import RecordFacts, Wait
from zoho_moodle_sync.explain.models import Status

SERVICE_CODES = frozenset(
    {"ambiguous_user", "user_taken", "invalid_for_moodle", "internal_error", "unavailable"}
)
"""Errorcodes the service gives itself (not Moodle's)."""
_NOUN = {
    MoodleKind.USER: "account",
    MoodleKind.CATEGORY: "category",
    MoodleKind.COURSE: "course",
    MoodleKind.ENROLMENT: "enrolment",
}
_MOODLE_ID = {MoodleKind.USER: "user", MoodleKind.CATEGORY: "category", MoodleKind.COURSE: "course"}
_ARRIVED = {
    "never_arrived": "which has never arrived from Zoho",
    "parked": "which has arrived but waits itself for another record",
    "stored": "which is stored now (the record is released within seconds)",
}


@dataclass(frozen=True)
class Context:
    """What a verdict needs beyond the record: the tenant's delivery pause, whether its Moodle
    is configured, and the facts of another record (`facts_of(entity, zoho_id)`)."""

    paused: str | None
    moodle_configured: bool
    facts_of: Callable[[EntitySpec, str], RecordFacts]


@dataclass(frozen=True)
class Judgement:
    status: Status
    verdict: str


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "an unknown time"


def short(zoho_id: str) -> str:
    """A Zoho id as a person reads it in a sentence: its first digits (the id stays whole in
    the facts beside)."""
    return zoho_id if len(zoho_id) <= 8 else zoho_id[:4] + "…"


def subject(facts: RecordFacts) -> str:
    """The record as its verdict names it: a student by number, others by label and name."""
    if facts.spec.key == "students":
        number = facts.data.get("student_number")
        return str(number) if number else f"student {facts.name}"
    name = facts.name
    return f"{facts.spec.label} '{name}'" if name != facts.zoho_id else f"{facts.spec.label} {name}"


def error_words(error: str | None, errorcode: str | None) -> str:
    """A job's error without the step prefix (`creating user x: Moodle refused: `)."""
    text = (error or errorcode or "no reason was recorded").strip()
    return text.split(": Moodle refused: ", 1)[-1]


def wait_words(wait: Wait) -> str:
    label = ENTITY_BY_KEY[wait.entity].label
    if wait.state == "invalid":
        errors = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in wait.errors)
        return f"{label} {short(wait.zoho_id)}, which arrived from Zoho only invalid ({errors})"
    return f"{label} {short(wait.zoho_id)} {_ARRIVED[wait.state]}"


def judge(facts: RecordFacts, context: Context) -> Judgement:
    side = facts.spec.moodle
    if facts.row is None:
        status, reason = _not_stored(facts)
        kind = side.kind if side else None
        return Judgement(status, _negative(facts, kind, reason, context))
    if side is None:
        state = "deleted in Zoho" if facts.deleted_at else "stored"
        return Judgement(
            "deleted" if facts.deleted_at else "not_for_moodle",
            f"{subject(facts)} is {state}; {facts.spec.label}s are kept for reporting and do "
            "not go to Moodle",
        )
    if facts.deleted_at is not None:
        return _deleted(facts, side.kind, context)
    job = facts.current_job
    if job is not None and job.state == JobState.DEAD:
        return Judgement("refused", _negative(facts, side.kind, _refusal(job, side.kind), context))
    if job is not None and job.state == JobState.HELD:
        reason = "the mass-change guard holds its change until someone confirms it"
        return Judgement("held", _negative(facts, side.kind, reason, context))
    link = facts.link
    if link is not None and (link.moodle_id is not None or side.kind == MoodleKind.ENROLMENT):
        return _in_moodle(facts, side.kind, context)
    missing = _missing_prerequisite(facts, context)
    if missing is not None:
        return Judgement("waiting", _negative(facts, side.kind, missing, context))
    if job is None:
        reason = "no delivery has been queued for it"
        return Judgement("not_sent", _negative(facts, side.kind, reason, context))
    if job.state == JobState.WAITING:
        reason = f"its delivery waits: {job.wait_reason or 'for another record'}"
        return Judgement("waiting", _negative(facts, side.kind, reason, context))
    return Judgement("on_its_way", _negative(facts, side.kind, _queued(job, context), context))


def _not_stored(facts: RecordFacts) -> tuple[Status, str]:
    if facts.parked is not None:
        waits = " and ".join(wait_words(wait) for wait in facts.waits)
        return "waiting", f"the {facts.spec.label} waits for {waits or 'its dependencies'}"
    last = facts.outcomes[0] if facts.outcomes else None
    errors = "; ".join(
        f"{e.get('field')}: {e.get('message')}"
        for e in ((last.detail or {}) if last else {}).get("errors", [])
    )
    return "invalid", (
        f"its last version from Zoho was refused as invalid ({errors or 'unreadable'}); "
        "it is stored once Zoho sends it corrected"
    )


def _negative(facts: RecordFacts, kind: MoodleKind | None, reason: str, context: Context) -> str:
    if kind == MoodleKind.ENROLMENT:
        student, course = _enrolment_names(facts, context)
        return f"{student} is not in {course} because {reason}"
    if kind is None:
        return f"{subject(facts)} is not stored because {reason}"
    return f"{subject(facts)} has no Moodle {_NOUN[kind]} because {reason}"


def _enrolment_names(facts: RecordFacts, context: Context) -> tuple[str, str]:
    """The enrolment's student (by number) and class (by name, quoted) as a sentence names
    them, from the stored records or, when they never arrived, the names Zoho sent."""
    names = []
    for field_name in ("student_zoho_id", "class_zoho_id"):
        spec_field = facts.spec.field_by_name[field_name]
        target = ENTITY_BY_KEY[spec_field.lookup or ""]
        zoho_id = facts.data.get(field_name) or _waited_id(facts, target.key)
        known = context.facts_of(target, str(zoho_id)) if zoho_id else None
        if known is not None and known.row is not None:
            names.append(subject(known) if target.key == "students" else f"'{known.name}'")
        elif facts.lookup_names.get(field_name):
            name = facts.lookup_names[field_name]
            names.append(name if target.key == "students" else f"'{name}'")
        else:
            names.append(f"{target.label} {short(str(zoho_id))}" if zoho_id else target.label)
    return names[0], names[1]


def _waited_id(facts: RecordFacts, entity: str) -> str | None:
    if facts.parked is None:
        return None
    return next((w["zoho_id"] for w in facts.parked.waiting_for if w["entity"] == entity), None)


def _refusal(job: Job, kind: MoodleKind) -> str:
    words = error_words(job.last_error, job.last_errorcode)
    if job.last_errorcode in SERVICE_CODES:
        return f"its delivery stopped: {words}"
    return f"Moodle refused the {_NOUN[kind]}: {words}"


def _queued(job: Job, context: Context) -> str:
    reason = f"its delivery is queued (job {job.id})"
    if job.attempts and job.last_error:
        reason += (
            f"; attempt {job.attempts} failed ({error_words(job.last_error, job.last_errorcode)}),"
            f" the next is due at {when(job.due_at)}"
        )
    if not context.moodle_configured:
        reason += ", but this tenant's Moodle is not configured (MOODLE_URL, tenant set-moodle)"
    elif context.paused:
        reason += f", but delivery to Moodle is paused: {context.paused}"
    return reason


def _missing_prerequisite(facts: RecordFacts, context: Context) -> str | None:
    """For a record Moodle needs others for (an enrolment's user and course, a course's
    category): the first of them that is not in Moodle, and why."""
    side = facts.spec.moodle
    assert side is not None
    for field_name, _ in side.needs:
        target = ENTITY_BY_KEY[facts.spec.field_by_name[field_name].lookup or ""]
        zoho_id = facts.data.get(field_name)
        if not zoho_id:
            continue
        other = context.facts_of(target, str(zoho_id))
        judged = judge(other, context)
        if judged.status in ("in_moodle", "suspended"):
            continue
        noun = _NOUN[target.moodle.kind] if target.moodle else "record"
        owner = "its student" if target.key == "students" else f"its {target.label}"
        return f"{owner} {subject(other)} has no Moodle {noun}: " + _reason_of(judged.verdict)
    return None


def _reason_of(verdict: str) -> str:
    return verdict.split(" because ", 1)[-1]


def _in_moodle(facts: RecordFacts, kind: MoodleKind, context: Context) -> Judgement:
    link = facts.link
    assert link is not None
    job = facts.current_job
    open_job = job is not None and job.state in (JobState.PENDING, JobState.RUNNING, "waiting")
    tail = f"; a newer change is queued (job {job.id})" if open_job and job else " and up to date"
    if open_job and not context.moodle_configured:
        tail += ", but this tenant's Moodle is not configured"
    elif open_job and context.paused:
        tail += f", but delivery is paused: {context.paused}"
    if kind == MoodleKind.ENROLMENT:
        student, course = _enrolment_names(facts, context)
        where = f"{course} (Moodle course {link.detail.get('courseid')})"
        if link.state == "suspended":
            return Judgement(
                "suspended",
                f"{student} is enrolled in {where} but suspended by the removal policy",
            )
        if link.state == "removed":
            return Judgement(
                "removed", f"{student} is not in {course}: the removal policy unenrolled them"
            )
        return Judgement(
            "on_its_way" if open_job else "in_moodle", f"{student} is in {where}{tail}"
        )
    what = f"{_MOODLE_ID[kind]} {link.moodle_id}"
    if kind == MoodleKind.USER and link.state == "suspended":
        status = facts.data.get("status")
        why = f" as Zoho's status '{status}' asks" if status else ""
        return Judgement(
            "suspended", f"{subject(facts)} is in Moodle ({what}), suspended{why}{tail}"
        )
    return Judgement(
        "on_its_way" if open_job else "in_moodle", f"{subject(facts)} is in Moodle ({what}){tail}"
    )


def _deleted(facts: RecordFacts, kind: MoodleKind, context: Context) -> Judgement:
    link, job = facts.link, facts.current_job
    head = f"{subject(facts)} was deleted in Zoho on {when(facts.deleted_at)}"
    if job is not None and job.state == JobState.HELD:
        return Judgement("held", f"{head}; the mass-change guard holds the change in Moodle")
    if job is not None and job.state == JobState.DEAD:
        return Judgement("refused", f"{head}; {_refusal(job, kind)}")
    if job is not None and job.state in (JobState.PENDING, JobState.RUNNING, JobState.WAITING):
        return Judgement("on_its_way", f"{head}; {_queued(job, context)}")
    if link is None:
        return Judgement("deleted", f"{head}; it never reached Moodle")
    if kind in (MoodleKind.CATEGORY, MoodleKind.COURSE):
        return Judgement(
            "deleted",
            f"{head}; Moodle keeps its {_NOUN[kind]} {link.moodle_id} (never deleted: it holds "
            "courses, grades and submissions)",
        )
    made = {"suspended": "suspended", "removed": "removed", "active": "left as it was"}
    place = "account" if kind == MoodleKind.USER else "enrolment"
    return Judgement(
        "suspended"
        if link.state == "suspended"
        else "removed"
        if link.state == "removed"
        else "deleted",
        f"{head}; the removal policy {made.get(link.state, link.state)} its Moodle {place}",
    )
