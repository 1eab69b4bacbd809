"""The breaker's probe: while open, one cheap call on the backoff schedule closes the
breaker as soon as the dependency answers, so recovery takes one step of the schedule,
not the breaker's whole open time; a failed probe never opens or extends it."""

from __future__ import annotations

import asyncio
import random

import pytest

from cdb.errors import BusError
from cdb.resilience.backoff import Backoff
from cdb.resilience.breaker import BreakerProbe, BreakerState, CircuitBreaker


class FakeTime:
    """Time that moves only when the probe sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.now += delay
        await asyncio.sleep(0)


async def run_outage(back_at: float, *, rng_seed: int = 5) -> tuple[list[float], FakeTime,
                                                                    CircuitBreaker]:
    """Open a default breaker (3 failures, 60 s) at t=0 against a dependency that
    answers from ``back_at`` on; the times of every probe until it closes."""
    time = FakeTime()
    breaker = CircuitBreaker("redis", clock=time)  # the defaults: 3 failures, 60 s
    probes: list[float] = []

    async def ping() -> None:
        probes.append(time.now)
        if time.now < back_at:
            raise BusError("connection refused")

    probe = BreakerProbe(breaker, ping, Backoff(rng=random.Random(rng_seed)), sleep=time.sleep)
    task = asyncio.create_task(probe.run())
    for _ in range(3):
        breaker.failure("connection refused")
    assert breaker.state is BreakerState.OPEN
    for _ in range(1000):
        await asyncio.sleep(0)
        if breaker.state is BreakerState.CLOSED:
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return probes, time, breaker


def schedule(n: int, rng_seed: int = 5) -> list[float]:
    """When the first ``n`` probes of an outage go out: the default backoff, summed."""
    backoff = Backoff(rng=random.Random(rng_seed))
    out, t = [], 0.0
    for attempt in range(1, n + 1):
        t += backoff.compute(attempt)
        out.append(t)
    return out


async def test_a_five_second_outage_closes_at_the_first_probe_after_it() -> None:
    probes, _time, breaker = await run_outage(back_at=5.0)
    assert breaker.state is BreakerState.CLOSED
    # Probes at ~1, 3, 7 s (1 + 2 + 4, less jitter): the third finds it back.
    assert probes == pytest.approx(schedule(3))
    assert probes[-1] - 5.0 < 4.0, "closed within one step of the schedule, not after 60 s"
    assert breaker.opened == 1


async def test_probes_follow_the_backoff_schedule_and_cap_at_thirty_seconds() -> None:
    """A 200 s outage: probes 1, 2, 4, 8, 16, 30, 30 ... s apart; the breaker's own
    trials (every 60 s) do not reset the schedule, and failed probes never re-open it."""
    probes, _, breaker = await run_outage(back_at=200.0)
    gaps = [b - a for a, b in zip([0.0, *probes], probes, strict=False)]
    nominal = [1, 2, 4, 8, 16] + [30] * (len(gaps) - 5)
    for gap, want in zip(gaps, nominal, strict=True):
        assert 0.8 * want <= gap <= want
    assert breaker.state is BreakerState.CLOSED
    assert probes[-1] - 200.0 <= 30.0
    assert breaker.opened == 1, "a failed probe is not a failure of the breaker"


async def test_a_probe_that_hangs_counts_as_down() -> None:
    breaker = CircuitBreaker("redis", failures=1, open_s=60)
    hung = asyncio.Event()

    async def ping() -> None:
        hung.set()
        await asyncio.sleep(3600)

    probe = BreakerProbe(breaker, ping, Backoff(base=0.01, cap=0.01), timeout=0.05)
    task = asyncio.create_task(probe.run())
    breaker.failure("down")
    await asyncio.wait_for(hung.wait(), 1)
    await asyncio.sleep(0.2)
    assert breaker.state is BreakerState.OPEN
    assert probe.probes >= 2, "the hung probe timed out and the next one went"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class SteppedTime:
    """Time the test moves; a sleep ends once it has moved far enough."""

    def __init__(self) -> None:
        self.now = 0.0
        self._moved = asyncio.Event()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        until = self.now + delay
        while self.now < until:
            self._moved.clear()
            await self._moved.wait()

    async def advance(self, to: float) -> None:
        self.now = to
        self._moved.set()
        for _ in range(200):
            await asyncio.sleep(0)


async def test_a_failed_trial_of_the_breaker_starts_the_schedule_again() -> None:
    """The breaker's own trial at 60 s fails and re-opens it: the probes start again
    at 1 s, so a dependency back just after that trial is found within a second, not
    at the next step of the old schedule (63 s here)."""
    time = SteppedTime()
    breaker = CircuitBreaker("redis", clock=time)
    probes: list[float] = []
    back_at = 60.5

    async def ping() -> None:
        probes.append(time.now)
        if time.now < back_at:
            raise BusError("connection refused")

    probe = BreakerProbe(breaker, ping, Backoff(cap=1000, jitter=0.0), sleep=time.sleep)
    task = asyncio.create_task(probe.run())
    for _ in range(3):
        breaker.failure("refused")
    await time.advance(0)
    for t in (1, 3, 7, 15, 31, 60):
        await time.advance(t)
    assert probes == [1, 3, 7, 15, 31], "the next would be at 63 s"
    assert breaker.allow(), "the breaker's own trial at 60 s"
    breaker.failure("still refused")  # re-opens: the schedule starts again
    await time.advance(60)
    await time.advance(61)
    assert probes[5:] == [61]
    assert breaker.state is BreakerState.CLOSED
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
