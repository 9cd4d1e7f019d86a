"""Freed memory is handed back to the system after a large batch, and only then."""

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
