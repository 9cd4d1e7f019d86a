"""Delivering claimed jobs of one tenant to its Moodle: batched calls in dependency order, lookup
before create, split of failed all-or-nothing batches, and a verdict for every job.

Every step is idempotent against Moodle (existing objects are found by idnumber before anything
is created, enrolling twice is harmless), so a batch that is delivered again after a crash
neither duplicates nor loses a change.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from zoho_moodle_sync import projection
from zoho_moodle_sync.db.base import utcnow
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.errors import MoodleAccessDenied, MoodleRejected, MoodleUnavailable
from zoho_moodle_sync.jobs import queue
from zoho_moodle_sync.jobs.queue import Verdict
from zoho_moodle_sync.moodle import (
    CategoryCriterion,
    CategoryUpdate,
    CourseUpdate,
    Enrolment,
    MoodleClient,
    MoodleUser,
    MoodleWarning,
    NewCategory,
    NewCourse,
    NewUser,
    Unenrolment,
    UserUpdate,
    encode_moodle_params,
)
from zoho_moodle_sync.projection import DeliveryPolicy, ProjectionError, UserShape
from zoho_moodle_sync.settings import Settings
from zoho_moodle_sync.worker import claims
from zoho_moodle_sync.worker.claims import CallRecord, Job, Link, LinkWrite, Settlement

log = logging.getLogger(__name__)

USER_ENTITIES = ("students", "teachers")
LOOKUP_VALUES_PER_CALL = 1000
"""Values per core_user_get_users_by_field call (a few KB of form data, a fast indexed query)."""
_USERS = TypeAdapter(list[MoodleUser])
USER_GONE = frozenset({"invaliduserid", "usernotupdateddeleted"})
"""Warnings of core_user_update_users for a linked user who no longer exists (a deleted user
stays in Moodle's table with `deleted` set)."""
Removal = tuple[Job, int, int, int, int | None, int | None]
"""An enrolment the service made, for the removal policy: job, user, course, role, and its
start and end times when it has them."""
_T = TypeVar("_T")
_P = TypeVar("_P")


def shape_fingerprint(shape: Any) -> str:
    """What was last sent to Moodle for a record, so an unchanged record costs no call."""
    canonical = json.dumps(asdict(shape), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class TenantPaused(Exception):
    """Moodle refused the token or a capability: stop the tenant's delivery."""

    def __init__(self, error: MoodleAccessDenied) -> None:
        super().__init__(str(error))
        self.error = error


class LeaseLost(Exception):
    """Another worker holds some of the batch's jobs now (this one was too slow): stop before
    the next call, so that Moodle gets each change from one worker only."""


@dataclass
class Batch:
    """The jobs of one entity delivered together, and what was decided about them."""

    entity: str
    jobs: list[Job]
    settlement: Settlement

    def decide(self, job: Job, verdict: Verdict) -> None:
        self.settlement.verdicts.setdefault(job.id, verdict)

    def decided(self, job: Job) -> bool:
        return job.id in self.settlement.verdicts

    def link(self, write: LinkWrite) -> None:
        self.settlement.links.append(write)


class TenantDelivery:
    """Delivers one tenant's claimed jobs; one instance per claim."""

    def __init__(
        self,
        *,
        db: Database,
        tenant_id: int,
        policy: DeliveryPolicy,
        client: MoodleClient,
        settings: Settings,
        worker_id: str | None = None,
    ) -> None:
        self.db = db
        self.tenant_id = tenant_id
        self.policy = policy
        self.client = client
        self.settings = settings
        self.worker_id = worker_id

    # ---- database reads, off the event loop -------------------------------------------------

    async def _records(self, entity: str, ids: Sequence[str]) -> dict[str, claims.StoredRecord]:
        def read() -> dict[str, claims.StoredRecord]:
            with self.db.sessions() as session:
                return claims.load_records(
                    session, tenant_id=self.tenant_id, entity=entity, zoho_ids=ids
                )

        return await asyncio.to_thread(read)

    async def _links(self, entity: str, ids: Sequence[str]) -> dict[str, Link]:
        def read() -> dict[str, Link]:
            with self.db.sessions() as session:
                return claims.load_links(
                    session, tenant_id=self.tenant_id, entity=entity, zoho_ids=ids
                )

        return await asyncio.to_thread(read) if ids else {}

    async def _guard_allows(self, entity: str, removals: int) -> bool:
        """The mass-change guard: may this many removals of `entity` go ahead unconfirmed?

        Removals made within the policy's window count too, so a mass removal arriving one
        record at a time (one webhook each) is held as surely as one arriving in a batch."""
        since = utcnow() - timedelta(minutes=self.policy.mass_change_window_minutes)

        def read() -> tuple[int, int]:
            with self.db.sessions() as session:
                return (
                    claims.active_links(session, tenant_id=self.tenant_id, entity=entity),
                    claims.removed_links(
                        session, tenant_id=self.tenant_id, entity=entity, since=since
                    ),
                )

        active, recent = await asyncio.to_thread(read)
        base = active + recent
        limit = max(self.policy.mass_change_min, int(base * self.policy.mass_change_share))
        return removals + recent <= limit

    # ---- calls ------------------------------------------------------------------------------

    async def _call(
        self, batch: Batch, function: str, jobs: Sequence[Job], send: Callable[[], Awaitable[_T]]
    ) -> _T:
        """Make one Moodle call for `jobs`, log it, and turn access refusals into a pause."""
        started = time.monotonic()
        try:
            result = await send()
        except MoodleRejected as error:
            self._log_call(batch, function, jobs, started, error.errorcode, error.message)
            if isinstance(error, MoodleAccessDenied):
                raise TenantPaused(error) from None
            raise
        except MoodleUnavailable as error:
            self._log_call(batch, function, jobs, started, "unavailable", str(error))
            raise
        self._log_call(batch, function, jobs, started, None, None)
        return result

    def _log_call(
        self,
        batch: Batch,
        function: str,
        jobs: Sequence[Job],
        started: float,
        errorcode: str | None,
        message: str | None,
    ) -> None:
        batch.settlement.calls.append(
            CallRecord(
                function=function,
                items=len(jobs),
                job_ids=[job.id for job in jobs],
                ok=errorcode is None,
                errorcode=errorcode,
                message=message,
                duration_ms=int((time.monotonic() - started) * 1000),
            )
        )

    async def _each_or_split(
        self,
        batch: Batch,
        function: str,
        items: Sequence[tuple[Job, _P]],
        send: Callable[[list[_P]], Awaitable[list[Any]]],
    ) -> list[tuple[Job, Any]]:
        """Send `items` in calls of at most the batch size that stay within max_input_vars; a
        call Moodle refuses as a whole is split in halves until the refused items are alone, so
        good items still go through."""
        results: list[tuple[Job, Any]] = []
        for index, chunk in enumerate(self._calls_of(items)):
            if index:
                await self._keep_lease(batch)
            results += await self._split(batch, function, chunk, send)
        return results

    async def _keep_lease(self, batch: Batch) -> None:
        """Between the calls of a long batch: extend the lease, or stop if it was lost."""
        if self.worker_id is None:
            return
        worker_id = self.worker_id
        held = await asyncio.to_thread(
            lambda: queue.renew(
                self.db,
                worker_id=worker_id,
                jobs=batch.jobs,
                lease_seconds=self.settings.worker_lease_seconds,
            )
        )
        if len(held) < len(batch.jobs):
            raise LeaseLost(f"{len(batch.jobs) - len(held)} job(s) of the batch were taken over")

    def _calls_of(self, items: Sequence[tuple[Job, _P]]) -> list[list[tuple[Job, _P]]]:
        """`items` cut into calls of at most the batch size whose form fields fit in
        max_input_vars: PHP silently drops the variables past it."""
        calls: list[list[tuple[Job, _P]]] = []
        fields = 0
        for item in items:
            size = len(encode_moodle_params({"item": item[1]}))
            if not calls or (
                len(calls[-1]) == self.settings.worker_batch_size
                or fields + size > self.settings.moodle_max_input_vars
            ):
                calls.append([])
                fields = 0
            calls[-1].append(item)
            fields += size
        return calls

    async def _split(
        self,
        batch: Batch,
        function: str,
        items: list[tuple[Job, _P]],
        send: Callable[[list[_P]], Awaitable[list[Any]]],
    ) -> list[tuple[Job, Any]]:
        """Each item's answer, or the MoodleRejected that refused it alone."""
        if not items:
            return []
        jobs = [job for job, _ in items]
        try:
            answers = await self._call(batch, function, jobs, lambda: send([p for _, p in items]))
        except MoodleRejected as error:
            if len(items) == 1:
                return [(items[0][0], error)]
            middle = len(items) // 2
            return await self._split(batch, function, items[:middle], send) + await self._split(
                batch, function, items[middle:], send
            )
        return list(zip(jobs, answers, strict=True))

    # ---- the run ----------------------------------------------------------------------------

    async def deliver(self, batch: Batch) -> None:
        """Decide every job of the batch; Moodle being unreachable retries what is undecided."""
        handlers = {
            "programs": self._programs,
            "teachers": self._users,
            "students": self._users,
            "classes": self._classes,
            "enrollments": self._enrollments,
        }
        try:
            await handlers[batch.entity](batch)
        except MoodleUnavailable as error:
            for job in batch.jobs:
                batch.decide(job, Verdict("retry", str(error), "unavailable"))
        for job in batch.jobs:
            batch.decide(job, Verdict("done"))

    # ---- users ------------------------------------------------------------------------------

    async def _users(self, batch: Batch) -> None:
        entity = batch.entity
        ids = [job.zoho_id for job in batch.jobs]
        records = await self._records(entity, ids)
        links = await self._links(entity, ids)
        shape_of = projection.student_user if entity == "students" else projection.teacher_user
        wanted: dict[int, tuple[Job, UserShape]] = {}
        for job in batch.jobs:
            record, link = records.get(job.zoho_id), links.get(job.zoho_id)
            if record is None:
                batch.decide(job, Verdict("done", "the record is not stored"))
                continue
            removing = job.action == "remove" or record.deleted
            if removing and (link is None or self.policy.removal_policy == "keep"):
                batch.decide(job, Verdict("done", "deleted in Zoho; nothing to change in Moodle"))
                continue
            try:
                shape = shape_of(job.zoho_id, record.data, self.policy)
            except ProjectionError as error:
                batch.decide(job, Verdict("dead", str(error), "invalid_for_moodle"))
                continue
            if removing:
                shape = UserShape(**{**asdict(shape), "suspended": True})
            wanted[job.id] = (job, shape)

        suspending = [
            job
            for job, shape in wanted.values()
            if shape.suspended
            and not job.confirmed
            and (link := links.get(job.zoho_id)) is not None
            and link.state == "active"
        ]
        if suspending and not await self._guard_allows(entity, len(suspending)):
            for job in suspending:
                batch.decide(job, Verdict("hold", _held_message(len(suspending), entity)))
                wanted.pop(job.id)

        linked = {
            job_id: (job, shape, links[job.zoho_id])
            for job_id, (job, shape) in wanted.items()
            if job.zoho_id in links and links[job.zoho_id].moodle_id is not None
        }
        unlinked = {job_id: pair for job_id, pair in wanted.items() if job_id not in linked}
        found = await self._find_users(batch, unlinked)
        for job_id, user in found.items():
            job, shape = unlinked.pop(job_id)
            link = Link(user.id, True, "active", {}, None)
            batch.link(LinkWrite(entity, job.zoho_id, user.id, adopted=True))
            linked[job_id] = (job, shape, link)

        creations = [
            (job, self._new_user(shape))
            for job, shape in unlinked.values()
            if not batch.decided(job)
        ]
        created = await self._each_or_split(
            batch, "core_user_create_users", creations, self.client.create_users
        )
        refused: dict[int, MoodleRejected] = {}
        for job, answer in created:
            _, shape = unlinked[job.id]
            if isinstance(answer, MoodleRejected):
                refused[job.id] = answer
                continue
            fingerprint = None if shape.suspended else shape_fingerprint(shape)
            batch.link(LinkWrite(entity, job.zoho_id, answer.id, False, fingerprint=fingerprint))
            if shape.suspended:  # there is no `suspended` on create
                linked[job.id] = (job, shape, Link(answer.id, False, "active", {}, None))
            else:
                batch.decide(job, Verdict("done"))
        same_email = {
            job_id: unlinked[job_id]
            for job_id, refusal in refused.items()
            if refusal.errorcode == "invalidparameter"
        }
        for job_id, user in (await self._find_by_email_in_any_case(batch, same_email)).items():
            job, shape = unlinked[job_id]
            batch.link(LinkWrite(entity, job.zoho_id, user.id, adopted=True))
            linked[job_id] = (job, shape, Link(user.id, True, "active", {}, None))
        for job_id, refusal in refused.items():
            job, shape = unlinked[job_id]
            if job_id not in linked:
                batch.decide(job, _refused(refusal, f"creating user {shape.username}"))

        updates = []
        for job, shape, link in linked.values():
            fingerprint = shape_fingerprint(shape)
            if link.fingerprint == fingerprint:
                batch.decide(job, Verdict("done", "already up to date in Moodle"))
                continue
            assert link.moodle_id is not None
            updates.append((job, self._user_update(link, shape)))
        answers = await self._each_or_split(
            batch, "core_user_update_users", updates, self._update_users
        )
        for job, answer in answers:
            _, shape, link = linked[job.id]
            if isinstance(answer, MoodleRejected):
                batch.decide(job, _refused(answer, f"updating user {link.moodle_id}"))
            elif answer is None:
                state = "suspended" if shape.suspended else "active"
                batch.link(
                    LinkWrite(
                        entity,
                        job.zoho_id,
                        link.moodle_id,
                        link.adopted,
                        state=state,
                        fingerprint=shape_fingerprint(shape),
                    )
                )
                batch.decide(job, Verdict("done"))
            elif answer.warningcode in USER_GONE:
                batch.link(LinkWrite(entity, job.zoho_id, None, False, drop=True))
                batch.decide(job, Verdict("relink", f"Moodle user {link.moodle_id} is gone"))
            else:
                batch.decide(job, Verdict("dead", answer.message, answer.warningcode))

    def _new_user(self, shape: UserShape) -> NewUser:
        return NewUser(
            username=shape.username,
            firstname=shape.firstname,
            lastname=shape.lastname,
            email=shape.email,
            idnumber=shape.idnumber,
            auth=self.policy.auth,
            createpassword=True if self.policy.create_password else None,
        )

    def _user_update(self, link: Link, shape: UserShape) -> UserUpdate:
        assert link.moodle_id is not None
        own = not link.adopted  # an adopted account keeps its username and auth
        return UserUpdate(
            id=link.moodle_id,
            username=shape.username if own else None,
            auth=self.policy.auth if own else None,
            firstname=shape.firstname,
            lastname=shape.lastname,
            email=shape.email,
            idnumber=shape.idnumber,
            suspended=shape.suspended,
        )

    async def _update_users(self, updates: list[UserUpdate]) -> list[MoodleWarning | None]:
        warnings = await self.client.update_users(updates)
        by_id = {warning.itemid: warning for warning in warnings}
        return [by_id.get(update.id) for update in updates]

    async def _find_users(
        self, batch: Batch, pending: dict[int, tuple[Job, UserShape]]
    ) -> dict[int, MoodleUser]:
        """Existing Moodle users for records not linked yet, by the tenant's match order."""
        found: dict[int, MoodleUser] = {}
        remaining = dict(pending)
        for field in self.policy.user_match:
            if not remaining:
                break
            values = {
                job_id: str(getattr(shape, field)) for job_id, (_, shape) in remaining.items()
            }
            search = sorted(set(values.values()) | {v.lower() for v in values.values()})
            jobs = [job for job, _ in remaining.values()]
            users: list[MoodleUser] = []
            # One form field per value, and one for the field name.
            # A lookup sends one form field per value: a whole claim fits in one call.
            per_call = min(LOOKUP_VALUES_PER_CALL, self.settings.moodle_max_input_vars - 1)
            for start in range(0, len(search), per_call):
                chunk = search[start : start + per_call]
                users += await self._call(
                    batch,
                    "core_user_get_users_by_field",
                    jobs,
                    lambda field=field, chunk=chunk: self.client.get_users_by_field(  # type: ignore[misc]
                        field, chunk
                    ),
                )
            index: dict[str, dict[int, MoodleUser]] = {}
            for user in users:
                key = str(getattr(user, field) or "").lower()
                index.setdefault(key, {})[user.id] = user
            for job_id, value in values.items():
                matches = list(index.get(value.lower(), {}).values())
                job, _ = remaining[job_id]
                if len(matches) > 1:
                    ids = ", ".join(str(user.id) for user in matches)
                    batch.decide(
                        job,
                        Verdict(
                            "dead",
                            f"{len(matches)} Moodle users have {field} {value!r} (ids {ids}); "
                            "keep one, or give the others another value",
                            "ambiguous_user",
                        ),
                    )
                    remaining.pop(job_id)
                elif matches:
                    found[job_id] = matches[0]
                    remaining.pop(job_id)
        return await self._refuse_taken(batch, found, pending)

    async def _find_by_email_in_any_case(
        self, batch: Batch, pending: dict[int, tuple[Job, UserShape]]
    ) -> dict[int, MoodleUser]:
        """Existing users for records Moodle refused to create, by e-mail in any letter case.

        Moodle refuses an address another account holds in another case, while
        core_user_get_users_by_field finds only the exact case. core_user_get_users compares
        with SQL LIKE, case-insensitively (so `_` matches any character: the answer is
        filtered here). A site whose service lacks that function goes without this match.
        """
        if "email" not in self.policy.user_match:
            return {}
        found: dict[int, MoodleUser] = {}
        for job_id, (job, shape) in pending.items():
            criteria = {"criteria": [{"key": "email", "value": shape.email}]}
            try:
                reply = await self._call(
                    batch,
                    "core_user_get_users",
                    [job],
                    lambda criteria=criteria: self.client.call(  # type: ignore[misc]
                        "core_user_get_users", criteria
                    ),
                )
                users = _USERS.validate_python(reply["users"])
            except TenantPaused:
                break  # the function is not in the service; a broken token shows elsewhere
            except (MoodleRejected, ValidationError, KeyError, TypeError):
                continue
            matches = [u for u in users if (u.email or "").lower() == shape.email.lower()]
            if len(matches) == 1:
                found[job_id] = matches[0]
        return await self._refuse_taken(batch, found, pending)

    async def _refuse_taken(
        self,
        batch: Batch,
        found: dict[int, MoodleUser],
        pending: dict[int, tuple[Job, UserShape]],
    ) -> dict[int, MoodleUser]:
        """One Moodle user belongs to one Zoho record: a match already linked elsewhere is a
        conflict for a person to resolve, not a second link."""

        def read() -> dict[int, tuple[str, str]]:
            with self.db.sessions() as session:
                return claims.owners_of(
                    session,
                    tenant_id=self.tenant_id,
                    entities=USER_ENTITIES,
                    moodle_ids=[user.id for user in found.values()],
                )

        owners = await asyncio.to_thread(read) if found else {}
        kept: dict[int, MoodleUser] = {}
        claimed: dict[int, int] = {}
        for job_id, user in found.items():
            job, _ = pending[job_id]
            owner = owners.get(user.id)
            other = claimed.get(user.id)
            if (owner and owner != (batch.entity, job.zoho_id)) or other is not None:
                holder = f"{owner[0]} {owner[1]}" if owner else "another record in this batch"
                batch.decide(
                    job,
                    Verdict(
                        "dead",
                        f"Moodle user {user.id} ({user.username}) matches this record but "
                        f"already belongs to {holder}",
                        "user_taken",
                    ),
                )
                continue
            claimed[user.id] = job_id
            kept[job_id] = user
        return kept

    # ---- programmes → categories ----------------------------------------------------------

    async def _programs(self, batch: Batch) -> None:
        ids = [job.zoho_id for job in batch.jobs]
        records = await self._records("programs", ids)
        links = await self._links("programs", ids)
        creations = []
        updates = []
        shapes = {}
        for job in batch.jobs:
            record, link = records.get(job.zoho_id), links.get(job.zoho_id)
            if record is None or job.action == "remove" or record.deleted:
                batch.decide(job, Verdict("done", "categories are never deleted"))
                continue
            shape = projection.program_category(job.zoho_id, record.data, self.policy)
            shapes[job.id] = shape
            if link is not None and link.moodle_id is not None:
                if link.fingerprint == shape_fingerprint(shape):
                    batch.decide(job, Verdict("done", "already up to date in Moodle"))
                else:
                    updates.append((job, link.moodle_id))
                continue
            existing = await self._call(
                batch,
                "core_course_get_categories",
                [job],
                lambda job=job: self.client.get_categories(  # type: ignore[misc]
                    [CategoryCriterion(key="idnumber", value=job.zoho_id)]
                ),
            )
            if existing:
                updates.append((job, existing[0].id))
                batch.link(LinkWrite("programs", job.zoho_id, existing[0].id, adopted=True))
            else:
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
                batch.decide(job, _refused(answer, "creating the category"))
            else:
                fingerprint = shape_fingerprint(shapes[job.id])
                batch.link(
                    LinkWrite("programs", job.zoho_id, answer.id, False, fingerprint=fingerprint)
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
                batch.decide(job, _refused(answer, f"updating category {moodle_id}"))
                continue
            adopted = links.get(job.zoho_id) is None or links[job.zoho_id].adopted
            fingerprint = shape_fingerprint(shapes[job.id])
            batch.link(
                LinkWrite("programs", job.zoho_id, moodle_id, adopted, fingerprint=fingerprint)
            )
            batch.decide(job, Verdict("done"))

    async def _update_categories(self, updates: list[CategoryUpdate]) -> list[None]:
        await self.client.update_categories(updates)
        return [None] * len(updates)

    # ---- classes → courses, and their teacher -----------------------------------------------

    async def _classes(self, batch: Batch) -> None:
        ids = [job.zoho_id for job in batch.jobs]
        records = await self._records("classes", ids)
        links = await self._links("classes", ids)
        programs = await self._links(
            "programs",
            [r.data["program_zoho_id"] for r in records.values() if r.data.get("program_zoho_id")],
        )
        shapes: dict[int, projection.CourseShape] = {}
        courses: dict[int, int] = {}
        adopted: dict[int, bool] = {}
        creations = []
        updates = []
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
            existing = await self._find_course(batch, job, shape)
            if batch.decided(job):
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
            if isinstance(answer, MoodleRejected):
                batch.decide(job, _refused(answer, f"creating course {shapes[job.id].shortname}"))
            else:
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
                batch.decide(job, _refused(answer, f"updating course {courses[job.id]}"))
            elif answer is not None and answer.warningcode == "invalidrecord":
                batch.link(LinkWrite("classes", job.zoho_id, None, False, drop=True))
                batch.decide(job, Verdict("relink", f"Moodle course {courses[job.id]} is gone"))
            elif answer is not None:
                batch.decide(job, Verdict("dead", answer.message, answer.warningcode))
        await self._class_teachers(batch, records, links, shapes, courses, adopted)

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
            batch.decide(
                job,
                Verdict(
                    "dead",
                    f"short name {shape.shortname!r} is taken by Moodle course {course.id} "
                    f"(idnumber {course.idnumber!r}); give the class another Class_Short_Name",
                    "shortnametaken",
                ),
            )
            return None
        return course.id

    async def _update_courses(self, updates: list[CourseUpdate]) -> list[MoodleWarning | None]:
        warnings = await self.client.update_courses(updates)
        by_id = {warning.itemid: warning for warning in warnings}
        return [by_id.get(update.id) for update in updates]

    async def _class_teachers(
        self,
        batch: Batch,
        records: dict[str, claims.StoredRecord],
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
        teachers = await self._links("teachers", teacher_ids)
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
                batch.decide(job, _refused(answer, "enrolling the teacher"))
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
                    "classes",
                    job.zoho_id,
                    courses[job.id],
                    adopted[job.id],
                    detail={"teacher_userid": teacher},
                    # Only a fully delivered class may skip its next update.
                    fingerprint=shape_fingerprint(shapes[job.id]) if verdict is None else None,
                )
            )
            batch.decide(job, Verdict("done"))

    # ---- enrolments ---------------------------------------------------------------------------

    async def _enrollments(self, batch: Batch) -> None:
        ids = [job.zoho_id for job in batch.jobs]
        records = await self._records("enrollments", ids)
        links = await self._links("enrollments", ids)
        students = await self._links(
            "students", [r.data["student_zoho_id"] for r in records.values()]
        )
        classes = await self._links("classes", [r.data["class_zoho_id"] for r in records.values()])
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
                    removals.append(_removal(job, made))
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
                removals.append(_removal(job, made))
            active = made if link is not None and link.state == "active" else None
            if _ends_access(target, active, now):
                ending.append(job)
            enrol.append((job, Enrolment(**target, suspend=False)))

        replaced = {job.id for job, *_ in removals if job.id in targets}
        to_remove = [r for r in removals if r[0].id not in targets]
        # An end date already past ends access as surely as a removal: the guard judges both.
        guarded = [job for job, *_ in to_remove] + ending
        unconfirmed = guarded and not all(job.confirmed for job in guarded)
        held = bool(unconfirmed) and not await self._guard_allows("enrollments", len(guarded))
        if held:
            for job in guarded:
                batch.decide(job, Verdict("hold", _held_message(len(guarded), "enrollments")))
        if not held:
            done = await self._remove_enrolments(batch, to_remove)
            for job, state in done.items():
                link = links[job.zoho_id]
                batch.link(
                    LinkWrite(
                        "enrollments", job.zoho_id, None, False, state=state, detail=link.detail
                    )
                )
                batch.decide(job, Verdict("done"))
        await self._remove_enrolments(batch, [r for r in removals if r[0].id in replaced])

        if held:
            enrol = [(job, enrolment) for job, enrolment in enrol if job not in ending]
        answers = await self._each_or_split(batch, "enrol_manual_enrol_users", enrol, self._enrol)
        for job, answer in answers:
            if isinstance(answer, MoodleRejected):
                batch.decide(job, _refused(answer, "enrolling the student"))
                continue
            batch.link(LinkWrite("enrollments", job.zoho_id, None, False, detail=targets[job.id]))
            batch.decide(job, Verdict("done"))

    async def _enrol(self, enrolments: list[Enrolment]) -> list[None]:
        await self.client.enrol_users(enrolments)
        return [None] * len(enrolments)

    async def _remove_enrolments(self, batch: Batch, removals: Sequence[Removal]) -> dict[Job, str]:
        """Apply the removal policy to enrolments the service made; returns the new link state
        per job that succeeded. A suspended enrolment keeps its dates: Moodle resets the ones
        a re-enrolment leaves out."""
        policy = self.policy.removal_policy
        if policy == "keep" or not removals:
            return {job: "active" for job, *_ in removals}
        results: dict[Job, str] = {}
        if policy == "suspend":
            items = [
                (
                    job,
                    Enrolment(
                        roleid=role,
                        userid=user,
                        courseid=course,
                        timestart=start,
                        timeend=end,
                        suspend=True,
                    ),
                )
                for job, user, course, role, start, end in removals
            ]
            answers = await self._each_or_split(
                batch, "enrol_manual_enrol_users", items, self._enrol
            )
            state = "suspended"
        else:
            unenrol_items = [
                (job, Unenrolment(userid=user, courseid=course))
                for job, user, course, *_ in removals
            ]
            answers = await self._each_or_split(
                batch, "enrol_manual_unenrol_users", unenrol_items, self._unenrol
            )
            state = "removed"
        for job, answer in answers:
            if isinstance(answer, MoodleRejected):
                batch.decide(job, _refused(answer, f"applying the removal policy ({policy})"))
            else:
                results[job] = state
        return results

    async def _unenrol(self, unenrolments: list[Unenrolment]) -> list[None]:
        await self.client.unenrol_users(unenrolments)
        return [None] * len(unenrolments)


def _ends_access(target: dict[str, Any], active: dict[str, Any] | None, now: int) -> bool:
    """Whether enrolling with `target` ends a student's access now: its end time is past
    while the active enrolment the service made (`active`) had no end or one still to come.
    A new enrolment that has already ended takes nobody's access away."""
    end = target["timeend"]
    if active is None or not end or end > now:
        return False
    before = active.get("timeend")
    return not before or before > now


def _removal(job: Job, made: dict[str, Any]) -> Removal:
    """The enrolment a job's record made (as its link holds it), for the removal policy."""
    return (
        job,
        made["userid"],
        made["courseid"],
        made["roleid"],
        made.get("timestart"),
        made.get("timeend"),
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


def _held_message(count: int, entity: str) -> str:
    return (
        f"held by the mass-change guard: {count} {entity} would be suspended or removed at once; "
        "confirm with `zoho-moodle-sync jobs confirm-held` if this is intended"
    )


def _refused(error: MoodleRejected, doing: str) -> Verdict:
    """A Moodle refusal of one item, in plain words; it will not pass by retrying."""
    message = error.message
    if error.errorcode == "invalidparameter":
        message += (
            " (Moodle does not say which value; check the e-mail address, the username's "
            "characters, and that names are not empty)"
        )
    if error.debuginfo:
        message += f" [{error.debuginfo}]"
    return Verdict("dead", f"{doing}: Moodle refused: {message}", error.errorcode)
