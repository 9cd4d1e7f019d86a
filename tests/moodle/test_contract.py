"""The fake Moodle answers the recorded real Moodle 4.5 requests exactly as the real one did.

Every row of tests/data/moodle-observations.json is replayed in recorded order, over HTTP into
one fake whose clock stands at the recording's time and which holds what the recording assumed:
users 1-4 (guest, admin, the web-service user, a user without capabilities), categories 1-4,
the site course, and a token for the user without capabilities. Two things happened outside the
web service between recorded rows and are redone at the same place: course 3 lost its manual
enrolment instance (before "enrol into course WITHOUT manual enrol instance"), and throughput
runs created 3000 users (before "mixed-case email + ...", whose new user got id 4510).

Not replayed: the 29 rows that call functions the sync does not use and the fake does not serve
(groups, cohorts, grade reports, enrolment methods, a user's courses); no replayed row depends on
what they did. Not compared: the recorded timings (`seconds`), timestamps the fake cannot know
(timecreated, timemodified, cacherev, the time suffix of a deleted user's username), context ids
inside course image URLs, values the recording redacted as "<token>" (any 32-hex value matches),
and site info's function list, where the fake serves a subset of the recorded service. Bodies the
recording cut short are compared on their complete leading items; requests it cut short (the
bulk rows) are rebuilt from their recorded pattern and length.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.fakes.moodle import ENDPOINT, NOCAP_USER_ID, FakeMoodle

OBSERVATIONS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent.parent / "data" / "moodle-observations.json").read_text("utf-8")
)
RECORDED_AT = 1795327396
NOCAP_TOKEN = "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0"
NOT_SERVED = (
    "core_enrol_get_course_enrolment_methods",
    "core_enrol_get_users_courses",
    "core_group_",
    "core_cohort_",
    "gradereport_user_",
    "core_grades_",
)
INSTANCE_REMOVED_BEFORE = "enrol into course WITHOUT manual enrol instance"
BENCH_USERS_BEFORE = "mixed-case email + idnumber that another user already has"
VOLATILE_KEYS = frozenset({"timecreated", "timemodified", "cacherev"})


@dataclass(frozen=True)
class Replay:
    index: int
    observation: dict[str, Any]
    status: int
    content_type: str
    body: str


def replayed(observation: dict[str, Any]) -> bool:
    return not str(observation["function"]).startswith(NOT_SERVED)


def request_params(observation: dict[str, Any]) -> list[tuple[str, str]]:
    """The recorded parameters; bulk rows kept only 40, so the rest follow their pattern."""
    params = [(str(name), str(value)) for name, value in observation["params"]]
    if observation["nparams"] == len(params):
        return params
    match = re.fullmatch(r"(.+)u0", params[0][1])
    assert match is not None, observation["label"]
    prefix = match.group(1)
    rebuilt: list[tuple[str, str]] = []
    for n in range(observation["nparams"] // 5):
        rebuilt += [
            (f"users[{n}][username]", f"{prefix}u{n}"),
            (f"users[{n}][password]", "Passw0rd!x"),
            (f"users[{n}][firstname]", "Bulk"),
            (f"users[{n}][lastname]", f"U{n}"),
            (f"users[{n}][email]", f"{prefix}u{n}@example.com"),
        ]
    return rebuilt


def token_for(label: str, fake: FakeMoodle) -> str:
    if "invalid token" in label:
        return "not-a-token-the-site-knows"
    if "empty token" in label:
        return ""
    if "without capability" in label or "missing capability" in label:
        return NOCAP_TOKEN
    return fake.token


def recorded_fake() -> FakeMoodle:
    fake = FakeMoodle(clock=lambda: RECORDED_AT)
    fake.add_token(NOCAP_TOKEN, userid=NOCAP_USER_ID, capable=False)
    for number in (2, 3, 4):
        fake.add_category(f"Category {number}")
    return fake


async def replay_all() -> list[Replay]:
    fake = recorded_fake()
    replays = []
    async with httpx.AsyncClient(transport=fake.transport(), base_url=fake.site_url) as http:
        for index, observation in enumerate(OBSERVATIONS):
            if not replayed(observation):
                continue
            label = str(observation["label"])
            if label == INSTANCE_REMOVED_BEFORE:
                fake.remove_manual_instance(3)
            if label == BENCH_USERS_BEFORE:
                for n in range(3000):
                    fake.add_user(f"bench{n}")
            fake.debug = label.startswith("[debug=DEVELOPER]")
            control = [("wstoken", token_for(label, fake)), ("wsfunction", observation["function"])]
            if "XML format" not in label:
                control.append(("moodlewsrestformat", "json"))
            # As recorded: the control fields first in the body (the GET row: all in the URL).
            fields = control + request_params(observation)
            if label == "GET instead of POST":
                response = await http.get(f"{ENDPOINT}?{urlencode(fields)}")
            else:
                response = await http.post(
                    ENDPOINT,
                    content=urlencode(fields),
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
            replays.append(
                Replay(
                    index,
                    observation,
                    response.status_code,
                    response.headers.get("content-type", ""),
                    response.text,
                )
            )
    return replays


@pytest.fixture(scope="module")
def replays() -> dict[int, Replay]:
    return {replay.index: replay for replay in asyncio.run(replay_all())}


def leading_items(text: str) -> list[Any]:
    """The complete items at the start of the first JSON list in a body cut short."""
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    items: list[Any] = []
    while True:
        try:
            item, position = decoder.raw_decode(text, position)
        except ValueError:
            return items
        items.append(item)
        if text[position : position + 1] != ",":
            return items
        position += 1


def normalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: "<time>" if key in VOLATILE_KEYS else normalised(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [normalised(item) for item in value]
    if isinstance(value, str):
        value = re.sub(r"/pluginfile\.php/[0-9]+/", "/pluginfile.php/<context>/", value)
        value = re.sub(r"(@[a-z0-9.-]+)\.[0-9]{10}$", r"\1.<time>", value)
        return "<token>" if re.fullmatch(r"[0-9a-f]{32}", value) else value
    return value


def without_function_list(info: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in info.items() if key != "functions"}


def differences(replay: Replay) -> list[str]:
    observation = replay.observation
    problems = []
    if replay.status != observation["http_status"]:
        problems.append(f"HTTP {replay.status}, recorded {observation['http_status']}")
    if replay.content_type != observation["content_type"]:
        problems.append(f"content type {replay.content_type!r}")
    recorded_text: str = observation["body"]
    if observation["content_type"].startswith("application/xml"):
        if replay.body != recorded_text:
            problems.append(f"XML differs:\n{replay.body}")
        return problems
    answer = json.loads(replay.body)
    try:
        recorded = json.loads(recorded_text)
    except ValueError:
        expected_items = leading_items(recorded_text)
        actual_items = leading_items(replay.body)[: len(expected_items)]
        if not expected_items or normalised(actual_items) != normalised(expected_items):
            problems.append(f"leading items differ: {replay.body[:600]}")
        return problems
    if isinstance(recorded, dict) and "exception" in recorded:
        if not (isinstance(answer, dict) and "exception" in answer):
            return [*problems, f"success where Moodle failed: {replay.body[:300]}"]
        for key in ("exception", "errorcode", "message", "debuginfo"):
            if recorded.get(key) != answer.get(key):
                problems.append(f"{key}: {answer.get(key)!r}, recorded {recorded.get(key)!r}")
        return problems
    if observation["function"] == "core_webservice_get_site_info":
        served = [f for f in answer["functions"] if f not in recorded["functions"]]
        if served or not answer["functions"]:
            problems.append(f"functions outside the recorded service: {served}")
        recorded, answer = without_function_list(recorded), without_function_list(answer)
    if normalised(answer) != normalised(recorded):
        problems.append(f"answer differs: {replay.body[:800]}")
    return problems


def row_id(index: int) -> str:
    label = re.sub(r"[^a-z0-9]+", "-", str(OBSERVATIONS[index]["label"]).lower()).strip("-")
    return f"{index:03d}-{label[:60]}"


REPLAYED_ROWS = [index for index, row in enumerate(OBSERVATIONS) if replayed(row)]


@pytest.mark.parametrize("index", REPLAYED_ROWS, ids=row_id)
def test_fake_answers_the_recorded_request_as_the_real_moodle_did(
    index: int, replays: dict[int, Replay]
) -> None:
    assert differences(replays[index]) == []


def test_only_functions_the_fake_does_not_serve_are_left_out() -> None:
    skipped = [row for row in OBSERVATIONS if not replayed(row)]

    assert len(REPLAYED_ROWS) + len(skipped) == len(OBSERVATIONS)
    assert len(skipped) == 29
    assert {row["function"] for row in skipped} == {
        "core_enrol_get_course_enrolment_methods",
        "core_enrol_get_users_courses",
        "core_group_create_groups",
        "core_group_get_course_groups",
        "core_group_add_group_members",
        "core_group_delete_group_members",
        "core_group_get_group_members",
        "core_cohort_create_cohorts",
        "core_cohort_add_cohort_members",
        "core_cohort_get_cohort_members",
        "core_cohort_delete_cohort_members",
        "core_cohort_get_cohorts",
        "gradereport_user_get_grade_items",
        "core_grades_get_gradeitems",
    }


def test_the_out_of_band_events_happen_at_rows_that_exist_once() -> None:
    labels = [row["label"] for row in OBSERVATIONS]

    assert labels.count(INSTANCE_REMOVED_BEFORE) == 1
    assert labels.count(BENCH_USERS_BEFORE) == 1


@pytest.mark.parametrize(
    "index", [i for i, row in enumerate(OBSERVATIONS) if row["nparams"] > len(row["params"])]
)
def test_rebuilt_bulk_requests_start_with_the_recorded_parameters(index: int) -> None:
    observation = OBSERVATIONS[index]
    rebuilt = request_params(observation)

    assert len(rebuilt) == observation["nparams"]
    assert rebuilt[: len(observation["params"])] == [tuple(p) for p in observation["params"]]


def test_every_bulk_row_with_a_cut_answer_is_compared_on_some_items(
    replays: dict[int, Replay],
) -> None:
    cut = [i for i, row in enumerate(OBSERVATIONS) if replayed(row) and "truncated" in row["body"]]

    assert cut, "the recording has answers cut short"
    for index in cut:
        assert len(leading_items(OBSERVATIONS[index]["body"])) >= 3


# ---- facts from the reference that the recording holds no row for ---------------------------


def fields_call(fake: FakeMoodle, fields: list[tuple[str, str]]) -> str:
    return fake.handle(
        method="POST",
        query=b"",
        body=urlencode(fields).encode(),
        content_type="application/x-www-form-urlencoded",
    ).body


def bulk_users(count: int) -> list[tuple[str, str]]:
    return request_params(
        {
            "label": "bulk",
            "nparams": count * 5,
            "params": [["users[0][username]", "bulkxu0"]],
        }
    )


@pytest.fixture
def fake() -> FakeMoodle:
    return FakeMoodle()


def test_control_fields_at_the_end_of_an_oversized_body_are_dropped_so_moodle_answers_xml(
    fake: FakeMoodle,
) -> None:
    fields = [
        *bulk_users(1000),
        ("wstoken", fake.token),
        ("wsfunction", "core_user_create_users"),
        ("moodlewsrestformat", "json"),
    ]

    fake.debug = True
    answer = fields_call(fake, fields)

    # The token is the one field past the limit that PHP still keeps; the function name is lost.
    assert answer.startswith('<?xml version="1.0" encoding="UTF-8" ?>')
    assert "<ERRORCODE>invalidparameter</ERRORCODE>" in answer
    assert "<DEBUGINFO>Missing function name</DEBUGINFO>" in answer
    assert len(fake.users()) == 4, "nothing may be created"


def test_a_full_5000_field_body_with_the_token_in_the_url_is_accepted(fake: FakeMoodle) -> None:
    query = urlencode(
        {
            "wstoken": fake.token,
            "wsfunction": "core_user_create_users",
            "moodlewsrestformat": "json",
        }
    )
    answer = fake.handle(
        method="POST",
        query=query.encode(),
        body=urlencode(bulk_users(1000)).encode(),
        content_type="application/x-www-form-urlencoded",
    )

    assert len(json.loads(answer.body)) == 1000
    assert fake.calls[-1].dropped_vars == 0


def test_one_field_past_the_limit_in_the_body_is_lost(fake: FakeMoodle) -> None:
    query = urlencode(
        {
            "wstoken": fake.token,
            "wsfunction": "core_user_create_users",
            "moodlewsrestformat": "json",
        }
    )
    fields = [*bulk_users(1000), ("users[999][idnumber]", "LOST"), ("users[999][city]", "Gone")]

    fake.debug = True
    answer = fake.handle(
        method="POST",
        query=query.encode(),
        body=urlencode(fields).encode(),
        content_type="application/x-www-form-urlencoded",
    )

    # PHP keeps max_input_vars + 1 body fields: the idnumber survives, the city does not.
    assert json.loads(answer.body)[-1]["username"] == "bulkxu999"
    last = fake.user("bulkxu999")
    assert last is not None
    assert (last.idnumber, last.city) == ("LOST", "")
    assert fake.calls[-1].dropped_vars == 1
