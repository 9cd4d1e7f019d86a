"""The fake Moodle's latency model: off unless asked for, and when on, calls take at least the
modelled time of a real site (lower bounds only; how much longer depends on the machine)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fakes.moodle import (
    CALL_SECONDS,
    ENDPOINT,
    MOODLE_COSTS,
    FakeMoodle,
    LatencyModel,
)

pytestmark = pytest.mark.anyio

SCALE = 0.2
"""Modelled times are cut to a fifth to keep the tests short."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def slow_moodle() -> AsyncIterator[tuple[FakeMoodle, httpx.AsyncClient]]:
    fake = FakeMoodle(latency=LatencyModel(scale=SCALE))
    async with httpx.AsyncClient(transport=fake.transport(), base_url=fake.site_url) as http:
        yield fake, http


async def call(
    fake: FakeMoodle, http: httpx.AsyncClient, function: str, form: dict[str, str]
) -> httpx.Response:
    query = {"wstoken": fake.token, "wsfunction": function, "moodlewsrestformat": "json"}
    response = await http.post(ENDPOINT, params=query, data=form)
    assert "exception" not in response.text, response.text
    return response


def new_users(count: int, prefix: str = "s") -> dict[str, str]:
    form: dict[str, str] = {}
    for i in range(count):
        form |= {
            f"users[{i}][username]": f"{prefix}{i}",
            f"users[{i}][firstname]": "Lina",
            f"users[{i}][lastname]": f"Haddad {i}",
            f"users[{i}][email]": f"{prefix}{i}@students.college.test",
            f"users[{i}][createpassword]": "1",
        }
    return form


def test_the_fake_answers_without_delay_unless_given_a_latency_model() -> None:
    assert FakeMoodle().latency is None


async def test_creating_users_takes_at_least_the_modelled_time_per_call_and_per_user(
    slow_moodle: tuple[FakeMoodle, httpx.AsyncClient],
) -> None:
    fake, http = slow_moodle
    users = 20
    modelled = SCALE * (CALL_SECONDS + users * MOODLE_COSTS["core_user_create_users"].per_item)

    started = time.monotonic()
    response = await call(fake, http, "core_user_create_users", new_users(users))
    elapsed = time.monotonic() - started

    assert len(response.json()) == users
    assert elapsed >= modelled


async def test_enrolling_takes_at_least_the_modelled_time_per_enrolment(
    slow_moodle: tuple[FakeMoodle, httpx.AsyncClient],
) -> None:
    fake, http = slow_moodle
    created = await call(fake, http, "core_user_create_users", new_users(30))
    course = fake.add_course("Applied Science L3", "APPSCI-L3")
    form: dict[str, str] = {}
    for i, user in enumerate(created.json()):
        form |= {
            f"enrolments[{i}][roleid]": "5",
            f"enrolments[{i}][userid]": str(user["id"]),
            f"enrolments[{i}][courseid]": str(course.id),
        }
    modelled = SCALE * (CALL_SECONDS + 30 * MOODLE_COSTS["enrol_manual_enrol_users"].per_item)

    started = time.monotonic()
    await call(fake, http, "enrol_manual_enrol_users", form)
    elapsed = time.monotonic() - started

    assert len(fake.enrolments(course.id)) == 30
    assert elapsed >= modelled


async def test_calls_beyond_the_php_workers_wait_for_a_free_one() -> None:
    fake = FakeMoodle(latency=LatencyModel(workers=1, scale=SCALE))
    async with httpx.AsyncClient(transport=fake.transport(), base_url=fake.site_url) as http:
        started = time.monotonic()
        await asyncio.gather(
            *(call(fake, http, "core_webservice_get_site_info", {}) for _ in range(3))
        )
        elapsed = time.monotonic() - started

    assert len(fake.calls) == 3
    assert elapsed >= 3 * SCALE * CALL_SECONDS
