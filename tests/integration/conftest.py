"""This worker's own redis-server and PostgreSQL, shared by the integration tests that
do not break them (each test keeps to its namespace or schema); a missing server stops
the session with one message. Tests that stop or wipe a server start their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cdb.testing.postgres import PostgresServer, PostgresServerError
from cdb.testing.redis import RedisServer, RedisServerError


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        with RedisServer() as server:
            yield server
    except RedisServerError as exc:
        pytest.exit(f"cannot run the Redis tests: {exc}", returncode=3)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        with PostgresServer() as server:
            yield server
    except PostgresServerError as exc:
        pytest.exit(f"cannot run the PostgreSQL tests: {exc}", returncode=3)
