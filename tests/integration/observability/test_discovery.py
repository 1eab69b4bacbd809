"""Discovery in a real Redis: instances register with a TTL heartbeat, `cdb status`
finds them with their health, and an instance that stops beating is gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import pytest
import redis.asyncio as aioredis

from cdb.bus.keys import Namespace
from cdb.cli_status import collect
from cdb.clock import WallClock
from cdb.errors import LifecycleError
from cdb.observability.health import Health
from cdb.runtime.discovery import InstanceRecord, Registrar, discover, registry_key
from cdb.runtime.http import HttpServer, build_app
from cdb.testing.ports import free_port
from cdb.testing.redis import RedisServer
from cdb.testing.waiting import eventually_async

pytestmark = pytest.mark.integration


def record(service: str, port: int = 1, instance: str | None = None) -> InstanceRecord:
    now = WallClock().now()
    return InstanceRecord(
        service=service, instance=instance or f"{service}-1", address=f"http://127.0.0.1:{port}",
        version="0.1.0", started="2027-01-01T00:00:00+00:00", started_ns=now,
    )


async def alive(client: aioredis.Redis, ns: Namespace) -> dict[str, bool]:
    return {r.record.key: r.alive for r in await discover(client, ns)}


async def test_an_instance_registers_beats_and_deregisters_on_a_clean_stop(
    redis_client: aioredis.Redis, namespace: Namespace
) -> None:
    async with Registrar(redis_client, namespace, record("ws"), ttl=0.6) as registrar:
        (found,) = await discover(redis_client, namespace)
        assert found.alive
        assert found.record.service == "ws"
        assert found.record.ttl_s == 0.6
        assert found.record.last_seen_ns > 0
        await asyncio.sleep(1.0)  # longer than the TTL: the heartbeat keeps it alive
        assert await alive(redis_client, namespace) == {"ws/ws-1": True}
        assert registrar.beats >= 3
    assert await discover(redis_client, namespace) == []
    with pytest.raises(LifecycleError):
        await registrar.start()


async def test_an_instance_that_stops_beating_is_gone_until_it_comes_back(
    redis_client: aioredis.Redis, namespace: Namespace
) -> None:
    crashed = Registrar(redis_client, namespace, record("signal"), ttl=0.3)
    assert await crashed.beat()  # registered, then the process "dies": no more beats
    assert await alive(redis_client, namespace) == {"signal/signal-1": True}
    await eventually_async(
        lambda: _is(alive(redis_client, namespace), {"signal/signal-1": False}), 3, "expired")
    async with Registrar(redis_client, namespace, record("signal"), ttl=0.3):
        assert await alive(redis_client, namespace) == {"signal/signal-1": True}


async def _is(result: Awaitable[object], expected: object) -> bool:
    return await result == expected


async def test_namespaces_do_not_see_each_other(redis_client: aioredis.Redis) -> None:
    a, b = Namespace("obs-a"), Namespace("obs-b")
    async with Registrar(redis_client, a, record("risk"), ttl=5):
        assert await discover(redis_client, b) == []
        assert len(await discover(redis_client, a)) == 1


async def test_long_gone_records_are_pruned_by_the_others(
    redis_client: aioredis.Redis, namespace: Namespace
) -> None:
    gone = Registrar(redis_client, namespace, record("execution"), ttl=0.1)
    await gone.beat()
    await asyncio.sleep(0.3)
    async with Registrar(redis_client, namespace, record("risk"), ttl=5, retention=0.1):
        assert await alive(redis_client, namespace) == {"risk/risk-1": True}


async def test_a_record_in_an_unknown_format_is_skipped(
    redis_client: aioredis.Redis, namespace: Namespace
) -> None:
    await redis_client.hset(registry_key(namespace), "x/y", b"not json")
    async with Registrar(redis_client, namespace, record("ws"), ttl=5):
        assert list(await alive(redis_client, namespace)) == ["ws/ws-1"]


async def test_the_heartbeat_survives_a_redis_restart_and_registers_again(
    namespace: Namespace,
) -> None:
    with RedisServer() as server:
        client = server.client(socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            async with Registrar(client, namespace, record("db_writer"), ttl=0.3) as registrar:
                await asyncio.to_thread(server.stop)
                await eventually_async(lambda: _true(registrar.failures > 0), 5, "a failed beat")
                await asyncio.to_thread(server.start)  # empty: the record is gone
                await eventually_async(
                    lambda: _is(alive(client, namespace), {"db_writer/db_writer-1": True}), 5,
                    "registered again")
        finally:
            await client.aclose()


async def _true(value: bool) -> bool:
    return value


@pytest.fixture
async def services() -> AsyncIterator[dict[str, tuple[int, Health]]]:
    """Two HTTP APIs answering /health: ws (healthy) and risk (degraded)."""
    out: dict[str, tuple[int, Health]] = {}
    servers = []
    for name in ("ws", "risk"):
        health = Health(name, f"{name}-1", "test")
        if name == "risk":
            async def down() -> None:
                raise ConnectionError("redis://:pw-leak-9@r refused")

            health.add("redis", down, critical=False)
        port = free_port()
        server = HttpServer(build_app(health), "127.0.0.1", port)
        await server.start()
        servers.append(server)
        out[name] = (port, health)
    yield out
    for server in servers:
        await server.stop()


async def test_status_shows_live_instances_with_health_and_the_rest_gone(
    redis_client: aioredis.Redis, namespace: Namespace,
    services: dict[str, tuple[int, Health]],
) -> None:
    registrars = [
        Registrar(redis_client, namespace, record(name, port), ttl=5)
        for name, (port, _) in services.items()
    ]
    registrars.append(Registrar(redis_client, namespace, record("signal", free_port()), ttl=5))
    expired = Registrar(redis_client, namespace, record("execution"), ttl=0.1)
    await expired.beat()
    for registrar in registrars:
        await registrar.start()
    await asyncio.sleep(0.2)
    try:
        rows = {r.service: r for r in await collect(redis_client, namespace, timeout=1.0)}
    finally:
        for registrar in registrars:
            await registrar.stop()
    assert (rows["ws"].state, rows["ws"].health) == ("live", "healthy")
    assert (rows["risk"].state, rows["risk"].health) == ("live", "degraded")
    assert "redis: ConnectionError" in rows["risk"].note
    assert "pw-leak-9" not in rows["risk"].note
    assert (rows["signal"].state, rows["signal"].health) == ("gone", "gone")
    assert rows["signal"].note.startswith("not answering")
    assert (rows["execution"].state, rows["execution"].note[:17]) == ("gone", "heartbeat expired")
