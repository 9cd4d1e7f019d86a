"""Enrolments → Moodle manual student enrolments, and removals by the removal policy."""

from __future__ import annotations

import time
from typing import Any

from zoho_moodle_sync import projection
from zoho_moodle_sync.delivery.base import (
    Batch,
    Delivery,
    Removal,
    held_message,
    refused,
    removal,
)
from zoho_moodle_sync.delivery.store import Job, LinkWrite
from zoho_moodle_sync.errors import MoodleRejected
from zoho_moodle_sync.jobs.queue import Verdict
from zoho_moodle_sync.moodle import Enrolment


class EnrolmentDelivery(Delivery):
    """Enrolments → manual student enrolments; deleted ones follow the removal policy, and an
    end of access (by Zoho's dates, when the tenant uses them) goes through the guard."""

    async def _deliver(self, batch: Batch) -> None:
        await self._enrollments(batch)

    async def _enrollments(self, batch: Batch) -> None:
        ids = [job.zoho_id for job in batch.jobs]
        entity = batch.entity
        records = await self._records(entity, ids)
        links = await self._links(entity, ids)
        students = await self._links(
            self.target(entity, "student_zoho_id"),
            [r.data["student_zoho_id"] for r in records.values()],
        )
        classes = await self._links(
            self.target(entity, "class_zoho_id"),
            [r.data["class_zoho_id"] for r in records.values()],
        )
        role = self.policy.role_id(self.policy.student_role)
        enrol: list[tuple[Job, Enrolment]] = []
        removals: list[Removal] = []
        ending: list[Job] = []
        targets: dict[int, dict[str, Any]] = {}
        now = int(time.time())
        for job in batch.jobs:
            record, link = records.get(job.zoho_id), links.get(job.zoho_id)
            if record is None:
                batch.decide(job, Verdict("done", "the record is not stored"))
                continue
            made = link.detail if link is not None and link.state != "removed" else None
            if job.action == "remove" or record.deleted:
                if made is None or self.policy.removal_policy == "keep":
                    batch.decide(job, Verdict("done", "no enrolment of ours to remove"))
                else:
                    removals.append(removal(job, made))
                continue
            student = students.get(record.data["student_zoho_id"])
            course = classes.get(record.data["class_zoho_id"])
            if student is None or student.moodle_id is None:
                batch.decide(
                    job,
                    Verdict(
                        "wait", f"student {record.data['student_zoho_id']} is not in Moodle yet"
                    ),
                )
                continue
            if course is None or course.moodle_id is None:
                batch.decide(
                    job,
                    Verdict("wait", f"class {record.data['class_zoho_id']} is not in Moodle yet"),
                )
                continue
            times = projection.enrolment_times(record.data, self.policy)
            target = {
                "userid": student.moodle_id,
                "courseid": course.moodle_id,
                "roleid": role,
                "timestart": times.timestart,
                "timeend": times.timeend,
            }
            targets[job.id] = target
            if link is not None and link.state == "active" and link.detail == target:
                batch.decide(job, Verdict("done", "already up to date in Moodle"))
                continue
            if made is not None and (made["userid"], made["courseid"]) != (
                target["userid"],
                target["courseid"],
            ):
                removals.append(removal(job, made))
            active = made if link is not None and link.state == "active" else None
            if _ends_access(target, active, now):
                ending.append(job)
            enrol.append((job, Enrolment(**target, suspend=False)))

        replaced = {job.id for job, *_ in removals if job.id in targets}
        to_remove = [r for r in removals if r[0].id not in targets]
        # An end date already past ends access as surely as a removal: the guard judges both.
        guarded = [job for job, *_ in to_remove] + ending
        unconfirmed = guarded and not all(job.confirmed for job in guarded)
        held = bool(unconfirmed) and not await self._guard_allows(entity, len(guarded))
        if held:
            for job in guarded:
                batch.decide(job, Verdict("hold", held_message(len(guarded), entity)))
        if not held:
            done = await self._remove_enrolments(batch, to_remove)
            for job, state in done.items():
                link = links[job.zoho_id]
                batch.link(
                    LinkWrite(entity, job.zoho_id, None, False, state=state, detail=link.detail)
                )
                batch.decide(job, Verdict("done"))
        await self._remove_enrolments(batch, [r for r in removals if r[0].id in replaced])

        if held:
            enrol = [(job, enrolment) for job, enrolment in enrol if job not in ending]
        answers = await self._each_or_split(batch, "enrol_manual_enrol_users", enrol, self._enrol)
        for job, answer in answers:
            if isinstance(answer, MoodleRejected):
                batch.decide(job, refused(answer, "enrolling the student"))
                continue
            batch.link(LinkWrite(entity, job.zoho_id, None, False, detail=targets[job.id]))
            batch.decide(job, Verdict("done"))


def _ends_access(target: dict[str, Any], active: dict[str, Any] | None, now: int) -> bool:
    """Whether enrolling with `target` ends a student's access now: its end time is past
    while the active enrolment the service made (`active`) had no end or one still to come.
    A new enrolment that has already ended takes nobody's access away."""
    end = target["timeend"]
    if active is None or not end or end > now:
        return False
    before = active.get("timeend")
    return not before or before > now
