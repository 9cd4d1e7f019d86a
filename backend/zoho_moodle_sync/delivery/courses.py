"""Classes → Moodle courses, and each class teacher enrolled as editing teacher."""

from __future__ import annotations

from typing import Any

from zoho_moodle_sync import projection
from zoho_moodle_sync.delivery import store
from zoho_moodle_sync.delivery.base import Batch, Delivery, refused, shape_fingerprint
from zoho_moodle_sync.delivery.store import Job, Link, LinkWrite
from zoho_moodle_sync.errors import MoodleRejected
from zoho_moodle_sync.jobs.queue import Verdict
from zoho_moodle_sync.moodle import (
    Course,
    CourseUpdate,
    Enrolment,
    MoodleWarning,
    NewCourse,
    unescape_moodle_text,
)

TAKEN = frozenset({"shortnametaken", "courseidnumbertaken"})
"""Moodle's refusals of a new course whose short name or idnumber another course has."""


class CourseDelivery(Delivery):
    """Classes → courses in their programme's category, with the class teacher enrolled as
    editing teacher. An unlinked class's course is looked for (idnumber, then short name) in
    its category when the service did not make that category, with one call per category;
    in a category it made, the course is created at once, and only a refusal for a taken short
    name or idnumber looks the other course up elsewhere and takes it over."""

    async def _deliver(self, batch: Batch) -> None:
        await self._classes(batch)

    async def _classes(self, batch: Batch) -> None:
        ids = [job.zoho_id for job in batch.jobs]
        entity = batch.entity
        records = await self._records(entity, ids)
        links = await self._links(entity, ids)
        programs = await self._links(
            self.target(entity, "program_zoho_id"),
            [r.data["program_zoho_id"] for r in records.values() if r.data.get("program_zoho_id")],
        )
        shapes: dict[int, projection.CourseShape] = {}
        courses: dict[int, int] = {}
        adopted: dict[int, bool] = {}
        creations = []
        updates = []
        # Categories the service made hold only courses it made: no look-up there.
        made_here = {p.moodle_id for p in programs.values() if p.moodle_id and not p.adopted}
        in_category: dict[int, list[Course]] = {}
        # One course per class: a course found for a class is not taken over by another class
        # of the batch with the same short name (a course made by hand, without idnumber).
        owner = {link.moodle_id: zoho_id for zoho_id, link in links.items() if link.moodle_id}

        def take(job: Job, course: int) -> bool:
            if owner.setdefault(course, job.zoho_id) == job.zoho_id:
                return True
            batch.decide(
                job,
                Verdict(
                    "dead",
                    f"short name {shapes[job.id].shortname!r} is the one of Moodle course "
                    f"{course}, already taken by class {owner[course]}; give the class another "
                    "Class_Short_Name",
                    "shortnametaken",
                ),
            )
            return False

        for job in batch.jobs:
            record, link = records.get(job.zoho_id), links.get(job.zoho_id)
            if record is None or job.action == "remove" or record.deleted:
                batch.decide(job, Verdict("done", "courses are never deleted"))
                continue
            program_id = record.data.get("program_zoho_id")
            if program_id:
                program = programs.get(program_id)
                if program is None or program.moodle_id is None:
                    batch.decide(
                        job, Verdict("wait", f"programme {program_id} is not in Moodle yet")
                    )
                    continue
                category = program.moodle_id
            else:
                category = self.policy.default_category
            shape = projection.class_course(job.zoho_id, record.data, category, self.policy)
            shapes[job.id] = shape
            if link is not None and link.moodle_id is not None:
                courses[job.id] = link.moodle_id
                adopted[job.id] = link.adopted
                if link.fingerprint != shape_fingerprint(shape):
                    updates.append((job, link.moodle_id))
                continue
            existing = None
            if category not in made_here:
                if category not in in_category:
                    in_category[category] = await self._courses_in(batch, job, category)
                existing = self._match(batch, job, shape, in_category[category])
            if batch.decided(job) or (existing is not None and not take(job, existing)):
                continue
            if existing is not None:
                courses[job.id] = existing
                adopted[job.id] = True
                updates.append((job, existing))
            else:
                creations.append((job, NewCourse(**_course_fields(shape))))
        created = await self._each_or_split(
            batch, "core_course_create_courses", creations, self.client.create_courses
        )
        for job, answer in created:
            if isinstance(answer, MoodleRejected) and answer.errorcode in TAKEN:
                # A course of this class elsewhere (moved by hand, or made before its link
                # was lost): found by idnumber or short name, and taken over.
                existing = await self._find_course(batch, job, shapes[job.id])
                if existing is not None and take(job, existing):
                    courses[job.id] = existing
                    adopted[job.id] = True
                    updates.append((job, existing))
                    continue
            if batch.decided(job):
                continue
            if isinstance(answer, MoodleRejected):
                batch.decide(job, refused(answer, f"creating course {shapes[job.id].shortname}"))
            else:
                owner[answer.id] = job.zoho_id
                courses[job.id] = answer.id
                adopted[job.id] = False
        changes = [
            (job, CourseUpdate(id=course, **_course_fields(shapes[job.id])))
            for job, course in updates
        ]
        answers = await self._each_or_split(
            batch, "core_course_update_courses", changes, self._update_courses
        )
        for job, answer in answers:
            if isinstance(answer, MoodleRejected):
                batch.decide(job, refused(answer, f"updating course {courses[job.id]}"))
            elif answer is not None and answer.warningcode == "invalidrecord":
                batch.link(LinkWrite(batch.entity, job.zoho_id, None, False, drop=True))
                batch.decide(job, Verdict("relink", f"Moodle course {courses[job.id]} is gone"))
            elif answer is not None:
                batch.decide(job, Verdict("dead", answer.message, answer.warningcode))
        await self._class_teachers(batch, records, links, shapes, courses, adopted)

    async def _courses_in(self, batch: Batch, job: Job, category: int) -> list[Course]:
        """The courses of a category the service did not make (one call for all its classes)."""
        return await self._call(
            batch,
            "core_course_get_courses_by_field",
            [job],
            lambda: self.client.get_courses_by_field("category", category),
        )

    def _match(
        self, batch: Batch, job: Job, shape: projection.CourseShape, courses: list[Course]
    ) -> int | None:
        """The course of `courses` that is this class's: its idnumber, else its short name
        unless that course is another record's."""
        for course in courses:
            if course.idnumber == shape.idnumber:
                return course.id
        for course in courses:
            if unescape_moodle_text(course.shortname) == shape.shortname:
                if course.idnumber and course.idnumber != shape.idnumber:
                    batch.decide(job, _shortname_taken(shape, course))
                    return None
                return course.id
        return None

    async def _find_course(
        self, batch: Batch, job: Job, shape: projection.CourseShape
    ) -> int | None:
        """An existing course for the class: by idnumber, then by shortname if that course has
        no idnumber of another record."""
        by_idnumber = await self._call(
            batch,
            "core_course_get_courses_by_field",
            [job],
            lambda: self.client.get_courses_by_field("idnumber", shape.idnumber),
        )
        if by_idnumber:
            return by_idnumber[0].id
        by_shortname = await self._call(
            batch,
            "core_course_get_courses_by_field",
            [job],
            lambda: self.client.get_courses_by_field("shortname", shape.shortname),
        )
        if not by_shortname:
            return None
        course = by_shortname[0]
        if course.idnumber and course.idnumber != shape.idnumber:
            batch.decide(job, _shortname_taken(shape, course))
            return None
        return course.id

    async def _update_courses(self, updates: list[CourseUpdate]) -> list[MoodleWarning | None]:
        warnings = await self.client.update_courses(updates)
        by_id = {warning.itemid: warning for warning in warnings}
        return [by_id.get(update.id) for update in updates]

    async def _class_teachers(
        self,
        batch: Batch,
        records: dict[str, store.StoredRecord],
        links: dict[str, Link],
        shapes: dict[int, projection.CourseShape],
        courses: dict[int, int],
        adopted: dict[int, bool],
    ) -> None:
        """Enrol each class's teacher as editing teacher; a replaced teacher follows the removal
        policy. The course part is kept even when the teacher is not in Moodle yet."""
        pending = [job for job in batch.jobs if job.id in courses and not batch.decided(job)]
        teacher_ids = [
            records[job.zoho_id].data["teacher_zoho_id"]
            for job in pending
            if records[job.zoho_id].data.get("teacher_zoho_id")
        ]
        teachers = await self._links(self.target(batch.entity, "teacher_zoho_id"), teacher_ids)
        role = self.policy.role_id(self.policy.teacher_role)
        previous_teacher: dict[int, int | None] = {}
        enrol: list[tuple[Job, Enrolment]] = []
        drop: list[tuple[Job, int]] = []
        wanted_teacher: dict[int, int | None] = {}
        for job in pending:
            before = (links.get(job.zoho_id) or Link(None, False, "active", {}, None)).detail
            previous = before.get("teacher_userid")
            previous_teacher[job.id] = previous
            teacher_zoho = records[job.zoho_id].data.get("teacher_zoho_id")
            teacher_link = teachers.get(teacher_zoho) if teacher_zoho else None
            if teacher_zoho and (teacher_link is None or teacher_link.moodle_id is None):
                batch.decide(job, Verdict("wait", f"teacher {teacher_zoho} is not in Moodle yet"))
                continue
            current = teacher_link.moodle_id if teacher_link else None
            wanted_teacher[job.id] = current
            if current is not None and current != previous:
                enrol.append(
                    (
                        job,
                        Enrolment(
                            roleid=role, userid=current, courseid=courses[job.id], suspend=False
                        ),
                    )
                )
            if previous is not None and previous != current:
                drop.append((job, previous))
        enrolled = await self._each_or_split(batch, "enrol_manual_enrol_users", enrol, self._enrol)
        for job, answer in enrolled:
            if isinstance(answer, MoodleRejected):
                batch.decide(job, refused(answer, "enrolling the teacher"))
        removals = [(job, previous) for job, previous in drop if not batch.decided(job)]
        await self._remove_enrolments(
            batch,
            [(job, previous, courses[job.id], role, None, None) for job, previous in removals],
        )
        for job in pending:
            verdict = batch.settlement.verdicts.get(job.id)
            teacher = wanted_teacher.get(job.id) if verdict is None else previous_teacher[job.id]
            batch.link(
                LinkWrite(
                    batch.entity,
                    job.zoho_id,
                    courses[job.id],
                    adopted[job.id],
                    detail={"teacher_userid": teacher},
                    # Only a fully delivered class may skip its next update.
                    fingerprint=shape_fingerprint(shapes[job.id]) if verdict is None else None,
                )
            )
            batch.decide(job, Verdict("done"))


def _shortname_taken(shape: projection.CourseShape, course: Course) -> Verdict:
    return Verdict(
        "dead",
        f"short name {shape.shortname!r} is taken by Moodle course {course.id} "
        f"(idnumber {course.idnumber!r}); give the class another Class_Short_Name",
        "shortnametaken",
    )


def _course_fields(shape: projection.CourseShape) -> dict[str, Any]:
    return {
        "fullname": shape.fullname,
        "shortname": shape.shortname,
        "idnumber": shape.idnumber,
        "categoryid": shape.categoryid,
        "startdate": shape.startdate,
        "enddate": shape.enddate,
    }
