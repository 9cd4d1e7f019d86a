"""The baseline for Moodle delivery: a sequential script that knows the final state and writes it
to an empty Moodle in batches of 100, one call after the other, with no look-ups.

The final state is what the service left in a fake Moodle (`GET /_fake/state`): the categories,
users, courses and manual enrolments it made. The script creates the categories, the users
(`createpassword=1`, then suspends the suspended ones: Moodle has no `suspended` on create),
the courses, and enrols teachers and students with their roles, times and `suspend` flags.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

ENDPOINT = "/webservice/rest/server.php"
BATCH = 100
SITE_USERS = 4
"""A fresh fake Moodle's users: guest, admin, the web-service user and one without rights."""
SITE_CATEGORY = 1

State = dict[str, list[dict[str, Any]]]
"""A fake Moodle's `/_fake/state`: users, categories, courses, enrolments."""


def fake_state(base_url: str) -> State:
    state: State = httpx.get(f"{base_url}/_fake/state", timeout=60).json()
    return state


def fake_calls(base_url: str) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = httpx.get(f"{base_url}/_fake/calls", timeout=60).json()
    return calls


def made(state: State) -> State:
    """What a sync made in a Moodle: the state without what a fresh site already holds."""
    return {
        "users": [u for u in state["users"] if u["id"] > SITE_USERS],
        "categories": [c for c in state["categories"] if c["id"] != SITE_CATEGORY],
        "courses": [c for c in state["courses"] if c["format"] != "site"],
        "enrolments": list(state["enrolments"]),
    }


def comparable(state: State) -> dict[str, Any]:
    """The state by natural keys (usernames, idnumbers, short names) instead of Moodle ids, to
    compare two Moodles that hold the same things under other ids."""
    made_state = made(state)
    categories = {c["id"]: c for c in state["categories"]}
    users = {u["id"]: u["username"] for u in state["users"]}
    courses = {c["id"]: c["shortname"] for c in state["courses"]}

    def category_key(category_id: int) -> Any:
        category = categories.get(category_id)
        return category["idnumber"] if category and category_id != SITE_CATEGORY else category_id

    return {
        "categories": {
            c["idnumber"]: (c["name"], category_key(c["parent"])) for c in made_state["categories"]
        },
        "users": {
            u["username"]: tuple(
                u[k] for k in ("firstname", "lastname", "email", "idnumber", "auth", "suspended")
            )
            for u in made_state["users"]
        },
        "courses": {
            c["shortname"]: (
                c["fullname"],
                c["idnumber"],
                category_key(c["categoryid"]),
                c["startdate"],
                c["enddate"],
            )
            for c in made_state["courses"]
        },
        "enrolments": {
            (users[e["userid"]], courses[e["courseid"]]): (
                tuple(sorted(e["roles"])),
                e["suspended"],
                e["timestart"],
                e["timeend"],
            )
            for e in made_state["enrolments"]
        },
    }


@dataclass
class ScriptRun:
    seconds: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)
    items: Counter[str] = field(default_factory=Counter)


class _Moodle:
    """One web-service call after the other, each answer checked."""

    def __init__(self, http: httpx.Client, token: str, run: ScriptRun) -> None:
        self.http, self.token, self.run = http, token, run

    def call(self, function: str, key: str, items: Sequence[Mapping[str, Any]]) -> Any:
        query = {"wstoken": self.token, "wsfunction": function, "moodlewsrestformat": "json"}
        response = self.http.post(
            ENDPOINT,
            params=query,
            content=urlencode(_form(key, items)),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        answer = response.json()
        if isinstance(answer, dict) and "exception" in answer:
            raise RuntimeError(f"{function}: {answer['errorcode']}: {answer['message']}")
        self.run.calls[function] += 1
        self.run.items[function] += len(items)
        return answer

    def in_batches(self, function: str, key: str, items: Sequence[Mapping[str, Any]]) -> list[Any]:
        answers: list[Any] = []
        for start in range(0, len(items), BATCH):
            answer = self.call(function, key, items[start : start + BATCH])
            answers += answer if isinstance(answer, list) else []
        return answers


def _form(key: str, items: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """PHP bracket notation: users[0][username]=..., booleans as 1 and 0."""
    form = []
    for index, item in enumerate(items):
        for name, value in item.items():
            text = str(int(value)) if isinstance(value, bool) else str(value)
            form.append((f"{key}[{index}][{name}]", text))
    return form


def write(base_url: str, token: str, state: State) -> ScriptRun:
    """Write what `state` holds (see `made`) to the empty Moodle at `base_url`."""
    target = made(state)
    run = ScriptRun()
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, timeout=600) as http:
        moodle = _Moodle(http, token, run)
        category_ids = _create_categories(moodle, target["categories"])
        user_ids = _create_users(moodle, target["users"])
        course_ids = {}
        courses = [
            {
                "fullname": c["fullname"],
                "shortname": c["shortname"],
                "categoryid": category_ids.get(c["categoryid"], c["categoryid"]),
                "idnumber": c["idnumber"],
                "startdate": c["startdate"],
                "enddate": c["enddate"],
            }
            for c in target["courses"]
        ]
        created = moodle.in_batches("core_course_create_courses", "courses", courses)
        for course, answer in zip(target["courses"], created, strict=True):
            course_ids[course["id"]] = answer["id"]
        enrolments = [
            {
                "roleid": role,
                "userid": user_ids[e["userid"]],
                "courseid": course_ids[e["courseid"]],
                "timestart": e["timestart"],
                "timeend": e["timeend"],
                "suspend": e["suspended"],
            }
            for e in sorted(target["enrolments"], key=_teachers_first)
            for role in e["roles"]
        ]
        moodle.in_batches("enrol_manual_enrol_users", "enrolments", enrolments)
    run.seconds = time.perf_counter() - started
    return run


def _teachers_first(enrolment: Mapping[str, Any]) -> tuple[int, int]:
    return (min(enrolment["roles"], default=99), enrolment["courseid"])


def _create_categories(moodle: _Moodle, categories: list[dict[str, Any]]) -> dict[int, int]:
    """Old id -> new id; a category is created once its parent exists."""
    new_ids: dict[int, int] = {}
    remaining = sorted(categories, key=lambda c: c["id"])
    while remaining:
        ready = [c for c in remaining if c["parent"] in new_ids or c["parent"] in (0, 1)]
        if not ready:
            raise RuntimeError("categories whose parents are missing")
        items = [
            {
                "name": c["name"],
                "parent": new_ids.get(c["parent"], c["parent"]),
                "idnumber": c["idnumber"],
            }
            for c in ready
        ]
        created = moodle.in_batches("core_course_create_categories", "categories", items)
        new_ids |= {c["id"]: answer["id"] for c, answer in zip(ready, created, strict=True)}
        remaining = [c for c in remaining if c["id"] not in new_ids]
    return new_ids


def _create_users(moodle: _Moodle, users: list[dict[str, Any]]) -> dict[int, int]:
    """Old id -> new id; the suspended ones suspended afterwards."""
    items = [
        {
            "username": u["username"],
            "firstname": u["firstname"],
            "lastname": u["lastname"],
            "email": u["email"],
            "idnumber": u["idnumber"],
            "auth": u["auth"],
            "createpassword": True,
        }
        for u in users
    ]
    created = moodle.in_batches("core_user_create_users", "users", items)
    new_ids = {u["id"]: answer["id"] for u, answer in zip(users, created, strict=True)}
    suspended = [{"id": new_ids[u["id"]], "suspended": True} for u in users if u["suspended"]]
    if suspended:
        moodle.in_batches("core_user_update_users", "users", suspended)
    return new_ids
