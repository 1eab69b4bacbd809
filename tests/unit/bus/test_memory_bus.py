"""In-memory bus specifics: backpressure keeps memory flat; drained means acknowledged."""

import asyncio

import pytest

from cdb.bus.memory import MemoryBus
from cdb.errors import BusClosedError
from cdb.events import Alert


def alerts(n: int, start: int = 0) -> list[Alert]:
    return [
        Alert(id=f"a{i}", ts=i, correlation_id="", causation_id="", source="t", level="info",
              code="c", message="m")
        for i in range(start, start + n)
    ]


async def test_publisher_waits_while_a_group_is_full_and_resumes_on_ack() -> None:
    bus = MemoryBus(capacity=10)
    sub = bus.subscribe(["t"], "g", "c1")
    await bus.publish("t", alerts(10))
    blocked = asyncio.create_task(bus.publish("t", alerts(1, 10)))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    batches = await sub.read(max_events=100)
    await sub.ack(batches)
    await asyncio.wait_for(blocked, 1)
    assert await bus.pending("t", "g") == 1
    await bus.close()


async def test_wait_drained_returns_once_every_group_acknowledged() -> None:
    bus = MemoryBus()
    sub = bus.subscribe(["t"], "g", "c1")
    other = bus.subscribe(["t"], "slow", "c1")
    await bus.publish("t", alerts(3))
    waiter = asyncio.create_task(bus.wait_drained(exclude_groups=frozenset({"slow"})))
    await asyncio.sleep(0)
    assert not waiter.done()
    await sub.ack(await sub.read())
    await asyncio.wait_for(waiter, 1)
    assert await bus.pending("t", "slow") == 3
    await other.close()
    await bus.close()


async def test_reads_split_large_chunks_without_losing_or_repeating_events() -> None:
    bus = MemoryBus()
    sub = bus.subscribe(["t"], "g", "c")
    await bus.publish("t", alerts(25))
    seen: list[str] = []
    while batches := await sub.read(max_events=10, timeout=0.01):
        seen += [e.id for b in batches for e in b.events]
        await sub.ack(batches)
    assert seen == [f"a{i}" for i in range(25)]
    assert await bus.pending("t", "g") == 0


async def test_publish_after_close_is_refused() -> None:
    bus = MemoryBus()
    await bus.close()
    with pytest.raises(BusClosedError):
        await bus.publish("t", alerts(1))
