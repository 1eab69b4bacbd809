"""The circuit breaker: 3 failures open it for 60 s, then one trial decides."""

import asyncio

import pytest

from cdb.errors import CircuitOpenError
from cdb.resilience.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **kw: float) -> CircuitBreaker:
    return CircuitBreaker("redis", clock=clock, **kw)  # type: ignore[arg-type]


def test_three_consecutive_failures_open_it_for_sixty_seconds() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(2):
        assert b.allow()
        b.failure("refused")
    assert b.state is BreakerState.CLOSED
    assert b.allow()
    b.failure(ConnectionRefusedError("refused"))
    assert b.state is BreakerState.OPEN
    assert not b.allow()
    assert b.retry_after() == 60.0
    clock.now += 59.9
    assert b.state is BreakerState.OPEN
    assert not b.allow()
    clock.now += 0.1
    assert b.state is BreakerState.HALF_OPEN


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    b = breaker(Clock())
    b.failure("x")
    b.failure("x")
    b.success()
    b.failure("x")
    b.failure("x")
    assert b.state is BreakerState.CLOSED
    assert b.failures == 2


def test_half_open_lets_one_trial_through_and_its_failure_opens_it_again() -> None:
    clock = Clock()
    b = breaker(clock, failures=3, open_s=60)
    for _ in range(3):
        b.failure("down")
    clock.now += 60
    assert b.allow(), "the one trial"
    assert not b.allow(), "others wait for its outcome"
    b.failure("still down")
    assert b.state is BreakerState.OPEN
    assert b.retry_after() == 60.0
    clock.now += 60
    assert b.allow()
    b.success()
    assert b.state is BreakerState.CLOSED
    assert b.allow()
    assert b.allow()
    assert b.opened == 2


def test_a_cancelled_trial_frees_the_slot() -> None:
    clock = Clock()
    b = breaker(clock, failures=1, open_s=5)
    b.failure("down")
    clock.now += 5
    assert b.allow()
    b.release()
    assert b.allow()


def test_listeners_see_every_state_change_once() -> None:
    clock = Clock()
    b = breaker(clock, failures=2, open_s=10)
    seen: list[tuple[str, str]] = []
    b.listen(lambda old, new, _err: seen.append((old.name, new.name)))
    for _ in range(4):
        b.failure("down")  # the 3rd and 4th find it open: no change
    clock.now += 10
    assert b.allow()
    b.success()
    assert seen == [("CLOSED", "OPEN"), ("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED")]


async def test_call_fails_fast_while_open_without_calling() -> None:
    clock = Clock()
    b = breaker(clock, failures=1, open_s=30)
    calls = 0

    async def op() -> int:
        nonlocal calls
        calls += 1
        raise OSError("refused")

    with pytest.raises(OSError, match="refused"):
        await b.call(op)
    with pytest.raises(CircuitOpenError, match=r"next trial in 30\.0 s") as info:
        await b.call(op)
    assert info.value.retry_after == 30.0
    assert calls == 1


async def test_call_releases_the_trial_when_cancelled() -> None:
    clock = Clock()
    b = breaker(clock, failures=1, open_s=1)
    b.failure("down")
    clock.now += 1
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(b.call(hang))
    await started.wait()
    assert not b.allow()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CircuitBreaker("x", failures=0)
    with pytest.raises(ValueError, match="positive"):
        CircuitBreaker("x", open_s=0)
