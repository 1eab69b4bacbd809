"""The client-side weight limiter: never more than the limit in any window, measured on a
simulated clock (a minute of burst in milliseconds)."""

from __future__ import annotations

import asyncio
import random

import pytest

from cdb.venues.limiter import WindowLimiter


class SimTime:
    """A clock whose sleep moves time instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


def limiter(t: SimTime, limit: int = 1200, window: float = 60.0, **kw: float) -> WindowLimiter:
    return WindowLimiter(limit, window, clock=t.clock, sleep=t.sleep, record=True, **kw)


async def test_a_burst_never_exceeds_the_limit_in_any_window() -> None:
    t = SimTime()
    lim = limiter(t)
    rng = random.Random(7)
    costs = [rng.choice([1, 1, 4, 5, 6, 20, 20, 80]) for _ in range(2_000)]
    await asyncio.gather(*(lim.acquire(c) for c in costs))
    assert lim.granted == sum(costs)
    assert lim.max_in_window() <= 1200
    assert lim.max_in_window(60.0) <= 1200
    # It is a limiter, not a brake: the burst took about as many windows as it needs.
    windows_needed = sum(costs) / 1200
    assert t.now - 1000.0 <= (windows_needed + 1) * 60.0


async def test_within_the_limit_nothing_waits() -> None:
    t = SimTime()
    lim = limiter(t, limit=100)
    waited = [await lim.acquire(10) for _ in range(10)]
    assert waited == [0.0] * 10
    assert lim.used == 100


async def test_the_next_request_waits_for_the_oldest_grant_to_expire() -> None:
    t = SimTime()
    lim = limiter(t, limit=10, window=1.0, margin_s=0.5)
    await lim.acquire(6)
    t.now += 0.2
    await lim.acquire(4)
    waited = await lim.acquire(5)
    # 6 granted at 1000.0 expire after window + margin: 1001.5, 1.3 s after 1000.2.
    assert waited == pytest.approx(1.3)
    assert lim.used == 9


async def test_pause_holds_every_caller_for_retry_after() -> None:
    t = SimTime()
    lim = limiter(t, limit=100)
    lim.pause(3.0)
    assert lim.paused_for == pytest.approx(3.0)
    assert await lim.acquire(1) == pytest.approx(3.0)
    lim.pause(1.0)
    lim.pause(0.5)  # a shorter pause never shortens the current one
    assert await lim.acquire(1) == pytest.approx(1.0)


async def test_weight_the_venue_counted_but_we_did_not_is_booked() -> None:
    t = SimTime()
    lim = limiter(t, limit=1200)
    await lim.acquire(100)
    lim.observe(1150)  # another process on the same IP used 1050
    assert lim.used == 1150
    waited = await lim.acquire(100)
    assert waited == pytest.approx(60.0)
    lim.observe(10)  # a lower count never frees what we granted
    assert lim.used == 100


async def test_waiters_are_served_first_come_first_served() -> None:
    t = SimTime()
    lim = limiter(t, limit=10, window=1.0)
    order: list[int] = []

    async def take(n: int, cost: int) -> None:
        await lim.acquire(cost)
        order.append(n)

    await asyncio.gather(take(0, 10), take(1, 10), take(2, 1), take(3, 10))
    assert order == [0, 1, 2, 3]


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        WindowLimiter(0, 60.0)
    with pytest.raises(ValueError, match="positive"):
        WindowLimiter(10, 0.0)


async def test_a_cost_above_the_limit_is_an_error_not_a_hang() -> None:
    with pytest.raises(ValueError, match="exceeds the limit"):
        await WindowLimiter(10, 1.0).acquire(11)
