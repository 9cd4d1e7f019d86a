"""Handing freed memory back to the system after a large batch.

CPython frees a batch's objects, but the C allocator (glibc's malloc) keeps the freed pages
for reuse, spread over one arena per thread that allocated them: after a few 4 MB requests
on different threads, the process holds several batches' worth of memory it no longer uses.
`malloc_trim` returns those pages. Elsewhere than glibc this does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

LARGE_BODY_BYTES = 1 << 20
"""A request body at least this large is a batch worth trimming after (a trim walks the heap:
a fraction of a millisecond, against the tens of milliseconds such a batch takes)."""


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


def release_after(body_size: int) -> None:
    """After a batch of `body_size` bytes: return the freed memory, if the batch was large."""
    trim = _malloc_trim()
    if trim is not None and body_size >= LARGE_BODY_BYTES:
        trim(0)
