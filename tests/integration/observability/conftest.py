"""One redis-server per session for the observability tests; a namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from cdb.bus.keys import Namespace
from cdb.testing.redis import RedisServer


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = redis_server.client()
    yield client
    await client.aclose()


@pytest.fixture
def namespace() -> Namespace:
    """A namespace no other test uses."""
    return Namespace(f"t{uuid.uuid4().hex[:10]}")
