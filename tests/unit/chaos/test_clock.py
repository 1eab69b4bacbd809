"""The lockstep clock: tasks wake in time order and the market waits for them."""

from __future__ import annotations

import asyncio

import pytest

from cdb.chaos.history.clock import ClockClosed, LockstepClock


async def test_advance_wakes_due_tasks_in_order_and_waits_for_them() -> None:
    clock = LockstepClock(start=0.0)
    seen: list[tuple[str, float]] = []

    async def step(name: str, at: float, work: float) -> None:
        await clock.sleep_until(at)
        seen.append((name, clock.now()))
        await asyncio.sleep(work)  # real work the market must wait for
        seen.append((f"{name} done", clock.now()))

    clock.spawn(step("b", 2.0, 0.02), "b")
    clock.spawn(step("a", 1.0, 0.02), "a")
    await clock.advance(0.5)
    assert seen == []
    await clock.advance(1.5)
    assert seen == [("a", 1.5), ("a done", 1.5)]
    await clock.advance(3.0)
    assert seen[2:] == [("b", 3.0), ("b done", 3.0)]


async def test_a_participant_holds_the_market_until_it_sleeps() -> None:
    clock = LockstepClock(start=0.0)
    clock.join()
    advancing = asyncio.create_task(clock.advance(1.0))
    await asyncio.sleep(0.05)
    assert not advancing.done()  # this task is still busy
    sleeper = asyncio.ensure_future(clock.sleep_until(5.0))
    await asyncio.sleep(0)
    clock.leave()
    await asyncio.wait_for(advancing, 1)
    sleeper.cancel()


async def test_a_task_that_blocks_too_long_is_let_go() -> None:
    clock = LockstepClock(start=0.0, quiet_timeout=0.1)

    async def stuck() -> None:
        await clock.sleep_until(1.0)
        await asyncio.sleep(10)

    task = clock.spawn(stuck(), "stuck")
    await clock.advance(0.5)
    await clock.advance(2.0)
    assert clock.stalls == 1
    task.cancel()


async def test_sleepers_get_clock_closed_when_the_market_ends() -> None:
    clock = LockstepClock(start=0.0)
    sleeper = asyncio.ensure_future(clock.sleep_until(10.0))
    await asyncio.sleep(0)
    clock.close()
    with pytest.raises(ClockClosed):
        await sleeper
    with pytest.raises(ClockClosed):
        await clock.sleep_until(11.0)
