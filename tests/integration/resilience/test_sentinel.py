"""Sentinel: a primary, a replica, SENTINEL FAILOVER under a steady flow; producers and
consumers follow the new primary and nothing is lost or applied twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from tests.integration.resilience.conftest import redis_or_exit
from tests.integration.resilience.rig import Producer, Recorder, Rig, settings_for
from tests.integration.resilience.sentinel import SentinelServer

from cdb.testing.redis import RedisServer
from cdb.testing.waiting import eventually, eventually_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _replicas_up(c: redis.Redis) -> bool:
    replicas: list[dict[str, Any]] = c.sentinel_slaves("mymaster")  # type: ignore[assignment]
    return bool(replicas) and all(
        "s_down" not in r["flags"] and r.get("master-link-status") == "ok" for r in replicas
    )


@pytest.fixture
def cluster() -> Iterator[tuple[RedisServer, RedisServer, SentinelServer]]:
    primary = redis_or_exit()
    replica = redis_or_exit(args=("--replicaof", "127.0.0.1", str(primary.port)))
    sentinel = SentinelServer(primary.port)
    try:
        with redis.Redis(port=replica.port) as c:
            eventually(lambda: c.info("replication").get("master_link_status") == "up", 10,
                       "replica in sync")
        sentinel.start()
        sentinel.wait_for(_replicas_up, "sentinel sees the replica")
        yield primary, replica, sentinel
    finally:
        sentinel.close()
        replica.close()
        primary.close()


async def test_a_sentinel_failover_loses_nothing(
    cluster: tuple[RedisServer, RedisServer, SentinelServer], namespace: str, tmp_path: Path,
    rig_factory: list[Rig],
) -> None:
    primary, replica, sentinel = cluster
    settings = settings_for(
        tmp_path, namespace, redis_port=1, REDIS_HOST="",
        REDIS_SENTINELS=f"127.0.0.1:{sentinel.port}", REDIS_MASTER="mymaster",
        REDIS_MIN_REPLICAS="1", REDIS_REPLICA_TIMEOUT_S="0.5",
    )
    rig = Rig(settings)
    rig_factory.append(rig)
    recorder = await rig.recorder()
    producers = [Producer(await rig.bus("ws", f"ws-{i}"), f"p{i}") for i in (1, 2)]
    for producer in producers:
        producer.start()
    await eventually_async(lambda: _applied(recorder, 300), 15, "flowing")

    await asyncio.to_thread(_failover, sentinel)
    await asyncio.to_thread(
        sentinel.wait_for, lambda c: sentinel.master_port() == replica.port, "failover done"
    )
    # the old primary follows the new one
    await asyncio.to_thread(sentinel.wait_for, _replicas_up, "old primary is a replica now")
    seen_at_failover = len(recorder.seen)
    await eventually_async(lambda: _applied(recorder, seen_at_failover + 300), 20,
                           "flowing through the new primary")
    for producer in producers:
        await producer.stop()
    everything = {i for p in producers for i in p.sent}
    await eventually_async(lambda: _applied(recorder, len(everything)), 30, "all applied")
    for producer in producers:
        assert recorder.applied[producer.name] == producer.sent, producer.name
    assert recorder.seen == everything
    with redis.Redis(port=primary.port) as old:
        assert old.info("replication")["role"] == "slave"


def _failover(sentinel: SentinelServer) -> None:
    with sentinel.client() as c:
        c.execute_command("SENTINEL", "FAILOVER", "mymaster")


async def _applied(recorder: Recorder, n: int) -> bool:
    return len(recorder.seen) >= n
