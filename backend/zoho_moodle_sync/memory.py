"""Keeping a server's memory near what its current batch needs.

CPython frees a batch's objects, but the C allocator (glibc's malloc) keeps freed pages for
reuse, spread over one arena per thread that allocated them. Three things keep that in check:

- one arena for the whole process (`settle_allocator`, once at start): glibc gives threads
  arenas of their own so that they do not wait for each other's allocations, but Python
  threads take turns under the interpreter's lock anyway, and every arena kept the high-water
  mark of the batches its threads ran;
- large blocks (a request body, its decoded text) are mapped on their own and returned as
  soon as they are freed (same call). By default glibc raises that limit to the largest block
  freed so far, after which every 4 MB body is carved out of an arena, which keeps its
  high-water mark;
- after a large batch, `malloc_trim` returns what the arena kept of it (`release_after`).

Elsewhere than glibc none of this does anything (docs/decisions.md)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable

LARGE_BODY_BYTES = 1 << 20
"""A request body at least this large is a batch worth trimming after (a trim walks the heap:
a fraction of a millisecond, against the tens of milliseconds such a batch takes)."""

LARGE_BLOCK_BYTES = 1 << 20
"""A block at least this large gets pages of its own (glibc's mmap threshold)."""

_SETTINGS = {"MALLOC_ARENA_MAX": (-8, 1), "MALLOC_MMAP_THRESHOLD_": (-3, LARGE_BLOCK_BYTES)}
"""For each glibc setting made at start: `mallopt`'s parameter number (malloc.h) and the value.
Keyed by glibc's own environment variable for it: when the environment sets one, it wins."""


@functools.cache
def _glibc(function: str) -> Callable[..., int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        found: Callable[..., int] = getattr(ctypes.CDLL(name), function)
    except (OSError, AttributeError):  # not glibc
        return None
    return found


def _malloc_trim() -> Callable[[int], int] | None:
    return _glibc("malloc_trim")


def _mallopt() -> Callable[[int, int], int] | None:
    return _glibc("mallopt")


def settle_allocator() -> list[str]:
    """At a process's start, before its threads: one arena, and blocks of `LARGE_BLOCK_BYTES`
    or more mapped on their own, each unless the environment sets it. Returns the settings
    made (by their environment variable's name)."""
    mallopt = _mallopt()
    if mallopt is None:
        return []
    return [
        variable
        for variable, (parameter, value) in _SETTINGS.items()
        if variable not in os.environ and mallopt(parameter, value) == 1
    ]


def release_after(body_size: int) -> None:
    """After a batch of `body_size` bytes: return the freed memory, if the batch was large."""
    trim = _malloc_trim()
    if trim is not None and body_size >= LARGE_BODY_BYTES:
        trim(0)
