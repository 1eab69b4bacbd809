"""Redis for the distributed mode: connections that retry with backoff, follow a
Sentinel failover, and sit behind a circuit breaker with a disk buffer for producers.

::

    client = make_redis(settings)                    # redis-py Retry + Backoff; Sentinel
    bus = make_bus(settings, client, service="ws", instance="ws-1")
    await bus.start()                                # flushes what a crash left on disk
    health.add("redis", redis_probe(bus, client), critical=False)

Three layers, each doing one thing:

- redis-py's own ``Retry`` with cdb's ``Backoff`` retries one command on a connection
  error (``REDIS_RETRIES`` times: a dropped idle connection, a failover under way).
  With Sentinel (``REDIS_SENTINELS``), redis-py's ``Sentinel`` finds the master for
  every new connection, ``SentinelWatch`` moves the open ones within
  ``REDIS_SENTINEL_POLL_S`` of a failover, and with ``REDIS_MIN_REPLICAS`` (set it to
  the number of replicas) a publish counts only once the replicas have it, since
  what only the old master had is gone after the failover.
- The ``CircuitBreaker`` counts commands that still failed; after
  ``CDB_BREAKER_FAILURES`` in a row nothing is sent to Redis for ``CDB_BREAKER_OPEN_S``,
  then one trial.
- The ``BufferedBus`` keeps producers going meanwhile: events go to the disk buffer
  and are flushed, in order, before new ones, once Redis answers again; the flush is
  paced by ``BacklogGate`` so it never pushes a stream past what its consumer groups
  can read before ``MAXLEN`` trims it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cdb.bus.buffered import BufferedBus, guarded
from cdb.bus.disk_buffer import DiskBuffer
from cdb.bus.keys import STREAM_MAXLEN, Namespace
from cdb.bus.redis_streams import RedisStreamsBus
from cdb.bus.sentinel import follow_master
from cdb.bus.settings import BusSettings
from cdb.errors import BusError, CircuitOpenError, ConfigError
from cdb.resilience.backoff import Backoff
from cdb.resilience.breaker import CircuitBreaker
from cdb.resilience.settings import ResilienceSettings

_log = structlog.get_logger("cdb.bus.redis")

FLUSH_HIGH_WATER = STREAM_MAXLEN // 2
"""The flush waits while a consumer group is this far behind (well under MAXLEN)."""


def backoff_of(settings: ResilienceSettings) -> Backoff:
    """The configured backoff policy (CDB_BACKOFF_*)."""
    if settings.cdb_backoff_cap_s < settings.cdb_backoff_base_s:
        raise ConfigError([
            f"CDB_BACKOFF_CAP_S: must be at least CDB_BACKOFF_BASE_S "
            f"({settings.cdb_backoff_base_s}), got {settings.cdb_backoff_cap_s}"
        ])
    return Backoff(
        base=settings.cdb_backoff_base_s, cap=settings.cdb_backoff_cap_s,
        jitter=settings.cdb_backoff_jitter,
    )


def breaker_of(settings: ResilienceSettings, name: str = "redis") -> CircuitBreaker:
    """The configured circuit breaker (CDB_BREAKER_*)."""
    return CircuitBreaker(
        name, failures=settings.cdb_breaker_failures, open_s=settings.cdb_breaker_open_s
    )


def sentinel_addresses(text: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` as pairs (port 26379 when left out).

    Raises:
        ConfigError: an address that is not ``host[:port]``.
    """
    out: list[tuple[str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "26379")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError([f"REDIS_SENTINELS: {item!r} is not host:port"])
        out.append((host, int(port)))
    return out


def make_redis(settings: BusSettings, *, backoff: Backoff | None = None) -> aioredis.Redis:
    """An asyncio Redis client with redis-py's own retry (cdb's backoff policy); through
    the Sentinels of ``REDIS_SENTINELS`` when set. Close it with ``close_redis``."""
    # An empty password (set on purpose) means a Redis without AUTH.
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    timeout = settings.redis_socket_timeout_s
    common: dict[str, Any] = {
        "db": settings.redis_db, "password": password or None, "decode_responses": False,
        "socket_timeout": timeout, "socket_connect_timeout": min(timeout, 3.0),
        "health_check_interval": 15,
        "retry": Retry(backoff or backoff_of(settings), retries=settings.redis_retries),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    if settings.redis_sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            sentinel_addresses(settings.redis_sentinels),
            sentinel_kwargs={
                "socket_timeout": timeout, "socket_connect_timeout": min(timeout, 3.0),
            },
            **common,
        )
        client: aioredis.Redis = sentinel.master_for(
            settings.redis_master, redis_class=aioredis.Redis
        )
        return client
    return aioredis.Redis(host=settings.redis_host or "127.0.0.1", port=settings.redis_port,
                          **common)


async def close_redis(client: aioredis.Redis) -> None:
    """Close ``client``, and its Sentinel connections when it has any."""
    pool = client.connection_pool
    try:
        await client.aclose()
    finally:
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


class SentinelWatch:
    """Asks the Sentinels every ``interval`` s where the master is, so that this process
    follows a failover within that time.

    redis-py asks only when it opens a connection; a connection that keeps working (a
    consumer blocked on the old master, which accepts commands until Sentinel demotes
    it, seconds later) would stay on the old master meanwhile. See ``follow_master``.
    """

    def __init__(self, pool: SentinelConnectionPool, interval: float = 1.0) -> None:
        self._pool = pool
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="redis.sentinel-watch")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            # No sentinel answering is not this task's to report: connections fail
            # and retry on their own.
            with contextlib.suppress(RedisError, OSError):
                await follow_master(self._pool)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class BacklogGate:
    """Paces a buffer flush: waits while a consumer group of the topic is ``high_water``
    events behind, so the flush never pushes a stream past what its groups read before
    ``MAXLEN`` trims it.

    Every group on the stream counts, whatever its name (shards included); a group
    nobody reads any more holds the flush back until it is deleted (logged once). A
    stream without any group (Redis restarted empty, the consumers have not created
    theirs again yet) is filled up to ``high_water`` only, for ``orphan_wait`` s at
    most, then flushed unpaced (a stream nobody consumes, such as a dead-letter one).

    Args:
        bus: the Redis Streams bus the flush publishes to.
        breaker: the bus's breaker; every call goes through it.
        high_water: most events a group may have unread before the flush waits.
        orphan_wait: how long a stream without groups is held at ``high_water`` (s).
        poll: wait between two looks at the backlog (s).
    """

    def __init__(
        self, bus: RedisStreamsBus, breaker: CircuitBreaker, *,
        high_water: int = FLUSH_HIGH_WATER, orphan_wait: float = 30.0, poll: float = 0.05,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._breaker = breaker
        self._high_water = high_water
        self._orphan_wait = orphan_wait
        self._poll = poll
        self._sleep = sleep
        self._clock = clock
        self._orphan_since: dict[str, float] = {}
        self._waiting = False

    async def __call__(self, topic: str, n: int) -> None:
        while True:
            backlog, groups = await guarded(self._breaker, partial(self.backlog, topic))
            if groups:
                self._orphan_since.pop(topic, None)
                go = backlog == 0 or backlog + n <= self._high_water
            else:
                since = self._orphan_since.setdefault(topic, self._clock())
                go = backlog + n <= self._high_water or (
                    self._clock() - since >= self._orphan_wait
                )
            if go:
                if self._waiting:
                    self._waiting = False
                    _log.info("flush going on", topic=topic)
                return
            if not self._waiting:
                self._waiting = True
                _log.warning(
                    "flush waits for consumers to catch up", topic=topic, backlog=backlog,
                    groups=groups or "none yet",
                )
            await self._sleep(self._poll)

    async def backlog(self, topic: str) -> tuple[int, list[str]]:
        """The largest backlog of a group on ``topic`` and the groups; without any
        group, the stream's length.

        Raises:
            BusError: Redis failed.
        """
        key = self._bus.namespace.key(topic)
        client = self._bus.client
        try:
            infos = await client.xinfo_groups(key)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return 0, []
            raise BusError(f"XINFO GROUPS {key} failed: {exc}") from exc
        except RedisError as exc:
            raise BusError(f"XINFO GROUPS {key} failed: {exc}") from exc
        names = [_text(info["name"]) for info in infos]
        if not names:
            try:
                return int(await client.xlen(key)), []
            except RedisError as exc:
                raise BusError(f"XLEN {key} failed: {exc}") from exc
        worst = 0
        for name in names:
            worst = max(worst, await self._bus.pending(topic, name))
        return worst, names


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def buffer_path(settings: BusSettings, service: str, instance: str) -> Path:
    """Where the disk buffer of this instance lives (CDB_BUFFER_PATH, CDB_BUFFER_DIR)."""
    if settings.cdb_buffer_path:
        return Path(settings.cdb_buffer_path)
    if settings.cdb_buffer_dir:
        directory = Path(settings.cdb_buffer_dir)
    else:
        state = os.environ.get("XDG_STATE_HOME")
        directory = (Path(state) if state else Path.home() / ".local" / "state") / "cdb"
    namespace = settings.service_instance_name or "default"
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{namespace}.{instance or service}")
    return directory / f"{name}.buffer.sqlite"


def make_bus(
    settings: BusSettings, client: aioredis.Redis, *, service: str = "", instance: str = "",
    breaker: CircuitBreaker | None = None, backoff: Backoff | None = None,
) -> BufferedBus[RedisStreamsBus]:
    """The distributed bus of this process: Redis Streams (namespaced by
    SERVICE_INSTANCE_NAME) behind a breaker, with a disk buffer. Not started: ``await
    bus.start()``. Closing it closes ``client``."""
    breaker = breaker or breaker_of(settings)
    backoff = backoff or backoff_of(settings)
    namespace = Namespace(settings.service_instance_name)
    inner = RedisStreamsBus(
        client, namespace, min_replicas=settings.redis_min_replicas,
        replica_timeout=settings.redis_replica_timeout_s,
    )
    buffer = DiskBuffer(
        buffer_path(settings, service, instance), max_events=settings.cdb_buffer_max_events,
        max_bytes=settings.cdb_buffer_max_bytes,
    )
    gate = BacklogGate(inner, breaker)
    pool = client.connection_pool
    watch = (
        SentinelWatch(pool, settings.redis_sentinel_poll_s)
        if isinstance(pool, SentinelConnectionPool) else None
    )

    async def close() -> None:
        if watch is not None:
            await watch.stop()
        await close_redis(client)

    return BufferedBus(
        inner, buffer, breaker=breaker, backoff=backoff,
        full_policy=settings.cdb_buffer_full_policy, gate=gate,
        drain_timeout=min(5.0, settings.cdb_drain_timeout_s / 2), service=service,
        instance=instance, on_start=watch.start if watch else None, on_close=close,
        probe=partial(_ping, client),
    )


async def _ping(client: aioredis.Redis) -> None:
    """The breaker's probe: one PING, raising while Redis does not answer."""
    await client.ping()


def redis_probe(bus: BufferedBus[Any], client: aioredis.Redis) -> Callable[[], Awaitable[None]]:
    """The health probe of Redis: a PING through the bus's breaker. While the breaker
    is open it reports that (and how much is buffered) without touching Redis."""

    async def probe() -> None:
        try:
            await bus.breaker.call(client.ping, failing=(RedisError, OSError))
        except CircuitOpenError as exc:
            raise CircuitOpenError(
                f"{exc}; {bus.buffered} events buffered on disk", exc.retry_after
            ) from None
        except (RedisError, OSError) as exc:
            if bus.buffered:
                raise BusError(f"{exc}; {bus.buffered} events buffered on disk") from exc
            raise

    return probe
