"""The allocator is settled at start (one arena, large blocks mapped apart), and freed memory is
handed back to the system after a large batch, and only then."""

from __future__ import annotations

import pytest

from zoho_moodle_sync import memory


def test_only_a_large_batch_is_trimmed_after(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: calls.append)

    memory.release_after(memory.LARGE_BODY_BYTES - 1)
    memory.release_after(memory.LARGE_BODY_BYTES)

    assert calls == [0]


def test_this_system_s_allocator_is_found_and_trims() -> None:
    trim = memory._malloc_trim()
    if trim is None:
        pytest.skip("not glibc")
    assert trim(0) in (0, 1)  # 1: memory was released, 0: there was none to release


def test_the_allocator_is_settled_at_start_unless_the_environment_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(memory, "_mallopt", lambda: lambda *args: calls.append(args) or 1)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)

    assert memory.settle_allocator() == ["MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"]
    assert calls == [(-8, 1), (-3, memory.LARGE_BLOCK_BYTES)]

    calls.clear()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert memory.settle_allocator() == ["MALLOC_MMAP_THRESHOLD_"]
    assert calls == [(-3, memory.LARGE_BLOCK_BYTES)]


def test_this_system_s_allocator_takes_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    if memory._mallopt() is None:
        pytest.skip("not glibc")
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert memory.settle_allocator() == ["MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"]
