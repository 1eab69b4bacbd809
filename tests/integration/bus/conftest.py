"""Fixtures of the bus tests: one redis-server per session, a unique namespace per test,
and a bus factory parametrized over the in-memory and the Redis Streams bus."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

import pytest
import redis.asyncio as aioredis

from cdb.bus.base import Bus
from cdb.bus.keys import Namespace
from cdb.bus.memory import MemoryBus
from cdb.bus.redis_streams import RedisStreamsBus
from cdb.testing.redis import RedisServer

T = TypeVar("T")


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = redis_server.client()
    yield client
    await client.aclose()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses: tests share the server, never its keys."""
    return f"t{uuid.uuid4().hex[:10]}"


class BusFactory(Protocol):
    def __call__(self, namespace: str | None = None, *, maxlen: int = 10_000) -> Bus: ...


@pytest.fixture(
    params=["memory", pytest.param("redis", marks=pytest.mark.integration)],
)
async def make_bus(
    request: pytest.FixtureRequest, namespace: str
) -> AsyncIterator[BusFactory]:
    """Make buses of one kind; ``namespace`` defaults to the test's own. Buses of one
    namespace share state (one Redis; for memory, one bus per namespace)."""
    made: list[Bus] = []
    memory: dict[tuple[str, int], MemoryBus] = {}
    client: aioredis.Redis | None = None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        client = server.client()

    def factory(ns: str | None = None, *, maxlen: int = 10_000) -> Bus:
        name = namespace if ns is None else ns
        bus: Bus
        if client is None:
            key = (name, maxlen)
            if key not in memory:
                memory[key] = MemoryBus(capacity=maxlen)
            bus = memory[key]
        else:
            bus = RedisStreamsBus(client, Namespace(name), maxlen=maxlen)
        made.append(bus)
        return bus

    yield factory
    for bus in made:
        await bus.close()
    if client is not None:
        await client.aclose()


@pytest.fixture
def eventually() -> Callable[..., Awaitable[object]]:
    """``await eventually(fn, within)``: call async ``fn`` until it returns something
    truthy, and return that; fail after ``within`` s."""

    async def wait(fn: Callable[[], Awaitable[T]], within: float = 5.0) -> T:
        deadline = time.monotonic() + within
        while True:
            result = await fn()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {within} s: {result!r}")
            await asyncio.sleep(0.02)

    return wait
