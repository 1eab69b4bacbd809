"""The flush after an outage is paced by the consumer groups actually on the stream,
so it never pushes a stream past what they read before MAXLEN trims it."""

from __future__ import annotations

import asyncio

import pytest
from tests.integration.resilience.rig import fill

from cdb.bus.keys import FILLS, Namespace
from cdb.bus.redis import BacklogGate
from cdb.bus.redis_streams import RedisStreamsBus
from cdb.resilience.breaker import CircuitBreaker
from cdb.testing.redis import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def test_a_lagging_group_holds_the_flush_until_it_reads(
    volatile_redis_server: RedisServer, namespace: str,
) -> None:
    client = volatile_redis_server.client()
    bus = RedisStreamsBus(client, Namespace(namespace))
    try:
        # Any group counts, a shard's too, whatever its name.
        sub = bus.subscribe([FILLS], "signal.shard-a", "c1")
        await sub.ensure_groups()
        await bus.publish(FILLS, [fill("p", i) for i in range(80)])
        gate = BacklogGate(bus, CircuitBreaker("redis"), high_water=100, poll=0.01)
        assert await gate.backlog(FILLS) == (80, ["signal.shard-a"])
        await asyncio.wait_for(gate(FILLS, 20), 1)  # 80 + 20 fits
        held = asyncio.create_task(gate(FILLS, 30))
        await asyncio.sleep(0.1)
        assert not held.done(), "80 + 30 would run past the high-water mark"
        batches = await sub.read(50, 0.1)
        await sub.ack(batches)
        await asyncio.wait_for(held, 1)
    finally:
        await bus.close()
        await client.aclose()


async def test_a_stream_without_groups_fills_to_the_mark_then_waits_a_while(
    volatile_redis_server: RedisServer, namespace: str,
) -> None:
    client = volatile_redis_server.client()
    bus = RedisStreamsBus(client, Namespace(namespace))
    try:
        gate = BacklogGate(bus, CircuitBreaker("redis"), high_water=50, orphan_wait=1.0,
                           poll=0.01)
        await asyncio.wait_for(gate(FILLS, 40), 5)  # no stream yet
        await bus.publish(FILLS, [fill("p", i) for i in range(40)])
        assert await gate.backlog(FILLS) == (40, [])
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(gate(FILLS, 40), 10)
        waited = loop.time() - started
        assert waited >= 0.95, "consumers get time to create their groups again"
        # once waited for, a stream nobody reads (dead letters) is not held again (the
        # bounds are generous: a loaded host answers slowly, but not a second late)
        started = loop.time()
        await asyncio.wait_for(gate(FILLS, 40), 10)
        assert loop.time() - started < 0.9, "not held for the orphan wait again"
    finally:
        await bus.close()
        await client.aclose()
