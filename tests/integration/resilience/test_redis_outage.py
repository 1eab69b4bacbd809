"""Redis goes away under a steady flow of events and comes back: nothing is lost,
nothing applied twice, every producer's events arrive in its order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.integration.resilience.rig import (
    Producer,
    Recorder,
    Rig,
    fill_ids,
    settings_for,
)

from cdb.bus.keys import FILLS, Namespace
from cdb.bus.redis import redis_probe
from cdb.observability.health import Health
from cdb.observability.metrics import REGISTRY
from cdb.resilience.breaker import BreakerState
from cdb.testing.postgres import PostgresServer
from cdb.testing.redis import RedisServer
from cdb.testing.waiting import eventually_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def test_redis_stopped_during_a_steady_flow_then_started_loses_nothing(
    redis_server: RedisServer, postgres_server: PostgresServer, namespace: str,
    tmp_path: Path, rig_factory: list[Rig],
) -> None:
    settings = settings_for(tmp_path, namespace, redis_port=redis_server.port)
    rig = Rig(settings)
    rig_factory.append(rig)
    schema = f"cdb_{namespace}"
    recorder = await rig.recorder()
    writer = await rig.db_writer(postgres_server.url, schema)
    producers = [Producer(await rig.bus("ws", f"ws-{i}"), f"p{i}") for i in (1, 2)]
    health = Health("ws", "ws-1", "test")
    bus = producers[0].bus
    health.add("redis", redis_probe(bus, bus.inner.client), critical=False)
    for producer in producers:
        producer.start()

    await eventually_async(lambda: _applied(recorder, 200), 10, "flowing")
    assert (await health.check()).status == "healthy"
    await asyncio.to_thread(redis_server.stop)
    await eventually_async(lambda: _buffering(producers), 10, "producers buffering")
    await eventually_async(lambda: _open(producers), 10, "breakers open")
    report = await health.check()
    assert report.status == "degraded", "Redis down with events buffered is not unhealthy"
    assert "events buffered on disk" in (report.dependencies["redis"].last_error or "")
    labels = {"service": "ws", "instance": "ws-1"}
    assert (REGISTRY.get_sample_value("cdb_buffered_events", labels) or 0) > 0
    assert REGISTRY.get_sample_value(
        "cdb_breaker_state", {**labels, "dependency": "redis"}
    ) == BreakerState.OPEN.value
    await asyncio.sleep(1.5)  # an outage longer than the breaker's open time
    await asyncio.to_thread(redis_server.start)
    await eventually_async(lambda: _flushed(producers), 20, "buffers flushed")
    await asyncio.sleep(0.5)  # and the flow goes on directly
    for producer in producers:
        await producer.stop()
        assert producer.max_buffered > 0

    sent = {p.name: p.sent for p in producers}
    everything = {i for ids in sent.values() for i in ids}
    await eventually_async(lambda: _applied(recorder, len(everything)), 30, "all applied")
    for name, ids in sent.items():
        assert recorder.applied[name] == ids, f"{name}: every event once, in its order"
    assert recorder.seen == everything

    async def stored() -> bool:
        return len(await fill_ids(postgres_server.url, schema)) >= len(everything)

    await eventually_async(stored, 30, "all fills in PostgreSQL")
    rows = await fill_ids(postgres_server.url, schema)
    assert len(rows) == len(set(rows)) == len(everything)
    assert set(rows) == everything
    assert writer.written >= len(everything)
    assert (await health.check()).status == "healthy"


async def _applied(recorder: Recorder, n: int) -> bool:
    return len(recorder.seen) >= n


async def _buffering(producers: list[Producer]) -> bool:
    return all(p.bus.buffered > 0 for p in producers)


async def _open(producers: list[Producer]) -> bool:
    return all(p.bus.breaker.opened > 0 for p in producers)


async def _flushed(producers: list[Producer]) -> bool:
    return all(p.bus.buffered == 0 for p in producers)


async def test_redis_restarted_empty_recovers_groups_and_keeps_what_was_durable(
    volatile_redis_server: RedisServer, postgres_server: PostgresServer, namespace: str,
    tmp_path: Path, rig_factory: list[Rig],
) -> None:
    server = volatile_redis_server
    settings = settings_for(tmp_path, namespace, redis_port=server.port)
    rig = Rig(settings)
    rig_factory.append(rig)
    schema = f"cdb_{namespace}"
    recorder = await rig.recorder()
    await rig.db_writer(postgres_server.url, schema)
    producer = Producer(await rig.bus("ws", "ws-1"), "p1")
    producer.start()

    async def stored(n: int) -> bool:
        return len(await fill_ids(postgres_server.url, schema)) >= n

    await eventually_async(lambda: stored(300), 15, "fills stored")
    durable = set(await fill_ids(postgres_server.url, schema))
    await asyncio.to_thread(server.stop, kill=True)
    sent_before = len(producer.sent)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(server.start)
    await eventually_async(lambda: _flushed([producer]), 20, "buffer flushed")
    await asyncio.sleep(0.5)
    await producer.stop()
    after = producer.sent[sent_before:]
    assert after, "the producer went on"

    async def landed() -> bool:
        rows = set(await fill_ids(postgres_server.url, schema))
        return set(after) <= rows and set(after) <= recorder.seen

    # Events Redis held when it died are gone with it; from then on, nothing is lost.
    await eventually_async(landed, 30, "everything published after the crash landed")
    rows = await fill_ids(postgres_server.url, schema)
    assert durable <= set(rows), "what was committed stays committed"
    assert len(rows) == len(set(rows))
    assert set(rows) <= set(producer.sent)
    # the consumer groups were created again on the fresh server
    client = server.client()
    try:
        groups = await client.xinfo_groups(Namespace(namespace).key(FILLS))
    finally:
        await client.aclose()
    assert {g["name"] for g in groups} == {b"recorder", b"db_writer"}
    applied = recorder.applied["p1"]
    assert applied == sorted(applied), "in the producer's order"
