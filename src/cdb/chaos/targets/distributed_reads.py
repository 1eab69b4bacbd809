"""What the coordinator reads of a distributed run: every stream (a consumer group of its
own, connected to Redis directly, never through the proxy), the paper venue's ledger
from execution's API, the database, lag and stream details.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from cdb.bus.keys import ALL_STREAMS, Namespace
from cdb.bus.redis_streams import RedisStreamsBus, read_to_end
from cdb.bus.redis_subscription import RedisStreamsSubscription
from cdb.chaos.scenario.registry import Unavailable
from cdb.chaos.targets.base import GROUPS_OF, Plan
from cdb.chaos.targets.db import SqlReader
from cdb.chaos.targets.distributed_services import ServicesTarget
from cdb.chaos.targets.exchange import FakeExchange
from cdb.errors import BusError
from cdb.events import AnyEvent

RECORDER_GROUP = "chaos.recorder"
T = TypeVar("T")
_PUBLISH_RETRY_S = 5.0
"""How long the coordinator retries one publish (Redis restarting under a fault)."""
_CALL_S = 3.0
"""Longest wait for one Redis call of the coordinator: a connection that hangs (a Redis
stopping or starting) fails instead of holding the run."""
_OPEN = 2**63 - 1
"""End of a blind span not closed yet (no trade handled since the restart)."""


async def bounded(call: Awaitable[T], what: str) -> T:
    """``call``, or BusError after ``_CALL_S``."""
    try:
        async with asyncio.timeout(_CALL_S):
            return await call
    except TimeoutError:
        raise BusError(f"{what}: no answer from Redis within {_CALL_S:g}s") from None


class ReadsTarget(ServicesTarget):
    """A target the coordinator observes over Redis, HTTP and SQL."""

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self._client: aioredis.Redis | None = None
        self.bus: RedisStreamsBus | None = None
        self._recorder: asyncio.Task[None] | None = None
        self._recording_on = True
        self._sql: SqlReader | None = None
        self.schema: str | None = None
        self.exchange: FakeExchange | None = None
        """The fake Binance execution trades on (``pipeline.venue: fake-binance``)."""
        self._ledger: dict[str, dict[str, Any]] | None = None
        """The paper venue's executions read from execution's API, by venue fill id,
        over every process execution ran as (None: never read)."""
        self._ledger_read: tuple[int, int] | None = None
        """(pid, wall ns) of the last read of the ledger."""
        self._ws_published: dict[str, Any] | None = None

    async def _record(self, sub: RedisStreamsSubscription) -> None:
        while self._recording_on:
            try:
                batches = await sub.read(10_000, 0.2)
                for batch in batches:
                    self.recording.on_events(batch.topic, batch.events)
                if batches:
                    await sub.ack(batches)
            except BusError:
                await asyncio.sleep(0.2)  # Redis down: read again once it is back

    async def observe(self) -> None:
        await self._read_ledger()

    async def _read_ledger(self) -> None:
        """Merge execution's ``/venue/ledger`` into the run's ledger. A restarted
        execution starts an empty one: what the dead process made after its last read
        is missing. That span is kept in event time (``ledger_blind``): from the newest
        trade the dead process had handled at its last read to the newest the new one
        had handled at its first (a fill's time is its trade's, and execution may run
        behind the market, so wall-clock read times would not bound it)."""
        if self.exchange is not None or "execution" not in self.ports:
            return
        pid = self.service_pid("execution")
        try:
            # The horizon first: the ledger read after it holds every fill up to it.
            health = await self._http.get(self._url("execution", "/health"), timeout=2.0)
            horizon = int((health.json().get("details") or {}).get("last_trade_ts") or 0)
            r = await self._http.get(self._url("execution", "/venue/ledger"), timeout=2.0)
        except (httpx.HTTPError, ValueError, TypeError):
            return
        if r.status_code != 200:
            return
        rows: list[dict[str, Any]] = r.json()
        if self._ledger is None:
            self._ledger = {}
        blind = self.recording.ledger_blind
        if self._ledger_read is not None and pid is not None and self._ledger_read[0] != pid:
            # Open until the new process has handled a trade (its horizon then).
            blind.append((self._ledger_read[1], _OPEN))
        if blind and blind[-1][1] == _OPEN and horizon:
            blind[-1] = (blind[-1][0], max(blind[-1][0], horizon))
        for row in rows:
            self._ledger[row["venue_fill_id"]] = row
        if pid is not None:
            self._ledger_read = (pid, horizon)

    async def _read_ws_count(self) -> None:
        """What ws says it published, just before it is stopped: the stream must hold
        at least that many entries afterwards (a lost tail is found)."""
        try:
            r = await self._http.get(self._url("ws", "/health"), timeout=2.0)
            details = r.json().get("details") or {}
            self._ws_published = {"service": "ws", "published": int(details["trades"])}
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            self._ws_published = None

    async def _drain_recorder(self) -> None:
        assert self.bus is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pending = sum([await bounded(self.bus.pending(t, RECORDER_GROUP), "pending")
                               for t in ALL_STREAMS])
            except (BusError, RedisError):
                break  # Redis is gone: the recorder has what it could get
            if not pending:
                break
            await asyncio.sleep(0.1)
        self._recording_on = False
        if self._recorder is not None:
            await asyncio.wait([self._recorder], timeout=3)

    async def _streams(self) -> dict[str, Any]:
        out = {}
        for stream in ALL_STREAMS:
            try:
                out[stream] = await bounded(self.stream_info(stream), f"info of {stream}")
            except (BusError, RedisError):
                break  # Redis is gone: each further call would only wait to fail
        return out

    async def _clean_shared(self) -> None:
        """A shared Redis or PostgreSQL keeps nothing of this run."""
        if self._client is not None and self.plan.redis_url:
            await self._forget_keys()
        if self._sql is not None and self.plan.postgres_url and self.schema:
            with contextlib.suppress(Exception):
                await self._sql.query(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    async def _forget_keys(self) -> None:
        """A shared Redis keeps nothing of this run (its namespace's keys)."""
        assert self._client is not None
        with contextlib.suppress(RedisError):
            async for key in self._client.scan_iter(match=f"{self.namespace}:*", count=500):
                await self._client.delete(key)

    async def sql(self, query: str) -> list[dict[str, Any]]:
        if self._sql is None:
            raise Unavailable("the database is not started")
        return await self._sql.query(query)

    async def lag(self) -> dict[str, dict[str, int]]:
        assert self.bus is not None
        out: dict[str, dict[str, int]] = {}
        for group, topics in GROUPS_OF.items():
            if group not in self.services:
                continue
            for topic in topics:
                out.setdefault(topic, {})[group] = await bounded(
                    self.bus.pending(topic, group), f"pending of {group} on {topic}")
        return out

    async def redis_memory(self) -> int | None:
        if self._client is None:
            return None
        try:
            info = await self._client.info("memory")
        except (RedisError, OSError):
            return None
        return int(info.get("used_memory", 0))

    async def stream_info(self, stream: str) -> dict[str, Any]:
        assert self._client is not None
        key = Namespace(self.namespace).key(stream)
        try:
            info = await self._client.xinfo_stream(key)
            groups = await self._client.xinfo_groups(key)
        except ResponseError:
            return {"stream": stream, "length": 0, "entries_added": 0, "groups": {},
                    "dead_lettered": 0}
        dead = await self._client.xlen(Namespace(self.namespace).dead_letter(stream))

        def text(v: Any) -> str:
            return v.decode() if isinstance(v, bytes) else str(v)

        added = int(info.get("entries-added", info.get("length", 0)) or 0)

        def counts(g: dict[str, Any]) -> dict[str, Any]:
            if read_to_end(g, info):  # Redis's counters can be off after an AOF reload
                return {"pending": int(g.get("pending", 0)), "lag": 0, "entries_read": added}
            return {"pending": int(g.get("pending", 0)), "lag": g.get("lag"),
                    "entries_read": g.get("entries-read")}

        return {
            "stream": stream, "length": int(info.get("length", 0)), "entries_added": added,
            "dead_lettered": int(dead),
            "groups": {text(g["name"]): counts(g)
                       for g in groups if text(g["name"]) != RECORDER_GROUP},
        }

    async def publish(self, topic: str, events: list[AnyEvent]) -> None:
        """Publish as a producer would, retrying for a few seconds while Redis comes back
        (a repeated event is absorbed: consumers are idempotent on event ids)."""
        assert self.bus is not None
        deadline = time.monotonic() + _PUBLISH_RETRY_S
        while True:
            try:
                await bounded(self.bus.publish(topic, events), f"publish to {topic}")
                return
            except BusError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    def now_ns(self) -> int:
        return time.time_ns()

    def exchange_url(self) -> str:
        if self.exchange is None:
            return super().exchange_url()
        return self.exchange.url
