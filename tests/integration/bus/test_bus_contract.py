"""The Bus contract: the in-memory bus and the Redis Streams bus behave the same.

Every test runs against both (the ``make_bus`` fixture); the Redis runs are marked
``integration`` and use the session's own redis-server and the test's own namespace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cdb.bus.base import Batch, Bus, Subscription
from cdb.events import Alert, AnyEvent

BusFactory = Callable[..., Bus]
Eventually = Callable[..., Awaitable[Any]]
TOPIC = "stream.signals"
OTHER = "stream.fills"


def alerts(n: int, start: int = 0) -> list[Alert]:
    return [
        Alert(id=f"a{i}", ts=i, correlation_id="", causation_id="", source="t", level="info",
              code="c", message="m")
        for i in range(start, start + n)
    ]


def ids(batches: list[Batch]) -> list[str]:
    return [e.id for b in batches for e in b.events]


async def read_n(sub: Subscription, n: int, *, max_events: int = 1000,
                 within: float = 5.0) -> list[Batch]:
    """Read until ``n`` events arrived (or fail after ``within`` s)."""
    got: list[Batch] = []
    deadline = time.monotonic() + within
    while sum(len(b.events) for b in got) < n:
        assert time.monotonic() < deadline, f"only {len(ids(got))} of {n} events arrived"
        got += await sub.read(max_events=max_events, timeout=0.2)
    return got


async def test_events_are_read_in_publish_order(make_bus: BusFactory) -> None:
    bus = make_bus()
    sub = bus.subscribe([TOPIC], "g", "c1")
    published: list[AnyEvent] = []
    for n, start in ((3, 0), (1, 3), (4, 10)):
        batch = alerts(n, start)
        published += batch
        await bus.publish(TOPIC, batch)
    batches = await read_n(sub, len(published))
    assert ids(batches) == [e.id for e in published]
    assert all(b.topic == TOPIC for b in batches)
    assert [e for b in batches for e in b.events] == published


async def test_one_read_returns_a_batch_per_topic(make_bus: BusFactory) -> None:
    bus = make_bus()
    sub = bus.subscribe([TOPIC, OTHER], "g", "c1")
    await bus.publish(TOPIC, alerts(2))
    await bus.publish(OTHER, alerts(3, 100))
    batches = await read_n(sub, 5)
    by_topic = {t: [e.id for b in batches if b.topic == t for e in b.events]
                for t in (TOPIC, OTHER)}
    assert by_topic == {TOPIC: ["a0", "a1"], OTHER: ["a100", "a101", "a102"]}


async def test_each_group_gets_every_event(make_bus: BusFactory) -> None:
    bus = make_bus()
    risk = bus.subscribe([TOPIC], "risk", "r1")
    writer = bus.subscribe([TOPIC], "db_writer", "w1")
    await bus.publish(TOPIC, alerts(5))
    expected = [f"a{i}" for i in range(5)]
    assert ids(await read_n(risk, 5)) == expected
    assert ids(await read_n(writer, 5)) == expected


async def test_consumers_of_one_group_split_events(make_bus: BusFactory) -> None:
    """Each event goes to exactly one member of the group."""
    bus = make_bus()
    first = bus.subscribe([TOPIC], "g", "c1")
    second = bus.subscribe([TOPIC], "g", "c2")
    await bus.publish(TOPIC, alerts(20))
    seen: dict[str, list[str]] = {"c1": [], "c2": []}
    while len(seen["c1"]) + len(seen["c2"]) < 20:
        for name, sub in (("c1", first), ("c2", second)):
            batches = await sub.read(max_events=3, timeout=0.2)
            seen[name] += ids(batches)
            await sub.ack(batches)
    assert seen["c1"]
    assert seen["c2"]
    assert not set(seen["c1"]) & set(seen["c2"])
    assert sorted(seen["c1"] + seen["c2"]) == sorted(f"a{i}" for i in range(20))
    assert await second.read(timeout=0.1) == []


async def test_pending_counts_undelivered_and_unacknowledged_events(
    make_bus: BusFactory,
) -> None:
    bus = make_bus()
    sub = bus.subscribe([TOPIC], "g", "c1")
    await sub.read(timeout=0.01)  # joins the group
    await bus.publish(TOPIC, alerts(10))
    assert await bus.pending(TOPIC, "g") == 10
    batches = await read_n(sub, 4, max_events=4)
    assert await bus.pending(TOPIC, "g") == 10
    await sub.ack(batches)
    assert await bus.pending(TOPIC, "g") == 6


async def test_unacknowledged_events_are_claimed_by_another_consumer_after_min_idle(
    make_bus: BusFactory, eventually: Eventually,
) -> None:
    bus = make_bus()
    crashed = bus.subscribe([TOPIC], "g", "c1")
    rescuer = bus.subscribe([TOPIC], "g", "c2")
    await bus.publish(TOPIC, alerts(3))
    await read_n(crashed, 3)
    assert await bus.pending(TOPIC, "g") == 3
    assert await rescuer.claim(min_idle=5.0) == []  # not idle long enough yet
    claimed: list[Batch] = await eventually(lambda: rescuer.claim(min_idle=0.2))
    assert ids(claimed) == ["a0", "a1", "a2"]
    assert all(b.topic == TOPIC for b in claimed)
    await rescuer.ack(claimed)
    assert await bus.pending(TOPIC, "g") == 0


async def test_ack_removes_events_from_pending_for_good(make_bus: BusFactory) -> None:
    bus = make_bus()
    sub = bus.subscribe([TOPIC], "g", "c1")
    other = bus.subscribe([TOPIC], "g", "c2")
    await bus.publish(TOPIC, alerts(4))
    await sub.ack(await read_n(sub, 4))
    assert await bus.pending(TOPIC, "g") == 0
    await asyncio.sleep(0.05)  # let anything left pending become idle
    assert await other.claim(min_idle=0.01) == []
    assert await sub.read(timeout=0.05) == []


async def test_group_created_after_publishing_starts_at_the_oldest_event(
    make_bus: BusFactory,
) -> None:
    bus = make_bus()
    await bus.publish(TOPIC, alerts(5))
    late = bus.subscribe([TOPIC], "late", "c1")
    assert ids(await read_n(late, 5)) == [f"a{i}" for i in range(5)]


async def test_group_created_after_trimming_starts_at_the_oldest_retained_event(
    make_bus: BusFactory,
) -> None:
    maxlen = 1000
    bus = make_bus(maxlen=maxlen)
    published = alerts(3000)
    for i in range(0, len(published), 500):
        await bus.publish(TOPIC, published[i : i + 500])
    late = bus.subscribe([TOPIC], "late", "c1")
    got: list[str] = []
    while batches := await late.read(max_events=1000, timeout=0.2):
        got += ids(batches)
        await late.ack(batches)
    # Trimming is approximate (whole Redis stream nodes): at least maxlen are kept.
    assert maxlen <= len(got) <= maxlen + 200
    assert got == [e.id for e in published[-len(got) :]]


async def test_read_returns_nothing_after_its_timeout_when_idle(make_bus: BusFactory) -> None:
    bus = make_bus()
    sub = bus.subscribe([TOPIC], "g", "c1")
    started = time.monotonic()
    assert await sub.read(timeout=0.3) == []
    assert 0.25 <= time.monotonic() - started < 2.0


async def test_read_wakes_up_when_an_event_is_published(make_bus: BusFactory) -> None:
    bus = make_bus()
    sub = bus.subscribe([TOPIC], "g", "c1")
    await sub.read(timeout=0.01)  # joins the group
    reader = asyncio.create_task(sub.read(timeout=5.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await bus.publish(TOPIC, alerts(1))
    assert ids(await reader) == ["a0"]
    assert time.monotonic() - started < 1.0


async def test_namespaces_isolate(make_bus: BusFactory, namespace: str) -> None:
    ours = make_bus(namespace)
    theirs = make_bus(namespace + "-other")
    await ours.publish(TOPIC, alerts(2))
    their_sub = theirs.subscribe([TOPIC], "g", "c1")
    assert await their_sub.read(timeout=0.1) == []
    assert await theirs.pending(TOPIC, "g") == 0
    our_sub = make_bus(namespace).subscribe([TOPIC], "g", "c1")
    assert ids(await read_n(our_sub, 2)) == ["a0", "a1"]
