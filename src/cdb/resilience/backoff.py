"""The backoff policy of every retry in cdb: exponential, capped, with jitter.

The n-th consecutive failure waits ``base * 2**(n-1)`` seconds, capped at ``cap``
(with the defaults: 1, 2, 4, 8, 16, 30, 30, ... s), shortened by a random part of up to
``jitter`` of it, so processes that failed together do not retry together. The cap is
a hard ceiling: jitter only ever shortens a delay.

It is a redis-py ``AbstractBackoff``, so the same object drives redis-py's own
``Retry`` of a connection and cdb's retry loops (disk buffer flush, db_writer).
redis-py's ``ExponentialWithJitterBackoff`` is not used as is: it draws from the
global ``random`` (no seed, so no reproducible test of the timings) and its full
jitter can retry after almost no wait at all.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from redis.backoff import AbstractBackoff


class Backoff(AbstractBackoff):
    """Exponential backoff with jitter, capped.

    Args:
        base: delay after the first failure (s).
        cap: longest delay (s).
        jitter: fraction (0 to 1) of a delay that may be taken off at random.
        rng: source of the jitter; a seeded ``random.Random`` makes delays repeatable.
    """

    def __init__(
        self, base: float = 1.0, cap: float = 30.0, jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base}, cap={cap}")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"backoff jitter is a fraction from 0 to 1, got {jitter}")
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self._rng = rng or random.Random()

    def __repr__(self) -> str:
        return f"Backoff(base={self.base}, cap={self.cap}, jitter={self.jitter})"

    def nominal(self, failures: int) -> float:
        """The delay after ``failures`` consecutive failures, before jitter."""
        if failures < 1:
            return 0.0
        # 2**n overflows a float long before any realistic retry count; stop doubling
        # once past the cap.
        exponent = min(failures - 1, 62)
        return min(self.cap, self.base * 2.0**exponent)

    def compute(self, failures: int) -> float:
        """The delay after ``failures`` consecutive failures (redis-py calls this)."""
        delay = self.nominal(failures)
        return delay * (1.0 - self.jitter * self._rng.random())


async def nap(
    delay: float, until: asyncio.Event,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Sleep ``delay`` s, or less if ``until`` is set meanwhile (already set: no wait).

    ``sleep`` is injectable so that tests on a fake clock see the delay asked for.
    """
    if until.is_set():
        return
    napping = asyncio.ensure_future(sleep(delay))
    woken = asyncio.ensure_future(until.wait())
    try:
        await asyncio.wait((napping, woken), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (napping, woken):
            task.cancel()
        await asyncio.gather(napping, woken, return_exceptions=True)
