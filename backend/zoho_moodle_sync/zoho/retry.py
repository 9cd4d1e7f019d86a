"""Exponential backoff with jitter for calls that fail with ZohoUnavailable or ZohoRateLimited,
run by tenacity; the policy (how many tries, how long between them, Zoho's Retry-After) is ours."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from zoho_moodle_sync.errors import ZohoRateLimited, ZohoUnavailable

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

logger = logging.getLogger("zoho_moodle_sync.zoho")

_jitter = random.SystemRandom()


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` counts every try, the first included; delays are in seconds."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        """The pause before retry `retry_number` (0 for the first retry).

        Half the exponential step is fixed and half is random, so the pauses still grow while
        workers that failed together spread out. A Retry-After from Zoho wins when it is longer,
        but never beyond `max_delay`: a longer wait belongs to the caller's job queue.
        """
        step = min(self.max_delay, self.base_delay * 2.0**retry_number)
        pause = step / 2 + _jitter.uniform(0, step / 2)
        if retry_after is not None:
            pause = max(pause, min(retry_after, self.max_delay))
        return pause


async def call_with_retries(
    operation: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    sleep: Sleep = asyncio.sleep,
    what: str,
) -> T:
    """Run `operation`, retrying it while it raises ZohoUnavailable; re-raise the last failure."""

    def pause(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        retry_after = error.retry_after if isinstance(error, ZohoRateLimited) else None
        return policy.delay(state.attempt_number - 1, retry_after)

    def announce(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        logger.warning(
            "%s failed (%s); retry %d of %d in %.2fs",
            what,
            error,
            state.attempt_number,
            policy.attempts - 1,
            state.upcoming_sleep,
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=pause,
        retry=retry_if_exception_type(ZohoUnavailable),
        before_sleep=announce,
        sleep=sleep,
        reraise=True,
    )
    return await retrying(operation)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The delay a Retry-After header asks for, when given in seconds."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
