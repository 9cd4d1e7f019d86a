"""Nothing is lost when the database goes away in the middle of a delivery: PostgreSQL stops
(`pg_ctl stop -m fast`) right after Moodle carried out a call, before the worker could record it,
and starts again two seconds later; the worker waits for the database and records what Moodle
did, so the change is neither lost nor made twice."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.factories import TeacherRecordFactory, lookup
from tests.fakes.moodle import FakeMoodle
from tests.worker.conftest import (
    EDITING_TEACHER_ROLE,
    MoodleSync,
    modified,
    one_class,
    people,
    person,
    post_all,
)

POSTGRES_SH = Path(__file__).resolve().parents[2] / ".ci" / "postgres.sh"


DOWN_SECONDS = 2


def restart_postgres() -> None:
    subprocess.run(  # noqa: S603
        ["bash", str(POSTGRES_SH), "restart", os.environ["ZMS_PG_DIR"], str(DOWN_SECONDS)],  # noqa: S607
        check=True,
        capture_output=True,
        timeout=120,
    )


def wait_until_down(url: str) -> None:
    deadline = time.monotonic() + 30
    while not postgres_is_down(url) and time.monotonic() < deadline:
        time.sleep(0.05)


def postgres_is_down(url: str) -> bool:
    try:
        with psycopg.connect(url.replace("+psycopg", ""), connect_timeout=2):
            return False
    except psycopg.OperationalError:
        return True


class RestartAfter(httpx.AsyncBaseTransport):
    """The fake Moodle's transport; right after Moodle answered the first call of `function`,
    PostgreSQL restarts (the worker's connections are gone when it records the result)."""

    def __init__(self, fake: FakeMoodle, function: str, url: str) -> None:
        self.inner = fake.transport()
        self.function = function
        self.url = url
        self.restart: threading.Thread | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.params.get("wsfunction") == self.function and self.restart is None:
            await response.aread()
            self.restart = threading.Thread(target=restart_postgres)
            self.restart.start()
            await asyncio.to_thread(wait_until_down, self.url)
        return response


@pytest.mark.parametrize("after", ["core_user_create_users", "enrol_manual_enrol_users"])
def test_a_database_restart_mid_delivery_loses_no_change(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle, backend: str, after: str
) -> None:
    if backend != "postgresql" or "ZMS_PG_DIR" not in os.environ:
        pytest.skip("restarts the PostgreSQL server that .ci/postgres.sh started")
    world = one_class(students=2)
    post_all(moodle_sync, world.by_entity())
    moodle_sync.drain(fake_moodle)
    course = fake_moodle.course(world.class_["Class_Short_Name"])
    assert course is not None
    old = person(fake_moodle, world.teacher["id"])

    # The class gets a new teacher, who is new to Moodle too.
    replacement = TeacherRecordFactory()
    moodle_sync.post("teachers", [replacement])
    moodle_sync.post("classes", [modified(world.class_, Teacher=lookup(replacement))])
    restarting = RestartAfter(fake_moodle, after, moodle_sync.db.url)

    moodle_sync.drain(fake_moodle, transport=restarting)

    assert restarting.restart is not None
    restarting.restart.join(timeout=60)
    assert moodle_sync.states() == {"done": len(moodle_sync.jobs())}
    new = person(fake_moodle, replacement["id"])
    now = fake_moodle.enrolment(new.id, course.id)
    assert now is not None
    assert (now.roles, now.suspended) == ((EDITING_TEACHER_ROLE,), False)
    gone = fake_moodle.enrolment(old.id, course.id)
    assert gone is not None
    assert gone.suspended, "the replaced teacher is still an active editing teacher"
    link = moodle_sync.link("classes", world.class_["id"])
    assert link is not None
    assert link.detail == {"teacher_userid": new.id}
    assert len(people(fake_moodle)) == 4  # two students, two teachers: nothing made twice
    teacher_link = moodle_sync.link("teachers", replacement["id"])
    assert teacher_link is not None
    assert (teacher_link.moodle_id, teacher_link.adopted) == (new.id, False)
