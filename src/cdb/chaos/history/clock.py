"""Scenario time: seconds from the start of the timeline (negative during warm-up).

Two clocks with one interface. ``WallScenarioClock`` follows the wall (distributed mode).
``LockstepClock`` follows the simulated market of the embedded mode: the market
source calls ``advance`` after each batch, which wakes the tasks whose time has come
and waits until every one of them has either gone back to sleep on the clock or
finished, before the next batch is published. Faults, probes and samples therefore
happen at the same simulated instant on every run with one seed, and nothing the
coordinator does races the market.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

import structlog

T = TypeVar("T")
_log = structlog.get_logger("cdb.chaos.history.clock")


class ClockClosed(Exception):
    """The market ended before the scenario did; nothing will wake a sleeper again."""


class ScenarioClock(Protocol):
    """Where the runner gets scenario time from."""

    def now(self) -> float:
        """Seconds since the start of the timeline."""
        ...

    async def sleep_until(self, t: float) -> None:
        """Return once scenario time has reached ``t``."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Start a task that takes part in the clock's lockstep (if it has one)."""
        ...

    def join(self, task: asyncio.Task[Any] | None = None) -> None:
        """Make ``task`` (default: the calling task) a participant."""
        ...

    def leave(self) -> None:
        """The calling task stops taking part (it will not sleep on the clock again)."""
        ...


class WallScenarioClock:
    """Scenario time on the wall: ``origin`` is the monotonic time of t = 0."""

    def __init__(self, origin: float | None = None) -> None:
        self.origin = time.monotonic() if origin is None else origin

    def set_origin(self, origin: float) -> None:
        self.origin = origin

    def now(self) -> float:
        return time.monotonic() - self.origin

    async def sleep_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            await asyncio.sleep(delay)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        return asyncio.create_task(coro, name=name)

    def join(self, task: asyncio.Task[Any] | None = None) -> None:
        pass

    def leave(self) -> None:
        pass


class LockstepClock:
    """Scenario time driven by ``advance`` (the simulated market).

    Args:
        start: scenario time before the first ``advance`` (minus the warm-up).
        quiet_timeout: wall seconds ``advance`` waits for woken tasks to settle; a
            task that blocks longer (waiting for something only market time brings)
            is let go with a warning instead of freezing the run.
    """

    def __init__(self, start: float = 0.0, quiet_timeout: float = 30.0) -> None:
        self._now = start
        self._waiters: list[tuple[float, int, asyncio.Future[None], asyncio.Task[Any] | None]] = []
        self._seq = itertools.count()
        self._busy: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self._closed = False
        self.quiet_timeout = quiet_timeout
        self.stalls = 0

    def now(self) -> float:
        return self._now

    @property
    def closed(self) -> bool:
        return self._closed

    def _current(self) -> asyncio.Task[Any] | None:
        return asyncio.current_task()

    def join(self, task: asyncio.Task[Any] | None = None) -> None:
        task = task or self._current()
        if task is not None:
            self._busy.add(task)

    def leave(self) -> None:
        task = self._current()
        if task is not None:
            self._busy.discard(task)
            self._changed.set()

    async def sleep_until(self, t: float) -> None:
        if self._closed:
            raise ClockClosed(f"the market ended at t={self._now:.3f}s, before t={t:.3f}s")
        if t <= self._now:
            await asyncio.sleep(0)
            return
        task = self._current()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (t, next(self._seq), future, task))
        if task is not None:
            self._busy.discard(task)
        self._changed.set()
        try:
            await future
        except asyncio.CancelledError:
            future.cancel()
            raise

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.create_task(coro, name=name)
        self._busy.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._busy.discard(t)
            self._changed.set()

        task.add_done_callback(done)
        return task

    async def advance(self, t: float) -> None:
        """Move to ``t``, wake who is due, and wait until they all settle again."""
        if t > self._now:
            self._now = t
        woken = False
        while self._waiters and self._waiters[0][0] <= self._now:
            _, _, future, task = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                if task is not None:
                    self._busy.add(task)
                woken = True
        if woken:
            await asyncio.sleep(0)
        await self._settle()

    async def _settle(self) -> None:
        deadline = time.monotonic() + self.quiet_timeout
        while True:
            self._busy = {t for t in self._busy if not t.done()}
            if not self._busy:
                return
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stalls += 1
                _log.warning("scenario step blocks the simulated market; letting it go",
                             tasks=sorted(t.get_name() for t in self._busy))
                self._busy.clear()
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.05)):
                    await self._changed.wait()
            # Woken tasks may have become runnable without announcing it.
            await asyncio.sleep(0)

    def close(self) -> None:
        """The market is over: every sleeper gets ``ClockClosed``."""
        self._closed = True
        while self._waiters:
            _, _, future, _task = heapq.heappop(self._waiters)
            if not future.done():
                future.set_exception(ClockClosed(f"the market ended at t={self._now:.3f}s"))
        self._busy.clear()
        self._changed.set()
