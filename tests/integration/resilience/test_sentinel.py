"""Sentinel: a primary, a replica, SENTINEL FAILOVER under a steady flow; producers and
consumers follow the new primary and nothing is lost or applied twice.

Replication is asynchronous, so a publish counts only once every replica has it
(``REDIS_MIN_REPLICAS`` = the number of replicas): a write that only some replica
confirmed can still vanish when another one is promoted. Until Sentinel turns the old
primary into the new primary's replica (about ten seconds), publishes are not
confirmed and wait in the disk buffer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from tests.integration.resilience.rig import (
    Producer,
    Recorder,
    Rig,
    redis_or_exit,
    settings_for,
)
from tests.integration.resilience.sentinel import SentinelServer

from cdb.bus.keys import FILLS, Namespace
from cdb.events import decode
from cdb.testing.redis import RedisServer
from cdb.testing.waiting import eventually, eventually_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _replicas_up(c: redis.Redis) -> bool:
    replicas: list[dict[str, Any]] = c.sentinel_slaves("mymaster")
    return bool(replicas) and all(
        "s_down" not in r["flags"] and r.get("master-link-status") == "ok" for r in replicas
    )


@pytest.fixture
def cluster() -> Iterator[tuple[RedisServer, list[RedisServer], SentinelServer]]:
    """A primary, a replica and one sentinel."""
    primary = redis_or_exit()
    replicas = [redis_or_exit(args=("--replicaof", "127.0.0.1", str(primary.port)))]
    sentinel = SentinelServer(primary.port)
    try:
        for replica in replicas:
            with redis.Redis(port=replica.port) as c:
                eventually(lambda c=c: c.info("replication").get("master_link_status") == "up",
                           10, "replica in sync")
        sentinel.start()
        sentinel.wait_for(_replicas_up, "sentinel sees the replicas")
        yield primary, replicas, sentinel
    finally:
        sentinel.close()
        for replica in replicas:
            replica.close()
        primary.close()


async def test_a_sentinel_failover_loses_nothing(
    cluster: tuple[RedisServer, list[RedisServer], SentinelServer], namespace: str,
    tmp_path: Path, rig_factory: list[Rig],
) -> None:
    primary, _, sentinel = cluster
    settings = settings_for(
        tmp_path, namespace, redis_port=1, REDIS_HOST="",
        REDIS_SENTINELS=f"127.0.0.1:{sentinel.port}", REDIS_MASTER="mymaster",
        REDIS_MIN_REPLICAS="1", REDIS_REPLICA_TIMEOUT_S="0.5",
    )
    rig = Rig(settings)
    rig_factory.append(rig)
    recorder = await rig.recorder()
    # Slow enough that the stream keeps everything (MAXLEN) for the check at the end.
    producers = [Producer(await rig.bus("ws", f"ws-{i}"), f"p{i}", interval=0.05)
                 for i in (1, 2)]
    for producer in producers:
        producer.start()
    await eventually_async(lambda: _applied(recorder, 200), 15, "flowing")

    await asyncio.to_thread(_failover, sentinel)
    await asyncio.to_thread(
        sentinel.wait_for, lambda c: sentinel.master_port() != primary.port, "failover done"
    )
    seen_at_failover = len(recorder.seen)
    await eventually_async(lambda: _applied(recorder, seen_at_failover + 200), 40,
                           "flowing through the new primary")
    for producer in producers:
        await producer.stop()

    async def confirmed() -> bool:
        # Buffered until a replica confirms them: once Sentinel has made the old
        # primary the new primary's replica.
        return all(p.bus.buffered == 0 for p in producers)

    await eventually_async(confirmed, 40, "every publish confirmed by the replica")
    everything = {i for p in producers for i in p.sent}
    await eventually_async(lambda: _applied(recorder, len(everything)), 30, "all applied")
    for producer in producers:
        assert recorder.applied[producer.name] == producer.sent, producer.name
    assert recorder.seen == everything
    # and the new primary holds every event: none stayed behind on the old one
    with redis.Redis(port=sentinel.master_port()) as new:
        entries = new.xrange(Namespace(namespace).key(FILLS))
    assert {decode(fields[b"e"]).id for _, fields in entries} >= everything


def _failover(sentinel: SentinelServer) -> None:
    with sentinel.client() as c:
        c.execute_command("SENTINEL", "FAILOVER", "mymaster")


async def _applied(recorder: Recorder, n: int) -> bool:
    return len(recorder.seen) >= n
