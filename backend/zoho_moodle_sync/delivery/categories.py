"""Programmes → Moodle course categories."""

from __future__ import annotations

from zoho_moodle_sync import projection
from zoho_moodle_sync.delivery.base import (
    Batch,
    Delivery,
    TenantPaused,
    refused,
    shape_fingerprint,
)
from zoho_moodle_sync.delivery.store import Job, LinkWrite
from zoho_moodle_sync.errors import MoodleAccessDenied, MoodleRejected
from zoho_moodle_sync.jobs.queue import Verdict
from zoho_moodle_sync.moodle import CategoryUpdate, NewCategory

NO_CATEGORY_VISIBLE = "nocategoryvisible"
"""The pause's errorcode when Moodle lists no category at all to the service user."""


class CategoryDelivery(Delivery):
    """Programmes → course categories, found by idnumber before one is created; never deleted."""

    async def _deliver(self, batch: Batch) -> None:
        await self._programs(batch)

    async def _programs(self, batch: Batch) -> None:
        ids = [job.zoho_id for job in batch.jobs]
        entity = batch.entity
        records = await self._records(entity, ids)
        links = await self._links(entity, ids)
        creations = []
        updates = []
        shapes = {}
        unlinked = []
        for job in batch.jobs:
            record, link = records.get(job.zoho_id), links.get(job.zoho_id)
            if record is None or job.action == "remove" or record.deleted:
                batch.decide(job, Verdict("done", "categories are never deleted"))
                continue
            shape = projection.program_category(job.zoho_id, record.data, self.policy)
            shapes[job.id] = shape
            if link is None or link.moodle_id is None:
                unlinked.append(job)
            elif link.fingerprint == shape_fingerprint(shape):
                batch.decide(job, Verdict("done", "already up to date in Moodle"))
            else:
                updates.append((job, link.moodle_id))
        existing = await self._site_categories(batch, unlinked) if unlinked else {}
        for job in unlinked:
            found = existing.get(job.zoho_id)
            if found is not None:
                updates.append((job, found))
                batch.link(LinkWrite(entity, job.zoho_id, found, adopted=True))
            else:
                shape = shapes[job.id]
                creations.append(
                    (
                        job,
                        NewCategory(name=shape.name, idnumber=shape.idnumber, parent=shape.parent),
                    )
                )
        created = await self._each_or_split(
            batch, "core_course_create_categories", creations, self.client.create_categories
        )
        for job, answer in created:
            if isinstance(answer, MoodleRejected):
                batch.decide(job, refused(answer, "creating the category"))
            else:
                fingerprint = shape_fingerprint(shapes[job.id])
                batch.link(
                    LinkWrite(entity, job.zoho_id, answer.id, False, fingerprint=fingerprint)
                )
                batch.decide(job, Verdict("done"))
        changes = [
            (job, CategoryUpdate(id=moodle_id, name=shapes[job.id].name, idnumber=job.zoho_id))
            for job, moodle_id in updates
        ]
        answers = await self._each_or_split(
            batch, "core_course_update_categories", changes, self._update_categories
        )
        category_of = {job.id: moodle_id for job, moodle_id in updates}
        for job, answer in answers:
            moodle_id = category_of[job.id]
            if isinstance(answer, MoodleRejected):
                batch.decide(job, refused(answer, f"updating category {moodle_id}"))
                continue
            adopted = links.get(job.zoho_id) is None or links[job.zoho_id].adopted
            fingerprint = shape_fingerprint(shapes[job.id])
            batch.link(LinkWrite(entity, job.zoho_id, moodle_id, adopted, fingerprint=fingerprint))
            batch.decide(job, Verdict("done"))

    async def _site_categories(self, batch: Batch, jobs: list[Job]) -> dict[str, int]:
        """The site's categories by idnumber, in one call for every programme not yet linked
        (Moodle keeps category idnumbers unique, so a programme's is found or is not there).

        A service user without moodle/category:viewcourselist gets an empty list, with no
        error, so each programme would look missing and be created again at every delivery.
        Every site has a category, so a site that lists none is that case: delivery pauses
        instead, until the role is fixed."""
        visible = await self._call(
            batch, "core_course_get_categories", jobs, lambda: self.client.get_categories()
        )
        if not visible:
            raise TenantPaused(
                MoodleAccessDenied(
                    errorcode=NO_CATEGORY_VISIBLE,
                    message="Moodle lists no category at all to the service user: its role "
                    "lacks moodle/category:viewcourselist (held by Authenticated user by "
                    "default), so existing programme categories cannot be found and would be "
                    "created again; no category is created until it is granted",
                    function="core_course_get_categories",
                )
            )
        return {category.idnumber: category.id for category in visible if category.idnumber}

    async def _update_categories(self, updates: list[CategoryUpdate]) -> list[None]:
        await self.client.update_categories(updates)
        return [None] * len(updates)
