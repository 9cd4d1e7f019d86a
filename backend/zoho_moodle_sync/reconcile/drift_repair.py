"""Repairing drift: what Moodle lost is forgotten (the link, and the enrolments that went with a
user or a course), what Moodle changed is marked as not delivered, and every record concerned is
queued for delivery again. The deliveries restore Zoho's state; the mass-change guard holds a
repair that would suspend or unenrol many, as it holds any other change."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from zoho_moodle_sync.db.jobs import MoodleLink
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.entities import MOODLE_SIDES, MoodleKind
from zoho_moodle_sync.jobs import queue

if TYPE_CHECKING:
    from zoho_moodle_sync.reconcile.drift import Finding

GONE = {"missing_user": "userid", "missing_course": "courseid", "missing_category": None}
"""Drift where the Moodle object is gone, and the key under which an enrolment's link names it
(its enrolments went with a user or a course)."""
MOODLE_STATE = {"user_active": "active", "user_suspended": "suspended"}
"""The state a user's link takes from what Moodle was found to hold."""
ENROLMENT_ENTITIES = tuple(
    spec.key for spec, side in MOODLE_SIDES if side.kind == MoodleKind.ENROLMENT
)


def repair(db: Database, tenant_id: int, findings: Sequence[Finding]) -> int:
    """Queue the deliveries that restore Zoho's state; how many records were queued."""
    queued: dict[str, set[str]] = defaultdict(set)
    with db.sessions.begin() as session:
        enrolments = _enrolment_links(session, tenant_id) if _any_gone(findings) else {}
        for finding in findings:
            link = session.scalar(
                select(MoodleLink).where(
                    MoodleLink.tenant_id == tenant_id,
                    MoodleLink.entity == finding.entity,
                    MoodleLink.zoho_id == finding.zoho_id,
                )
            )
            if link is None:
                continue
            queued[finding.entity].add(finding.zoho_id)
            if finding.kind in GONE:
                # Forgotten, and the enrolments that went with a user or a course too.
                key = GONE[finding.kind]
                for enrolment in enrolments.pop((key, link.moodle_id), []) if key else []:
                    queued[enrolment.entity].add(enrolment.zoho_id)
                    session.delete(enrolment)
                session.delete(link)
            elif finding.kind in ("missing_enrolment", "enrolment_suspended"):
                if link.state == "active":
                    # Unlike what was delivered, so that the delivery enrols again.
                    link.detail = {**link.detail, "drift": finding.kind}
            else:
                link.delivered_fingerprint = None  # unlike what Moodle holds: updated again
                if finding.kind in MOODLE_STATE:
                    # What Moodle holds now: suspending an account reactivated by hand is a
                    # suspension the mass-change guard judges, as any other.
                    link.state = MOODLE_STATE[finding.kind]
        for entity, zoho_ids in queued.items():
            queue.enqueue_delivery(session, tenant_id=tenant_id, entity=entity, zoho_ids=zoho_ids)
    return sum(len(ids) for ids in queued.values())


def _any_gone(findings: Sequence[Finding]) -> bool:
    return any(GONE.get(finding.kind) for finding in findings)


def _enrolment_links(
    session: Session, tenant_id: int
) -> dict[tuple[str, int | None], list[MoodleLink]]:
    """The tenant's enrolment links by the user and the course they name."""
    found: dict[tuple[str, int | None], list[MoodleLink]] = defaultdict(list)
    links = session.scalars(
        select(MoodleLink).where(
            MoodleLink.tenant_id == tenant_id, MoodleLink.entity.in_(ENROLMENT_ENTITIES)
        )
    )
    for link in links:
        for key in ("userid", "courseid"):
            value = link.detail.get(key)
            if isinstance(value, int):
                found[(key, value)].append(link)
    return found
