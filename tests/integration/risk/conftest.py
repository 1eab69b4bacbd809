"""Fixtures of the ESS persistence tests: one redis-server and one PostgreSQL per
session, a namespace and a schema per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from cdb.storage.store import Store, migrate
from cdb.testing.postgres import PostgresServer
from cdb.testing.redis import RedisServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration/risk" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def namespace() -> str:
    """A namespace (Redis keys) and schema (Postgres) no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = redis_server.client()
    yield client
    await client.aclose()


@pytest.fixture
async def store(postgres_server: PostgresServer, namespace: str) -> AsyncIterator[Store]:
    await migrate(postgres_server.url, schema=f"cdb_{namespace}")
    async with Store(postgres_server.url, schema=f"cdb_{namespace}") as opened:
        yield opened
