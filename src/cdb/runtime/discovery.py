"""Service discovery in Redis: every instance registers itself with a TTL heartbeat.

Two keys per namespace (``cdb.bus.keys.Namespace``), so pipelines sharing one Redis do
not see each other:

- ``<ns>:cdb:instances``, a hash: ``service/instance`` -> the instance's record (JSON:
  service, instance, address, grpc address, version, started, host, pid, last seen,
  restarts);
- ``<ns>:cdb:alive:<service>/<instance>``, set with a TTL on every heartbeat: it is
  what says the instance is alive. When the process dies the key expires, the record
  stays, and ``cdb status`` shows the instance as gone until it comes back (a
  restarted instance has the same name and overwrites its record).

A clean stop removes both. Records of instances gone for longer than ``retention``
are removed by the heartbeats of the others. Heartbeats never stop the service: a
failed one is logged once per outage and retried at the next beat (after a Redis
restart without persistence the record is written again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from cdb.bus.keys import Namespace
from cdb.clock import Clock, WallClock
from cdb.lifecycle import State, starting

REGISTRY_KEY = "cdb:instances"
ALIVE_PREFIX = "cdb:alive:"
DEFAULT_TTL_S = 15.0
DEFAULT_RETENTION_S = 86_400.0
_NS_PER_S = 1_000_000_000
_PRUNE_EVERY = 20
"""Heartbeats between two looks for long-gone records."""

_log = structlog.get_logger("cdb.runtime.discovery")
Sleep = Callable[[float], Awaitable[None]]


class InstanceRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What an instance says about itself."""

    service: str
    instance: str
    address: str
    """Base URL of its HTTP API (``/health``, ``/metrics``)."""
    version: str
    started: str
    """When it started (ISO 8601 UTC)."""
    started_ns: int
    host: str = ""
    pid: int = 0
    grpc_address: str = ""
    """``host:port`` of its gRPC health service; empty when off."""
    last_seen_ns: int = 0
    ttl_s: float = DEFAULT_TTL_S
    restarts: int = 0
    """Times its supervisor restarted it (CDB_RESTARTS); 0 when none says."""

    @property
    def key(self) -> str:
        return f"{self.service}/{self.instance}"


class Registration(msgspec.Struct, frozen=True, kw_only=True):
    """A record as found in Redis, and whether its heartbeat is still alive."""

    record: InstanceRecord
    alive: bool
    ttl_left_s: float | None
    """Seconds until the heartbeat expires; None once it has."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(InstanceRecord)


def registry_key(namespace: Namespace) -> str:
    return namespace.key(REGISTRY_KEY)


def alive_key(namespace: Namespace, key: str) -> str:
    return namespace.key(ALIVE_PREFIX + key)


class Registrar:
    """Registers ``record`` and keeps its heartbeat going (an async context manager).

    Args:
        client: asyncio Redis client (responses as bytes or str).
        namespace: the pipeline's namespace.
        record: this instance (``last_seen_ns`` and ``ttl_s`` are filled in).
        ttl: the heartbeat expires this long after the last beat (s); beats come
            every third of it.
        retention: records gone this long are removed (s).
        clock: time source of ``last_seen``.
    """

    def __init__(
        self, client: aioredis.Redis, namespace: Namespace, record: InstanceRecord, *,
        ttl: float = DEFAULT_TTL_S, retention: float = DEFAULT_RETENTION_S,
        clock: Clock | None = None, sleep: Sleep = asyncio.sleep,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, not {ttl}")
        self.client = client
        self.namespace = namespace
        self.record = msgspec.structs.replace(record, ttl_s=ttl)
        self.ttl = ttl
        self.retention = retention
        self.clock = clock or WallClock()
        self._sleep = sleep
        self.state = State.CREATED
        self.beats = 0
        self.failures = 0
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Registrar:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Register now (a failure is retried by the heartbeat) and keep beating."""
        self.state = starting("registrar", self.state)
        await self.beat()
        self._task = asyncio.create_task(self._run(), name=f"discovery.{self.record.key}")

    async def _run(self) -> None:
        while True:
            await self._sleep(self.ttl / 3)
            await self.beat()

    async def beat(self) -> bool:
        """One heartbeat: write the record and renew the alive key; False on failure."""
        record = msgspec.structs.replace(self.record, last_seen_ns=self.clock.now())
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(registry_key(self.namespace), record.key, _encoder.encode(record))
        pipe.set(alive_key(self.namespace, record.key), b"1", px=max(1, int(self.ttl * 1000)))
        try:
            await pipe.execute()
            if self.beats % _PRUNE_EVERY == 0:
                await self._prune()
        except (RedisError, OSError) as exc:
            self.failures += 1
            if not self._failing:
                self._failing = True
                _log.warning("discovery heartbeat failed; retrying", error=str(exc),
                             instance=record.key)
            return False
        if self._failing:
            self._failing = False
            _log.info("discovery heartbeat going again", instance=record.key)
        self.beats += 1
        return True

    async def _prune(self) -> None:
        cutoff = self.clock.now() - int(self.retention * _NS_PER_S)
        stale = [
            r.record.key for r in await discover(self.client, self.namespace)
            if not r.alive and r.record.last_seen_ns < cutoff
        ]
        if stale:
            await self.client.hdel(registry_key(self.namespace), *stale)

    async def stop(self) -> None:
        """Stop beating and deregister (a clean stop is not an instance gone)."""
        if self.state is not State.RUNNING:
            self.state = State.STOPPED
            return
        self.state = State.STOPPING
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # our own cancellation still propagates
        try:
            key = self.record.key
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(registry_key(self.namespace), key)
            pipe.delete(alive_key(self.namespace, key))
            await asyncio.wait_for(pipe.execute(), 2.0)
        except (RedisError, OSError, TimeoutError) as exc:
            _log.warning("could not deregister; the record expires as gone", error=str(exc))
        finally:
            self.state = State.STOPPED


async def discover(client: aioredis.Redis, namespace: Namespace) -> list[Registration]:
    """Every registered instance of ``namespace``, sorted by service and instance."""
    raw: dict[Any, Any] = await client.hgetall(registry_key(namespace))
    records: list[InstanceRecord] = []
    for value in raw.values():
        try:
            records.append(_decoder.decode(value))
        except msgspec.DecodeError:
            continue  # written by an incompatible version: not ours to show
    records.sort(key=lambda r: (r.service, r.instance))
    if not records:
        return []
    pipe = client.pipeline(transaction=False)
    for record in records:
        pipe.pttl(alive_key(namespace, record.key))
    ttls = await pipe.execute()
    out = []
    for record, pttl in zip(records, ttls, strict=True):
        left = int(pttl)
        # -2: no key (expired); -1: no expiry (never written by a registrar).
        alive = left != -2
        out.append(Registration(record=record, alive=alive,
                                ttl_left_s=left / 1000 if left >= 0 else None))
    return out
