"""The fault proxy in front of a real Redis: a client through it sees the toxics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cdb.chaos.proxy.listener import Proxy
from cdb.chaos.proxy.server import ProxyServer
from cdb.testing.redis import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def proxied(redis_server: RedisServer) -> AsyncIterator[tuple[ProxyServer, Proxy,
                                                                   aioredis.Redis]]:
    server = ProxyServer(seed=3)
    proxy = await server.create("redis", "127.0.0.1:0", f"127.0.0.1:{redis_server.port}")
    port = int(proxy.listen.rpartition(":")[2])
    client = aioredis.Redis(host="127.0.0.1", port=port, password=redis_server.password,
                            socket_timeout=1.0, socket_connect_timeout=1.0)
    yield server, proxy, client
    await client.aclose()
    await server.close()


async def test_latency_slows_every_command(
    proxied: tuple[ProxyServer, Proxy, aioredis.Redis]
) -> None:
    _, proxy, client = proxied
    assert await client.ping()
    toxic = proxy.add_toxic({"type": "latency", "attributes": {"latency": 120}})
    started = time.monotonic()
    await client.set("k", "v")
    assert await client.get("k") == b"v"
    assert time.monotonic() - started >= 0.22
    assert toxic.chunks >= 2


async def test_down_and_back(proxied: tuple[ProxyServer, Proxy, aioredis.Redis]) -> None:
    server, _, client = proxied
    assert await client.ping()
    await server.update("redis", {"enabled": False})
    with pytest.raises((RedisConnectionError, RedisTimeoutError)):
        await client.ping()
    await server.update("redis", {"enabled": True})
    assert await client.ping()


async def test_timeout_toxic_blackholes_until_removed(
    proxied: tuple[ProxyServer, Proxy, aioredis.Redis]
) -> None:
    _, proxy, client = proxied
    assert await client.ping()
    proxy.add_toxic({"name": "hole", "type": "timeout", "attributes": {"timeout": 0}})
    with pytest.raises(RedisTimeoutError):
        await client.ping()
    proxy.remove_toxic("hole")
    await client.aclose()
    assert await client.ping()
