"""The reaper takes down a coordinator's throwaway Redis, even one a fault left frozen."""

from __future__ import annotations

import time

from cdb.chaos.targets.reaper import redis_pids, shutdown_redis
from cdb.testing.redis import RedisServer
from cdb.testing.waiting import eventually


def test_a_frozen_redis_is_continued_and_shut_down() -> None:
    with RedisServer(password="pw") as server:
        assert redis_pids(server.port)
        server.pause()  # SIGSTOP, as the redis_down fault in pause mode leaves it
        started = time.monotonic()
        shutdown_redis(server.host, server.port, "pw", wait=5.0)
        assert redis_pids(server.port) == []
        assert time.monotonic() - started < 10
        assert not server.running


def test_a_server_that_ignores_shutdown_is_killed() -> None:
    with RedisServer(password="pw") as server:
        started = time.monotonic()
        shutdown_redis(server.host, server.port, "wrong-password", wait=1.0)  # AUTH fails
        # Killed: on a loaded host the process table may still show it for a moment.
        eventually(lambda: redis_pids(server.port) == [], 4, "redis-server gone")
        assert time.monotonic() - started < 5
