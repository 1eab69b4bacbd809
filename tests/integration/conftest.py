"""This worker's own redis-server and PostgreSQL, shared by the integration tests that
do not break them (each test keeps to its namespace or schema); a missing server stops
the session with one message. Tests that stop or wipe a server start their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TypeVar

import pytest

from cdb.testing.postgres import PostgresServer, PostgresServerError
from cdb.testing.redis import RedisServer, RedisServerError

S = TypeVar("S")


def _served(start: Callable[[], AbstractContextManager[S]], error: type[Exception],
            what: str) -> Iterator[S]:
    try:
        with start() as server:
            yield server
    except error as exc:
        pytest.exit(f"cannot run the {what} tests: {exc}", returncode=3)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    yield from _served(RedisServer, RedisServerError, "Redis")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    yield from _served(PostgresServer, PostgresServerError, "PostgreSQL")
