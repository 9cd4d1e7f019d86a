"""How long a worker waits between rounds: not at all while there is work, briefly at the tail
of a burst, the whole poll interval once idle."""

from __future__ import annotations

from zoho_moodle_sync.worker.runner import _IdleWait


def test_an_idle_worker_waits_the_whole_poll_interval() -> None:
    idle = _IdleWait(1.0)
    assert [idle.after(0) for _ in range(3)] == [1.0, 1.0, 1.0]


def test_after_work_it_looks_again_soon_for_a_poll_interval_s_worth_of_empty_rounds() -> None:
    idle = _IdleWait(1.0)

    assert idle.after(250) == 0.0
    assert idle.after(3) == 0.0
    tail = [idle.after(0) for _ in range(6)]

    assert tail == [0.25, 0.25, 0.25, 0.25, 1.0, 1.0]
    assert sum(tail[:4]) == idle.poll_seconds


def test_work_found_in_the_tail_starts_the_short_waits_again() -> None:
    idle = _IdleWait(2.0)
    idle.after(10)
    idle.after(0)
    idle.after(0)

    assert idle.after(1) == 0.0
    assert [idle.after(0) for _ in range(5)] == [0.5, 0.5, 0.5, 0.5, 2.0]
