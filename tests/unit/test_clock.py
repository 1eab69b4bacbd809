"""The simulated clock follows event time and fires timers in order."""

import asyncio

from cdb.clock import NS_PER_S, SimClock, WallClock


async def test_timers_fire_when_simulated_time_passes_them_in_order() -> None:
    clock = SimClock(start=0)
    fired: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        fired.append(name)

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 2), ("a", 1), ("c", 3))]
    await asyncio.sleep(0)
    clock.advance(int(2.5 * NS_PER_S))
    await asyncio.sleep(0)
    assert fired == ["a", "b"]
    clock.advance(3 * NS_PER_S)
    await asyncio.gather(*tasks)
    assert fired == ["a", "b", "c"]


def test_simulated_time_never_goes_backward() -> None:
    clock = SimClock(start=100)
    clock.advance(50)
    assert clock.now() == 100


def test_wall_clock_is_real_time() -> None:
    import time

    assert abs(WallClock().now() - time.time_ns()) < NS_PER_S
