"""The buffered bus: what cannot reach the bus goes to disk, and reaches it first, in
order, once it is back; the breaker and backoff space the attempts as configured."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from cdb.bus.base import Batch, DefersAck
from cdb.bus.buffered import BufferedBus, DeferringGuardedSubscription
from cdb.bus.disk_buffer import DiskBuffer
from cdb.bus.memory import MemoryBus, MemorySubscription
from cdb.errors import BufferFullError, BusClosedError, BusError, CircuitOpenError
from cdb.events import Alert, AnyEvent
from cdb.observability.metrics import REGISTRY
from cdb.resilience.backoff import Backoff
from cdb.resilience.breaker import BreakerState, CircuitBreaker
from cdb.testing.waiting import eventually_async


def alerts(start: int, n: int = 1) -> list[AnyEvent]:
    return [
        Alert(id=f"a{i:05d}", ts=i, correlation_id="", causation_id="", source="t",
              level="info", code="c", message="m")
        for i in range(start, start + n)
    ]


class FakeTime:
    """A clock that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        self.now += delay
        await asyncio.sleep(0)


class FlakyBus:
    """A MemoryBus that fails every call while ``down``; records when it was called."""

    def __init__(self, clock: FakeTime | None = None) -> None:
        self.memory = MemoryBus()
        self.down = False
        self.clock = clock
        self.attempts: list[float] = []
        self.reads = 0
        self.fail_publishes = 0
        """Publishes that fail (after which it works), counted from the first."""

    def _check(self) -> None:
        if self.down:
            raise BusError("connection refused")

    async def publish(self, topic: str, events: Sequence[AnyEvent]) -> None:
        self.attempts.append(self.clock.now if self.clock else 0.0)
        self._check()
        if len(self.attempts) <= self.fail_publishes:
            raise BusError("connection refused")
        await self.memory.publish(topic, events)

    def subscribe(self, topics: Sequence[str], group: str, consumer: str) -> FlakySub:
        return FlakySub(self, self.memory.subscribe(topics, group, consumer))

    async def pending(self, topic: str, group: str) -> int:
        self._check()
        return await self.memory.pending(topic, group)

    async def close(self) -> None:
        await self.memory.close()


class FlakySub:
    def __init__(self, bus: FlakyBus, inner: MemorySubscription) -> None:
        self._bus = bus
        self._inner = inner

    async def read(self, max_events: int = 1000, timeout: float = 1.0) -> list[Batch]:
        self._bus.reads += 1
        self._bus._check()
        return await self._inner.read(max_events, timeout)

    async def ack(self, batches: Sequence[Batch]) -> None:
        self._bus._check()
        await self._inner.ack(batches)

    async def claim(self, min_idle: float, max_events: int = 1000) -> list[Batch]:
        self._bus._check()
        return await self._inner.claim(min_idle, max_events)

    async def close(self) -> None:
        await self._inner.close()


async def read_ids(sub: MemorySubscription) -> list[str]:
    batches = await sub.read(10_000, timeout=0.01)
    await sub.ack(batches)
    return [e.id for b in batches for e in b.events]


def fast(tmp_path: Path, inner: FlakyBus, *, max_events: int = 1000,
         **kw: Any) -> BufferedBus[FlakyBus]:
    """A bus with short real intervals."""
    options: dict[str, Any] = {
        "breaker": CircuitBreaker("redis", failures=3, open_s=0.05),
        "backoff": Backoff(base=0.01, cap=0.05),
        "service": "test", "instance": str(tmp_path.name), **kw,
    }
    buffer = DiskBuffer(tmp_path / "buffer.sqlite", max_events=max_events)
    return BufferedBus(inner, buffer, **options)


async def test_publishes_directly_while_the_bus_works(tmp_path: Path) -> None:
    inner = FlakyBus()
    sub = inner.memory.subscribe(["t"], "g", "c")
    async with fast(tmp_path, inner) as bus:
        await bus.publish("t", alerts(0, 3))
        assert bus.buffered == 0
        assert await read_ids(sub) == ["a00000", "a00001", "a00002"]


async def test_outage_buffers_then_flushes_in_order_before_new_events(tmp_path: Path) -> None:
    inner = FlakyBus()
    t_sub = inner.memory.subscribe(["t"], "g", "c")
    u_sub = inner.memory.subscribe(["u"], "g", "c")
    async with fast(tmp_path, inner) as bus:
        await bus.publish("t", alerts(0))
        inner.down = True
        await bus.publish("t", alerts(1, 2))
        await bus.publish("u", alerts(3))
        await bus.publish("t", alerts(4))
        assert bus.buffered == 4
        labels = {"service": "test", "instance": tmp_path.name}
        assert REGISTRY.get_sample_value("cdb_buffered_events", labels) == 4
        assert bus.status()["buffered_events"] == 4
        inner.down = False
        # Published while the buffer still holds events: queued behind them.
        await bus.publish("t", alerts(5))
        await eventually_async(lambda: _empty(bus), 5, "buffer flushed")
        await bus.publish("t", alerts(6))
        assert await read_ids(t_sub) == ["a00000", "a00001", "a00002", "a00004", "a00005",
                                         "a00006"]
        assert await read_ids(u_sub) == ["a00003"]

        async def counted() -> bool:
            # The buffer empties in a worker thread a moment before the metrics move.
            return REGISTRY.get_sample_value("cdb_buffered_events_flushed_total", labels) == 5

        await eventually_async(counted, 5, "flushed events counted")
        assert REGISTRY.get_sample_value("cdb_buffered_events", labels) == 0


async def test_pending_counts_what_is_still_buffered(tmp_path: Path) -> None:
    inner = FlakyBus()
    inner.memory.subscribe(["t"], "g", "c")
    bus = fast(tmp_path, inner, breaker=CircuitBreaker("redis", failures=1, open_s=0.3))
    async with bus:
        inner.down = True
        await bus.publish("t", alerts(0, 2))
        inner.down = False
        # The breaker is open: nothing flushed yet, and pending is not even asked.
        with pytest.raises(CircuitOpenError):
            await bus.pending("t", "g")
        await asyncio.sleep(0.05)
        assert bus.buffered == 2
        await eventually_async(lambda: _empty(bus), 5, "flushed after the open period")
        assert await bus.pending("t", "g") == 2


async def _empty(bus: BufferedBus[FlakyBus]) -> bool:
    return bus.buffered == 0


async def test_timings_follow_backoff_then_breaker(tmp_path: Path) -> None:
    """With failures=5: attempts spaced by the backoff (1, 2, 4 s less jitter) until the
    breaker opens, then one trial every open_s (60 s) until one succeeds."""
    time = FakeTime()
    inner = FlakyBus(time)
    inner.fail_publishes = 7
    breaker = CircuitBreaker("redis", failures=5, open_s=60.0, clock=time)
    backoff = Backoff(base=1.0, cap=30.0, jitter=0.2, rng=random.Random(11))
    expected = Backoff(base=1.0, cap=30.0, jitter=0.2, rng=random.Random(11))
    b1, b2, b3 = (expected.compute(n) for n in (1, 2, 3))
    bus = BufferedBus(inner, DiskBuffer(tmp_path / "b.sqlite"), breaker=breaker,
                      backoff=backoff, sleep=time.sleep)
    await bus.start()
    try:
        await bus.publish("t", alerts(0))  # direct attempt: failure 1
        await eventually_async(lambda: _empty(bus), 5, "flushed")
    finally:
        await bus.close()
    # flush failures 2, 3, 4 wait b1, b2, b3; failure 5 opens it: 60 s to each trial.
    t = [0.0, 0.0, b1, b1 + b2, b1 + b2 + b3, b1 + b2 + b3 + 60, b1 + b2 + b3 + 120]
    assert inner.attempts[:7] == pytest.approx(t)
    assert inner.attempts[7:] == pytest.approx([b1 + b2 + b3 + 180]), "the trial that worked"
    assert 0.8 <= b1 <= 1.0
    assert 1.6 <= b2 <= 2.0
    assert 3.2 <= b3 <= 4.0
    assert breaker.state is BreakerState.CLOSED
    assert breaker.opened == 3


async def test_defaults_open_after_three_failures_for_sixty_seconds(tmp_path: Path) -> None:
    time = FakeTime()
    inner = FlakyBus(time)
    inner.fail_publishes = 5
    breaker = CircuitBreaker("redis", clock=time)
    bus = BufferedBus(inner, DiskBuffer(tmp_path / "b.sqlite"), breaker=breaker,
                      backoff=Backoff(rng=random.Random(2)), sleep=time.sleep)
    await bus.start()
    try:
        await bus.publish("t", alerts(0))
        await eventually_async(lambda: _empty(bus), 5, "flushed")
    finally:
        await bus.close()
    b1 = Backoff(rng=random.Random(2)).compute(1)
    assert inner.attempts == pytest.approx([0, 0, b1, b1 + 60, b1 + 120, b1 + 180])
    assert time.slept == pytest.approx([b1, 60, 60, 60])


async def test_while_open_subscriptions_fail_fast_without_calling_the_bus(
    tmp_path: Path,
) -> None:
    inner = FlakyBus()
    async with fast(tmp_path, inner, breaker=CircuitBreaker("redis", failures=2, open_s=30)) as bus:
        sub = bus.subscribe(["t"], "g", "c")
        inner.down = True
        for _ in range(2):
            with pytest.raises(BusError, match="refused"):
                await sub.read(10, 0.01)
        with pytest.raises(CircuitOpenError, match="circuit open"):
            await sub.read(10, 0.01)
        with pytest.raises(CircuitOpenError):
            await bus.pending("t", "g")
        assert inner.reads == 2
        assert bus.status()["redis_circuit"] == "open"


async def test_block_policy_makes_publishers_wait_for_room(tmp_path: Path) -> None:
    inner = FlakyBus()
    sub = inner.memory.subscribe(["t"], "g", "c")
    async with fast(tmp_path, inner, max_events=5) as bus:
        inner.down = True
        await bus.publish("t", alerts(0, 5))
        assert bus.buffer.full
        waiting = asyncio.create_task(bus.publish("t", alerts(5)))
        await asyncio.sleep(0.1)
        assert not waiting.done(), "waits while full"
        assert bus.status()["buffer_full"] is True
        inner.down = False
        await asyncio.wait_for(waiting, 5)
        await eventually_async(lambda: _empty(bus), 5, "flushed")
        got: list[str] = []
        for _ in range(3):
            got += await read_ids(sub)
        assert got == [f"a{i:05d}" for i in range(6)]


async def test_reject_policy_refuses_when_full(tmp_path: Path) -> None:
    inner = FlakyBus()
    async with fast(tmp_path, inner, max_events=3, full_policy="reject", drain_timeout=0.1) as bus:
        inner.down = True
        await bus.publish("t", alerts(0, 3))
        with pytest.raises(BufferFullError, match="full"):
            await bus.publish("t", alerts(3))
        assert bus.buffered == 3


async def test_what_a_closed_bus_could_not_flush_is_flushed_by_the_next_start(
    tmp_path: Path,
) -> None:
    inner = FlakyBus()
    inner.down = True
    first = fast(tmp_path, inner, drain_timeout=0.1)
    await first.start()
    await first.publish("t", alerts(0, 3))
    await first.close()
    with pytest.raises(BusClosedError):
        await first.publish("t", alerts(3))
    again = FlakyBus()
    sub = again.memory.subscribe(["t"], "g", "c")
    async with fast(tmp_path, again) as second:
        await eventually_async(lambda: _empty(second), 5, "flushed at start")
        assert await read_ids(sub) == ["a00000", "a00001", "a00002"]


async def test_close_flushes_what_the_bus_still_takes(tmp_path: Path) -> None:
    inner = FlakyBus()
    sub = inner.memory.subscribe(["t"], "g", "c")
    bus = fast(tmp_path, inner)
    await bus.start()
    inner.down = True
    await bus.publish("t", alerts(0, 2))
    inner.down = False
    await bus.close()
    assert bus.buffer.count == 0
    # the inner bus is closed too: read what it had before
    assert [e.id for b in sub._take(10) for e in b.events] == ["a00000", "a00001"]


async def test_undecodable_entries_are_parked_not_flushed(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "buffer.sqlite") as buf:
        buf.append("t", [b"\xc1 not msgpack"])
    inner = FlakyBus()
    sub = inner.memory.subscribe(["t"], "g", "c")
    async with fast(tmp_path, inner) as bus:
        await bus.publish("t", alerts(0))
        await eventually_async(lambda: _empty(bus), 5, "flushed")
        assert await read_ids(sub) == ["a00000"]
        assert await asyncio.to_thread(bus.buffer.parked) == 1


async def test_a_probe_ends_the_outage_long_before_the_breaker_would(tmp_path: Path) -> None:
    """Open for 60 s, but the bus is back after a moment: the probe closes the breaker
    and the buffer flushes at once; a subscription reads again."""
    inner = FlakyBus()

    async def ping() -> None:
        inner._check()

    breaker = CircuitBreaker("redis", failures=2, open_s=60)
    async with fast(tmp_path, inner, breaker=breaker, probe=ping) as bus:
        sub = bus.subscribe(["t"], "g", "c")
        inner.down = True
        await bus.publish("t", alerts(0, 3))
        await eventually_async(lambda: _open(breaker), 5, "breaker open")
        assert bus.buffered == 3
        with pytest.raises(CircuitOpenError):
            await sub.read(10, 0.01)
        inner.down = False
        await eventually_async(lambda: _empty(bus), 2, "flushed within a probe step")
        assert breaker.state is BreakerState.CLOSED
        assert bus.probe is not None
        assert bus.probe.closed_early == 1
        batches = await sub.read(10, 0.01)
        assert [e.id for b in batches for e in b.events] == ["a00000", "a00001", "a00002"]


async def _open(breaker: CircuitBreaker) -> bool:
    return breaker.state is BreakerState.OPEN


class DeferringSub(FlakySub):
    def __init__(self, bus: FlakyBus, inner: MemorySubscription) -> None:
        super().__init__(bus, inner)
        self.deferred: list[Batch] = []

    def defer_ack(self, batches: Sequence[Batch]) -> None:
        self.deferred.extend(batches)


class DeferringBus(FlakyBus):
    def subscribe(self, topics: Sequence[str], group: str, consumer: str) -> DeferringSub:
        return DeferringSub(self, self.memory.subscribe(topics, group, consumer))


async def test_subscriptions_defer_acks_when_the_inner_ones_do_past_the_breaker(
    tmp_path: Path,
) -> None:
    assert not isinstance(fast(tmp_path, FlakyBus()).subscribe(["t"], "g", "c"), DefersAck)
    inner = DeferringBus()
    bus = fast(tmp_path, inner)
    sub = bus.subscribe(["t"], "g", "c")
    assert isinstance(sub, DefersAck)
    inner.down = True
    for _ in range(3):
        with pytest.raises(BusError):
            await sub.ack([])
    assert bus.breaker.state is BreakerState.OPEN
    batch = Batch("t", alerts(0), None)
    sub.defer_ack([batch])  # no I/O: the open breaker does not refuse it
    assert isinstance(sub, DeferringGuardedSubscription)
    assert cast(DeferringSub, sub.inner).deferred == [batch]
