"""A circuit breaker: stop calling a dependency that keeps failing, try again later.

::

    CLOSED --(``failures`` consecutive failures)--> OPEN
    OPEN   --(``open_s`` elapsed)-----------------> HALF_OPEN
    HALF_OPEN --(the one trial succeeds)----------> CLOSED
    HALF_OPEN --(the one trial fails)-------------> OPEN (for ``open_s`` again)

While OPEN nothing is tried: callers fail fast with ``CircuitOpenError`` (producers
write to the disk buffer instead, consumers back off). HALF_OPEN lets exactly one
call through; the others keep failing fast until its outcome is known.

``BreakerProbe`` closes an open breaker early once a cheap probe (PING) answers, on
the backoff schedule: the open time stops a retry storm, never the recovery.

Hand-written rather than taken from a library: the one candidate, pybreaker, is not a
dependency of cdb, is synchronous at heart (its async support goes through Tornado),
and reads the wall clock itself, while this state machine is fifty lines, runs on the
event loop without locks, and takes an injectable clock, which is what lets a unit
test check the configured timings exactly.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from cdb.errors import CircuitOpenError
from cdb.resilience.backoff import Backoff, nap

T = TypeVar("T")
Listener = Callable[["BreakerState", "BreakerState", str], None]
"""Called as ``listener(old, new, last_error)`` on every state change."""

_log = structlog.get_logger("cdb.resilience.breaker")


class BreakerState(enum.Enum):
    """Where a breaker is; the value is the ``cdb_breaker_state`` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Counts consecutive failures of one dependency and opens after ``failures``.

    Args:
        name: the dependency, for logs and errors (``redis``).
        failures: consecutive failures that open the breaker.
        open_s: how long it stays open before one trial is let through (s).
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(
        self, name: str, *, failures: int = 3, open_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1:
            raise ValueError(f"a breaker opens after at least 1 failure, not {failures}")
        if open_s <= 0:
            raise ValueError(f"a breaker stays open for a positive time, not {open_s}")
        self.name = name
        self.threshold = failures
        self.open_s = open_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._open_until = 0.0
        self._trial = False
        self.last_error = ""
        self.opened = 0
        """How many times it opened (a trial that failed opens it again)."""
        self._listeners: list[Listener] = []

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, {self.state.name.lower()})"

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` on every state change (metrics, health)."""
        self._listeners.append(listener)

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted while closed."""
        return self._failures

    def retry_after(self) -> float:
        """Seconds until a call may be tried (0 unless open)."""
        if self.state is BreakerState.OPEN:
            return max(0.0, self._open_until - self._clock())
        return 0.0

    def allow(self) -> bool:
        """Whether a call may go through now; in HALF_OPEN, true for the one trial.

        A caller that got ``True`` must report ``success``, ``failure`` or ``release``.
        """
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        """A call went through: close (again)."""
        self._failures = 0
        self._trial = False
        if self._state is not BreakerState.CLOSED:
            self._move(BreakerState.CLOSED)

    def failure(self, error: BaseException | str = "") -> None:
        """A call failed: count it; open at the threshold, or again after a trial."""
        self.last_error = str(error) or type(error).__name__
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self._trial = False
            self._open()
        elif state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.threshold:
                self._open()
        # OPEN: a call started before it opened and failed late; nothing to add.

    def release(self) -> None:
        """A call that was let through ended without an outcome (cancelled)."""
        self._trial = False

    def check(self) -> None:
        """Raise ``CircuitOpenError`` unless a call may go through now (see ``allow``)."""
        if not self.allow():
            raise self.open_error()

    def open_error(self) -> CircuitOpenError:
        """The error of a call refused now."""
        after = self.retry_after()
        why = f" after: {self.last_error}" if self.last_error else ""
        if after > 0:
            text = f"{self.name} circuit open; next trial in {after:.1f} s{why}"
        else:
            text = f"{self.name} circuit half-open; a trial call is in flight{why}"
        return CircuitOpenError(text, after)

    async def call(
        self, fn: Callable[[], Awaitable[T]],
        failing: tuple[type[BaseException], ...] = (Exception,),
    ) -> T:
        """Run ``fn`` through the breaker; exceptions of ``failing`` count as failures.

        Raises:
            CircuitOpenError: not tried, the breaker is open (or its trial is taken).
        """
        self.check()
        try:
            result = await fn()
        except failing as exc:
            self.failure(exc)
            raise
        except BaseException:
            self.release()
            raise
        self.success()
        return result

    def _open(self) -> None:
        self._open_until = self._clock() + self.open_s
        self.opened += 1
        self._move(BreakerState.OPEN)

    def _move(self, new: BreakerState) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        if new is BreakerState.CLOSED:
            self._failures = 0
        # Logged once per outage, not per trial: opening from CLOSED is news, and so is
        # closing again; a failed trial re-opening it is only a retry.
        if old is BreakerState.CLOSED:
            _log.warning(
                "circuit open", dependency=self.name, open_s=self.open_s,
                failures=self._failures, error=self.last_error,
            )
        elif new is BreakerState.CLOSED:
            _log.info("circuit closed", dependency=self.name, opened=self.opened)
        else:
            _log.debug(
                f"circuit {new.name.lower().replace('_', '-')}", dependency=self.name,
                error=self.last_error,
            )
        for listener in self._listeners:
            listener(old, new, self.last_error)


class BreakerProbe:
    """While ``breaker`` is not closed, asks the dependency directly (a cheap ``probe``
    such as PING) on the backoff schedule, and closes the breaker as soon as it answers.

    The breaker's open time protects the dependency from a retry storm of every
    caller; one probe on the backoff schedule (1, 2, 4, 8, 16, 30, 30 ... s with the
    defaults) costs it nothing, and means the pipeline flows again within one step of
    the schedule after the dependency is back, not after the whole open time. A
    failed probe changes nothing: only the callers' own failures open the breaker.

    Args:
        breaker: the breaker to close early.
        probe: the cheap call; raising (anything) or timing out is a failure.
        backoff: the schedule: the n-th probe of an outage comes ``backoff.compute(n)``
            after the one before.
        timeout: longest wait for one probe (s).
        sleep: injectable for tests.
    """

    def __init__(
        self, breaker: CircuitBreaker, probe: Callable[[], Awaitable[object]], backoff: Backoff,
        *, timeout: float = 2.0, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.breaker = breaker
        self._probe = probe
        self._backoff = backoff
        self._timeout = timeout
        self._sleep = sleep
        self._opened = asyncio.Event()
        self.probes = 0
        """Probes sent, over every outage."""
        self.closed_early = 0
        """Outages it ended before the breaker's own trial."""
        breaker.listen(self._on_change)

    def _on_change(self, old: BreakerState, new: BreakerState, error: str) -> None:
        if new is BreakerState.OPEN:
            self._opened.set()

    async def run(self) -> None:
        """Probe through every outage, until cancelled. Each time the breaker opens (a
        trial of its own that failed included) the schedule starts again at its first
        step, so a dependency back just after a failed trial is found within seconds."""
        while True:
            await self._opened.wait()
            attempt = 0
            while not self._closed():
                if self._opened.is_set():
                    self._opened.clear()
                    attempt = 0
                attempt += 1
                await nap(self._backoff.compute(attempt), self._opened, self._sleep)
                if self._closed():
                    break  # a caller's trial closed it meanwhile
                if self._opened.is_set():
                    continue  # opened again meanwhile: start the schedule again
                if await self._answers():
                    _log.info("circuit closed by a probe", dependency=self.breaker.name,
                              probes=attempt)
                    self.closed_early += 1
                    self.breaker.success()

    def _closed(self) -> bool:
        return self.breaker.state is BreakerState.CLOSED

    async def _answers(self) -> bool:
        self.probes += 1
        try:
            await asyncio.wait_for(self._probe(), self._timeout)
        except Exception as exc:  # any failure of the probe means "still down"
            _log.debug("probe failed", dependency=self.breaker.name, error=str(exc))
            return False
        return True
