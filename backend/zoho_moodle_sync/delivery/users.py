"""Students and teachers → Moodle users."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from pydantic import TypeAdapter, ValidationError

from zoho_moodle_sync import projection
from zoho_moodle_sync.delivery import store
from zoho_moodle_sync.delivery.base import (
    Batch,
    Delivery,
    TenantPaused,
    held_message,
    refused,
    shape_fingerprint,
)
from zoho_moodle_sync.delivery.store import Job, Link, LinkWrite
from zoho_moodle_sync.entities import MOODLE_SIDES, MoodleKind
from zoho_moodle_sync.errors import MoodleRejected
from zoho_moodle_sync.jobs.queue import Verdict
from zoho_moodle_sync.moodle import MoodleUser, MoodleWarning, NewUser, UserUpdate
from zoho_moodle_sync.projection import ProjectionError, UserShape

USER_ENTITIES = tuple(spec.key for spec, side in MOODLE_SIDES if side.kind == MoodleKind.USER)
LOOKUP_VALUES_PER_CALL = 1000
"""Values per core_user_get_users_by_field call (a few KB of form data, a fast indexed query)."""
_USERS = TypeAdapter(list[MoodleUser])
USER_GONE = frozenset({"invaliduserid", "usernotupdateddeleted"})
"""Warnings of core_user_update_users for a linked user who no longer exists (a deleted user
stays in Moodle's table with `deleted` set)."""


class UserDelivery(Delivery):
    """Students and teachers → Moodle users: matched to an existing user (idnumber, username,
    e-mail) before one is created, updated when their shape changed, suspended by status."""

    async def _deliver(self, batch: Batch) -> None:
        await self._users(batch)

    async def _users(self, batch: Batch) -> None:
        """A user batch holds the claim's students and teachers together: one look-up per
        field finds them all, and a person entered as both is matched only once."""
        records: dict[int, store.StoredRecord] = {}
        links: dict[int, Link] = {}
        for entity in sorted({job.entity for job in batch.jobs}):
            jobs = [job for job in batch.jobs if job.entity == entity]
            ids = [job.zoho_id for job in jobs]
            stored = await self._records(entity, ids)
            known = await self._links(entity, ids)
            for job in jobs:
                if job.zoho_id in stored:
                    records[job.id] = stored[job.zoho_id]
                if job.zoho_id in known:
                    links[job.id] = known[job.zoho_id]
        wanted: dict[int, tuple[Job, UserShape]] = {}
        for job in batch.jobs:
            record, link = records.get(job.id), links.get(job.id)
            if record is None:
                batch.decide(job, Verdict("done", "the record is not stored"))
                continue
            removing = job.action == "remove" or record.deleted
            if removing and (link is None or self.policy.removal_policy == "keep"):
                batch.decide(job, Verdict("done", "deleted in Zoho; nothing to change in Moodle"))
                continue
            try:
                shape = projection.USER_SHAPES[job.entity](job.zoho_id, record.data, self.policy)
            except ProjectionError as error:
                batch.decide(job, Verdict("dead", str(error), "invalid_for_moodle"))
                continue
            if removing:
                shape = UserShape(**{**asdict(shape), "suspended": True})
            wanted[job.id] = (job, shape)

        for entity in sorted({job.entity for job, _ in wanted.values()}):
            suspending = [
                job
                for job, shape in wanted.values()
                if job.entity == entity
                and shape.suspended
                and not job.confirmed
                and (link := links.get(job.id)) is not None
                and link.state == "active"
            ]
            if suspending and not await self._guard_allows(entity, len(suspending)):
                for job in suspending:
                    batch.decide(job, Verdict("hold", held_message(len(suspending), entity)))
                    wanted.pop(job.id)

        linked = {
            job_id: (job, shape, links[job_id])
            for job_id, (job, shape) in wanted.items()
            if job_id in links and links[job_id].moodle_id is not None
        }
        unlinked = {job_id: pair for job_id, pair in wanted.items() if job_id not in linked}
        found = await self._find_users(batch, unlinked)
        for job_id, user in found.items():
            job, shape = unlinked.pop(job_id)
            link = Link(user.id, True, "active", {}, None)
            batch.link(LinkWrite(job.entity, job.zoho_id, user.id, adopted=True))
            linked[job_id] = (job, shape, link)

        creations = [
            (job, self._new_user(shape))
            for job, shape in unlinked.values()
            if not batch.decided(job)
        ]
        created = await self._each_or_split(
            batch, "core_user_create_users", creations, self.client.create_users
        )
        refusals: dict[int, MoodleRejected] = {}
        for job, answer in created:
            _, shape = unlinked[job.id]
            if isinstance(answer, MoodleRejected):
                refusals[job.id] = answer
                continue
            fingerprint = None if shape.suspended else shape_fingerprint(shape)
            batch.link(
                LinkWrite(job.entity, job.zoho_id, answer.id, False, fingerprint=fingerprint)
            )
            if shape.suspended:  # there is no `suspended` on create
                linked[job.id] = (job, shape, Link(answer.id, False, "active", {}, None))
            else:
                batch.decide(job, Verdict("done"))
        same_email = {
            job_id: unlinked[job_id]
            for job_id, refusal in refusals.items()
            if refusal.errorcode == "invalidparameter"
        }
        for job_id, user in (await self._find_by_email_in_any_case(batch, same_email)).items():
            job, shape = unlinked[job_id]
            batch.link(LinkWrite(job.entity, job.zoho_id, user.id, adopted=True))
            linked[job_id] = (job, shape, Link(user.id, True, "active", {}, None))
        for job_id, refusal in refusals.items():
            job, shape = unlinked[job_id]
            if job_id not in linked:
                batch.decide(job, refused(refusal, f"creating user {shape.username}"))

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
                batch.decide(job, refused(answer, f"updating user {link.moodle_id}"))
            elif answer is None:
                state = "suspended" if shape.suspended else "active"
                batch.link(
                    LinkWrite(
                        job.entity,
                        job.zoho_id,
                        link.moodle_id,
                        link.adopted,
                        state=state,
                        fingerprint=shape_fingerprint(shape),
                    )
                )
                batch.decide(job, Verdict("done"))
            elif answer.warningcode in USER_GONE:
                batch.link(LinkWrite(job.entity, job.zoho_id, None, False, drop=True))
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
        """One Moodle user belongs to one Zoho record: a match already linked elsewhere (or
        just now, in this batch) is a conflict for a person to resolve, not a second link."""

        def read() -> dict[int, tuple[str, str]]:
            with self.db.sessions() as session:
                return store.owners_of(
                    session,
                    tenant_id=self.tenant_id,
                    entities=USER_ENTITIES,
                    moodle_ids=[user.id for user in found.values()],
                )

        owners = await asyncio.to_thread(read) if found else {}
        # Links this batch made are not in the database yet (a user just created for another
        # record with the same e-mail, which Moodle then refused to create twice).
        owners |= {
            write.moodle_id: (write.entity, write.zoho_id)
            for write in batch.settlement.links
            if write.moodle_id is not None and not write.drop
        }
        kept: dict[int, MoodleUser] = {}
        claimed: dict[int, int] = {}
        for job_id, user in found.items():
            job, _ = pending[job_id]
            owner = owners.get(user.id)
            other = claimed.get(user.id)
            if (owner and owner != (job.entity, job.zoho_id)) or other is not None:
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
