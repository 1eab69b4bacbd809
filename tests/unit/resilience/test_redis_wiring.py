"""Settings become the Redis client, breaker, backoff and disk buffer of a process."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio.sentinel import SentinelConnectionPool

from cdb.bus.redis import (
    buffer_path,
    close_redis,
    make_bus,
    make_redis,
    sentinel_addresses,
)
from cdb.bus.redis_streams import RedisStreamsBus
from cdb.config import Settings, load_settings
from cdb.errors import ConfigError
from cdb.resilience.backoff import Backoff


def settings(tmp_path: Path, **env: str) -> Settings:
    base = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "1", "REDIS_PASSWORD": "",
            "CDB_SECRETS_DIR": str(tmp_path / "none"), "CDB_BUFFER_DIR": str(tmp_path)}
    return load_settings(environ={**base, **env})


def test_sentinel_addresses_parse_with_a_default_port_and_refuse_garbage() -> None:
    assert sentinel_addresses("a:1, b ,c:26380") == [("a", 1), ("b", 26379), ("c", 26380)]
    with pytest.raises(ConfigError, match="REDIS_SENTINELS"):
        sentinel_addresses("a:port")


def test_each_instance_gets_its_own_buffer_file(tmp_path: Path) -> None:
    s = settings(tmp_path, SERVICE_INSTANCE_NAME="prod-eu")
    assert buffer_path(s, "ws", "ws-1") == tmp_path / "prod-eu.ws-1.buffer.sqlite"
    assert buffer_path(s, "ws", "ws-2") != buffer_path(s, "ws", "ws-1")
    exact = settings(tmp_path, CDB_BUFFER_PATH=str(tmp_path / "mine.sqlite"))
    assert buffer_path(exact, "ws", "ws-1") == tmp_path / "mine.sqlite"


async def test_make_bus_applies_the_breaker_backoff_and_buffer_settings(tmp_path: Path) -> None:
    s = settings(tmp_path, CDB_BREAKER_FAILURES="5", CDB_BREAKER_OPEN_S="7",
                 CDB_BACKOFF_BASE_S="0.5", CDB_BACKOFF_CAP_S="4", CDB_BUFFER_MAX_EVENTS="9",
                 CDB_BUFFER_MAX_BYTES="1000", CDB_BUFFER_FULL_POLICY="reject")
    client = make_redis(s)
    bus = make_bus(s, client, service="ws", instance="ws-1")
    assert type(bus.inner) is RedisStreamsBus
    assert bus.inner.min_replicas == 0  # no replica confirmation unless asked
    assert (bus.breaker.threshold, bus.breaker.open_s) == (5, 7.0)
    assert (bus.backoff.base, bus.backoff.cap) == (0.5, 4.0)
    assert (bus.buffer.max_events, bus.buffer.max_bytes) == (9, 1000)
    assert bus.full_policy == "reject"
    retry = client.connection_pool.connection_kwargs["retry"]
    assert isinstance(retry._backoff, Backoff)
    async with bus:
        assert bus.buffer.path == tmp_path / "default.ws-1.buffer.sqlite"
        assert bus.buffer.path.exists()
    assert bus.closed


async def test_defaults_are_the_specs(tmp_path: Path) -> None:
    s = settings(tmp_path)
    bus = make_bus(s, make_redis(s), service="ws", instance="ws-1")
    assert (bus.breaker.threshold, bus.breaker.open_s) == (3, 60.0)
    assert [bus.backoff.nominal(n) for n in range(1, 7)] == [1, 2, 4, 8, 16, 30]
    assert bus.full_policy == "block"
    await bus.close()


async def test_sentinels_and_replica_confirmation_are_wired(tmp_path: Path) -> None:
    s = settings(tmp_path, REDIS_HOST="", REDIS_SENTINELS="127.0.0.1:1,127.0.0.1:2",
                 REDIS_MASTER="cache", REDIS_MIN_REPLICAS="2")
    client = make_redis(s)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "cache"
    assert len(pool.sentinel_manager.sentinels) == 2
    bus = make_bus(s, client, service="risk", instance="risk-1")
    assert isinstance(bus.inner, RedisStreamsBus)
    assert bus.inner.min_replicas == 2
    await bus.close()
    await close_redis(make_redis(s))
