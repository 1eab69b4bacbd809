"""Fixtures of the resilience tests: servers each test may stop and start, and a rig
of producers and consumers torn down after the test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from tests.integration.resilience.rig import PERSISTENT, Rig, redis_or_exit

from cdb.testing.redis import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis of this test alone (it gets stopped), with AOF persistence."""
    server = redis_or_exit(args=PERSISTENT)
    yield server
    server.close()


@pytest.fixture
def volatile_redis_server() -> Iterator[RedisServer]:
    """A Redis of this test alone without persistence: a restart is a fresh, empty one."""
    server = redis_or_exit()
    yield server
    server.close()


@pytest.fixture
def namespace() -> str:
    return f"r{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def rig_factory() -> AsyncIterator[list[Rig]]:
    rigs: list[Rig] = []
    yield rigs
    for rig in rigs:
        await rig.close()
