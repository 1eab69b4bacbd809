"""Fixtures of the coordinator's integration tests: this session's own redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cdb.testing.redis import RedisServer, RedisServerError


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server on a free port; a missing one stops the session with the fix."""
    try:
        with RedisServer(password="chaos-test") as server:
            yield server
    except RedisServerError as exc:
        pytest.exit(f"cannot run the chaos integration tests: {exc}", returncode=3)
