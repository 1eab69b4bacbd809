"""Time for services: ``now()`` and timers, simulated or wall.

No service reads the system time directly. The simulated clock is advanced by event
time (the market source moves it as it publishes), so a day of trades replays in
seconds and every timer fires at the same simulated instant on every run.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol

NS_PER_S = 1_000_000_000


class Clock(Protocol):
    """Where services get the time from."""

    def now(self) -> int:
        """Current time in ns since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    @property
    def simulated(self) -> bool:
        """True when time follows events rather than the wall."""
        ...


class WallClock:
    """The real time, for live runs."""

    simulated = False

    def now(self) -> int:
        return time.time_ns()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class SimClock:
    """Time driven by event time; timers fire when it is advanced past them.

    Args:
        start: initial time in ns.
    """

    simulated = True

    def __init__(self, start: int = 0) -> None:
        self._now = start
        self._timers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def now(self) -> int:
        return self._now

    def advance(self, ts: int) -> None:
        """Move time forward to ``ts`` (never backward) and fire due timers in order."""
        if ts <= self._now:
            return
        self._now = ts
        timers = self._timers
        while timers and timers[0][0] <= ts:
            _, _, fut = heapq.heappop(timers)
            if not fut.done():
                fut.set_result(None)

    async def sleep(self, seconds: float) -> None:
        due = self._now + int(seconds * NS_PER_S)
        if due <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (due, next(self._counter), fut))
        await fut
