"""What Moodle shows now about a record (`?live=1`, `explain --live`): the user (exists,
suspended, deleted), the course or category, and for an enrolment whether the user is enrolled,
with which roles, active or not. Read-only calls; a refusal or an outage is reported, not
raised."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from zoho_moodle_sync.errors import MoodleRejected, MoodleUnavailable
from zoho_moodle_sync.explain.models import Live
from zoho_moodle_sync.moodle import CategoryCriterion, MoodleClient, unescape_moodle_text
from zoho_moodle_sync.reconcile.drift import deleted_user


async def live_view(client: MoodleClient, *, zoho_id: str, targets: dict[str, int | None]) -> Live:
    """Moodle's view of the objects in `targets` (`user`, `course`, `category`: their Moodle
    ids, None when the service has none yet)."""
    live = Live(checked_at=datetime.now(UTC), error=None)
    try:
        if "user" in targets:
            live.user = await _user(client, live, targets["user"], zoho_id)
        if "category" in targets:
            live.category = await _category(client, live, targets["category"])
        if "course" in targets:
            live.course = await _course(client, live, targets["course"])
        user, course = targets.get("user"), targets.get("course")
        if "enrolment" in targets and user and course and (live.user or {}).get("exists"):
            live.enrolment = await _enrolment(client, live, user, course)
    except MoodleRejected as refused:
        live.error = f"Moodle refused to answer: {refused.errorcode}: {refused.message}"
    except MoodleUnavailable as down:
        live.error = f"Moodle cannot be reached: {down}"
    return live


async def _user(
    client: MoodleClient, live: Live, user_id: int | None, zoho_id: str
) -> dict[str, Any]:
    if user_id is None:
        found = await client.get_users_by_field("idnumber", [zoho_id])
        if not found:
            live.facts.append(f"Moodle has no user with idnumber {zoho_id}")
            return {"exists": False}
        ids = ", ".join(str(user.id) for user in found)
        live.facts.append(
            f"Moodle has user {ids} with idnumber {zoho_id}, not linked to this record yet"
        )
        return {"exists": True, "id": found[0].id, "linked": False}
    found = await client.get_users_by_field("id", [user_id])
    user = found[0] if found else None
    if user is None or deleted_user(user):
        live.facts.append(f"Moodle user {user_id} does not exist (deleted in Moodle)")
        return {"exists": False, "id": user_id, "deleted": user is not None}
    state = "suspended" if user.suspended else "active"
    live.facts.append(f"Moodle user {user.id} ({user.username}) exists and is {state}")
    return {
        "exists": True,
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "idnumber": user.idnumber,
        "suspended": bool(user.suspended),
    }


async def _category(client: MoodleClient, live: Live, category_id: int | None) -> dict[str, Any]:
    if category_id is None:
        return {"exists": False}
    found = await client.get_categories([CategoryCriterion(key="id", value=str(category_id))])
    if not found:
        live.facts.append(
            f"Moodle lists no category {category_id} (deleted, or the service user may not "
            "see categories)"
        )
        return {"exists": False, "id": category_id}
    name = unescape_moodle_text(found[0].name)
    live.facts.append(f"Moodle category {category_id} ('{name}') exists")
    return {"exists": True, "id": category_id, "name": name}


async def _course(client: MoodleClient, live: Live, course_id: int | None) -> dict[str, Any]:
    if course_id is None:
        return {"exists": False}
    found = await client.get_courses_by_field("id", course_id)
    if not found:
        live.facts.append(f"Moodle has no course {course_id} (deleted in Moodle)")
        return {"exists": False, "id": course_id}
    course = found[0]
    shortname = unescape_moodle_text(course.shortname)
    live.facts.append(f"Moodle course {course_id} ({shortname}) exists")
    return {"exists": True, "id": course_id, "shortname": shortname, "category": course.categoryid}


async def _enrolment(
    client: MoodleClient, live: Live, user_id: int, course_id: int
) -> dict[str, Any]:
    everyone = {user.id: user for user in await client.get_enrolled_users(course_id)}
    enrolled = everyone.get(user_id)
    if enrolled is None:
        live.facts.append(f"user {user_id} is not enrolled in course {course_id}")
        return {"enrolled": False}
    inactive = {u.id for u in await client.get_enrolled_users(course_id, onlysuspended=True)}
    roles = sorted(role.shortname for role in enrolled.roles)
    active = user_id not in inactive
    state = "active" if active else "not active (suspended, or outside its dates)"
    live.facts.append(
        f"user {user_id} is enrolled in course {course_id} as {', '.join(roles) or 'no role'}, "
        f"{state}"
    )
    return {"enrolled": True, "roles": roles, "active": active}
