"""A token Moodle refuses, or a service user without the capabilities, pauses the tenant's
delivery instead of burning every job: the jobs wait as they were, a probe now and then checks
the token, and delivery resumes by itself once Moodle accepts it."""

from __future__ import annotations

from tests.factories import StudentRecordFactory
from tests.fakes.moodle import FakeMoodle
from tests.worker.conftest import MoodleSync, moodle_settings, one_class, people, post_all

WRONG_TOKEN = "fedcba9876543210fedcba9876543210"


def test_a_token_moodle_refuses_pauses_delivery_until_it_works(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    settings = moodle_settings(moodle_sync.settings, moodle_token=WRONG_TOKEN)
    world = one_class(students=3)
    post_all(moodle_sync, world.by_entity())

    assert moodle_sync.drain(fake_moodle, settings=settings) == 0

    pause = moodle_sync.pause()
    assert pause is not None
    assert pause.errorcode == "invalidtoken"
    assert "Invalid token - token not found" in pause.reason
    assert WRONG_TOKEN not in pause.reason
    assert [(j.state, j.attempts, j.last_error) for j in moodle_sync.jobs()] == [
        ("pending", 0, None)
    ] * 9
    assert len(fake_moodle.calls) == 1  # the first refusal stopped everything

    # Paused: nothing is sent until the probe is due.
    assert moodle_sync.drain(fake_moodle, settings=settings) == 0
    assert len(fake_moodle.calls) == 1

    # The probe finds the token still refused: still paused, still nothing burnt.
    moodle_sync.end_pause_probe_wait()
    assert moodle_sync.drain(fake_moodle, settings=settings) == 0
    assert [c.function for c in fake_moodle.calls] == [
        "core_course_get_categories",
        "core_webservice_get_site_info",
    ]
    probe_pause = moodle_sync.pause()
    assert probe_pause is not None
    assert probe_pause.probe_at > pause.probe_at

    # The administrator fixes the token in Moodle; at the next probe delivery resumes.
    fake_moodle.add_token(WRONG_TOKEN)
    moodle_sync.end_pause_probe_wait()
    moodle_sync.drain(fake_moodle, settings=settings)

    assert moodle_sync.pause() is None
    assert moodle_sync.states() == {"done": 9}
    assert len(people(fake_moodle)) == 4
    assert all(job.attempts == 0 for job in moodle_sync.jobs())


def test_a_service_user_without_capabilities_pauses_delivery_without_burning_jobs(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    fake_moodle.add_token(WRONG_TOKEN, capable=False)
    settings = moodle_settings(moodle_sync.settings, moodle_token=WRONG_TOKEN)
    students = StudentRecordFactory.build_batch(5, program=None)
    moodle_sync.post("students", students)

    moodle_sync.drain(fake_moodle, settings=settings)

    pause = moodle_sync.pause()
    assert pause is not None
    assert pause.errorcode == "nopermissions"
    assert "(Create users)" in pause.reason
    assert people(fake_moodle) == []
    assert [(j.state, j.attempts) for j in moodle_sync.jobs()] == [("pending", 0)] * 5

    # The capability is granted; the next probe lets delivery go on.
    fake_moodle.add_token(WRONG_TOKEN)
    moodle_sync.end_pause_probe_wait()
    moodle_sync.drain(fake_moodle, settings=settings)

    assert moodle_sync.pause() is None
    assert sorted(u.idnumber for u in people(fake_moodle)) == sorted(s["id"] for s in students)
    assert [(j.state, j.attempts) for j in moodle_sync.jobs()] == [("done", 0)] * 5


def test_a_change_stored_while_paused_waits_with_the_others(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    settings = moodle_settings(moodle_sync.settings, moodle_token=WRONG_TOKEN)
    first, second = StudentRecordFactory.build_batch(2, program=None)
    moodle_sync.post("students", [first])
    moodle_sync.drain(fake_moodle, settings=settings)
    assert moodle_sync.pause() is not None

    moodle_sync.post("students", [second])
    moodle_sync.drain(fake_moodle, settings=settings)

    assert [(j.state, j.attempts) for j in moodle_sync.jobs()] == [("pending", 0)] * 2
    moodle_sync.end_pause_probe_wait()
    moodle_sync.drain(fake_moodle)  # the right token again
    assert moodle_sync.states() == {"done": 2}


def test_a_service_user_that_sees_no_category_pauses_delivery_instead_of_duplicating_them(
    moodle_sync: MoodleSync, fake_moodle: FakeMoodle
) -> None:
    """Without moodle/category:viewcourselist, Moodle answers every category look-up with `[]`
    and no error: believing it would create each programme's category again at every
    delivery."""
    fake_moodle.add_token(WRONG_TOKEN, lacking=["moodle/category:viewcourselist"])
    settings = moodle_settings(moodle_sync.settings, moodle_token=WRONG_TOKEN)
    world = one_class(students=2)
    post_all(moodle_sync, world.by_entity())
    before = [category.id for category in fake_moodle.categories()]

    moodle_sync.drain(fake_moodle, settings=settings)

    pause = moodle_sync.pause()
    assert pause is not None
    assert pause.errorcode == "nocategoryvisible"
    assert "moodle/category:viewcourselist" in pause.reason
    assert [category.id for category in fake_moodle.categories()] == before
    assert "core_course_create_categories" not in [c.function for c in fake_moodle.calls]
    program = moodle_sync.job("programs", world.program["id"])
    assert (program.state, program.attempts) == ("pending", 0)

    # The role gets the capability back: the next probe resumes, and the category is made once.
    fake_moodle.add_token(WRONG_TOKEN)
    moodle_sync.end_pause_probe_wait()
    moodle_sync.drain(fake_moodle, settings=settings)

    assert moodle_sync.pause() is None
    made = [c for c in fake_moodle.categories() if c.idnumber == world.program["id"]]
    assert len(made) == 1
    assert moodle_sync.states() == {"done": 7}
