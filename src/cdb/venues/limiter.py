"""Client-side rate limiting: keep request weight (or order count) under a venue's limit.

Binance counts request weight per IP in fixed windows (``REQUEST_WEIGHT``, 1 minute)
and new orders per account (``ORDERS``, 10 s and 1 day); going over answers 429, and
carrying on after 429s earns a 418 ban. ``WindowLimiter`` makes a client stay under
such a limit by itself:

- a *sliding* window: the cost granted within any ``window_s`` never exceeds
  ``limit``, so whichever way the venue aligns its fixed windows it never sees more;
  ``margin_s`` lengthens the window a little to absorb network jitter (a request
  granted at the end of one window may arrive at the start of the next);
- ``observe(used)`` takes the count the venue reports (``X-MBX-USED-WEIGHT-1M``): the
  IP's weight is shared with every other process behind it, so when the venue counts
  more than we granted, the difference is booked here too;
- ``pause(seconds)`` holds every caller (a 429's ``Retry-After``);
- waiters are served first come, first served, so a burst cannot starve a caller.

Time comes from injectable ``clock`` and ``sleep`` callables, so tests measure a burst
of a simulated minute in milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[None]]


class WindowLimiter:
    """Grants costs so that their sum within any window stays at or below a limit.

    Args:
        limit: most cost granted within one window.
        window_s: the window length in seconds.
        margin_s: extra seconds a grant is remembered (network jitter).
        name: what is limited (for messages and metrics).
        clock: monotonic seconds.
        sleep: waits seconds of ``clock``'s time.
        record: keep every grant as ``(time, cost)`` in ``history`` (tests measure it).
    """

    def __init__(
        self, limit: int, window_s: float, *, margin_s: float = 0.0, name: str = "weight",
        clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep,
        record: bool = False,
    ) -> None:
        if limit < 1:
            raise ValueError(f"{name} limit must be at least 1, got {limit}")
        if window_s <= 0 or margin_s < 0:
            raise ValueError(f"{name} window must be positive, got {window_s} (+{margin_s})")
        self.limit = limit
        self.name = name
        self._span = window_s + margin_s
        self._clock = clock
        self._sleep = sleep
        self._grants: deque[tuple[float, int]] = deque()
        self._used = 0
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.history: list[tuple[float, int]] | None = [] if record else None
        self.waited_s = 0.0
        """Total time callers spent waiting (a measure of back-pressure)."""
        self.granted = 0
        """Total cost granted."""

    @property
    def used(self) -> int:
        """Cost granted within the current window."""
        self._expire(self._clock())
        return self._used

    @property
    def paused_for(self) -> float:
        """Seconds left of a pause (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    def _expire(self, now: float) -> None:
        grants = self._grants
        horizon = now - self._span
        while grants and grants[0][0] <= horizon:
            self._used -= grants.popleft()[1]

    def _grant(self, now: float, cost: int) -> None:
        self._grants.append((now, cost))
        self._used += cost
        self.granted += cost
        if self.history is not None:
            self.history.append((now, cost))

    async def acquire(self, cost: int = 1) -> float:
        """Wait until ``cost`` fits under the limit, book it, and return the seconds waited.

        Raises:
            ValueError: ``cost`` exceeds the limit (it could never be granted).
        """
        if cost > self.limit:
            raise ValueError(f"{self.name} cost {cost} exceeds the limit {self.limit}")
        started = self._clock()
        async with self._lock:  # one waiter at a time: first come, first served
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                self._expire(now)
                if self._used + cost <= self.limit:
                    self._grant(now, cost)
                    waited = now - started
                    self.waited_s += waited
                    return waited
                await self._sleep(self._wait_for(now, cost))

    def _wait_for(self, now: float, cost: int) -> float:
        """Seconds until enough old grants expire for ``cost`` to fit."""
        excess = self._used + cost - self.limit
        freed = 0
        for granted_at, granted in self._grants:
            freed += granted
            if freed >= excess:
                return max(granted_at + self._span - now, 1e-3)
        return 1e-3  # unreachable while cost <= limit; never spin

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` from now (extends, never shortens, a pause)."""
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    def observe(self, used: int) -> None:
        """Account for the usage the venue reports for its current window.

        Usage we did not grant (other processes on the same IP, a weight table that
        undercounts) is booked now, so we slow down rather than earn a 429.
        """
        now = self._clock()
        self._expire(now)
        unseen = used - self._used
        if unseen > 0:
            self._grants.append((now, unseen))
            self._used += unseen

    def max_in_window(self, window_s: float | None = None) -> int:
        """Largest cost granted within any ``window_s`` (default: the limit's window)
        over the recorded history (``record=True``)."""
        if self.history is None:
            raise ValueError("max_in_window needs a limiter built with record=True")
        span = self._span if window_s is None else window_s
        best = total = 0
        start = 0
        hist = self.history
        for t, cost in hist:
            total += cost
            while hist[start][0] <= t - span:
                total -= hist[start][1]
                start += 1
            best = max(best, total)
        return best
