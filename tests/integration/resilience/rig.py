"""Producers, consumers and settings of the resilience tests, over the real seams."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cdb.bus.buffered import BufferedBus
from cdb.bus.keys import FILLS
from cdb.bus.redis import backoff_of, make_bus, make_redis
from cdb.bus.redis_streams import RedisStreamsBus
from cdb.clock import WallClock
from cdb.config import Settings, load_settings
from cdb.events import AnyEvent, Fill
from cdb.runtime.service import ServiceHost
from cdb.services.base import Service, ServiceContext
from cdb.services.db_writer import DbWriterService
from cdb.storage.store import Store, migrate
from cdb.testing.redis import RedisServer, RedisServerError

PERSISTENT = ("--appendonly", "yes", "--appendfsync", "always")
"""A Redis that keeps its streams across a stop (as deployed); without it, a stop is a
restart with data loss."""


def redis_or_exit(**kwargs: Any) -> RedisServer:
    server = RedisServer(**kwargs)
    try:
        server.start()
    except RedisServerError as exc:
        server.close()
        pytest.exit(f"cannot run the resilience tests: {exc}", returncode=3)
    return server


T0 = 1_700_000_000_000_000_000


def settings_for(
    tmp: Path, namespace: str, *, redis_port: int, **extra: str
) -> Settings:
    """Distributed settings with intervals shortened from minutes to about a second."""
    env = {
        "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_port), "REDIS_PASSWORD": "",
        "SERVICE_INSTANCE_NAME": namespace, "CDB_SECRETS_DIR": str(tmp / "no-secrets"),
        "CDB_BREAKER_FAILURES": "3", "CDB_BREAKER_OPEN_S": "1", "CDB_BACKOFF_BASE_S": "0.05",
        "CDB_BACKOFF_CAP_S": "0.5", "REDIS_SOCKET_TIMEOUT_S": "1", "REDIS_RETRIES": "1",
        "CDB_BUFFER_DIR": str(tmp / "buffers"), **extra,
    }
    return load_settings(environ=env)


def fill(producer: str, seq: int) -> Fill:
    return Fill(
        id=f"{producer}-{seq:07d}", ts=T0 + seq, correlation_id=f"trade-{producer}-{seq}",
        causation_id=f"order-{producer}-{seq}", source=producer, order_id=f"o-{producer}-{seq}",
        client_order_id=f"c-{producer}-{seq}", venue="paper", symbol="BTCUSDT", side="BUY",
        price_e8=3_000_000_000_000 + seq, qty_e8=1_000_000, fee_e8=1_000,
        venue_fill_id=f"vf-{producer}-{seq}", order_status="FILLED", cum_qty_e8=1_000_000,
    )


class Producer:
    """Publishes fills at a steady pace until stopped; remembers what it published."""

    def __init__(self, bus: BufferedBus[RedisStreamsBus], name: str, *, batch: int = 5,
                 interval: float = 0.01) -> None:
        self.bus = bus
        self.name = name
        self.batch = batch
        self.interval = interval
        self.sent: list[str] = []
        self.max_buffered = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"producer.{self.name}")

    async def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            events = [fill(self.name, seq + i) for i in range(self.batch)]
            await self.bus.publish(FILLS, events)
            self.sent += [e.id for e in events]
            self.max_buffered = max(self.max_buffered, self.bus.buffered)
            seq += self.batch
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


class Recorder(Service):
    """An idempotent consumer: applies each event id once, in the order it came."""

    name: ClassVar[str] = "recorder"
    inputs: ClassVar[tuple[str, ...]] = (FILLS,)

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.applied: dict[str, list[str]] = {}
        self.seen: set[str] = set()
        self.deliveries = 0

    async def handle(self, topic: str, events: list[AnyEvent]) -> None:
        for event in events:
            self.deliveries += 1
            if event.id in self.seen:
                continue
            self.seen.add(event.id)
            self.applied.setdefault(event.source, []).append(event.id)


class Rig:
    """Buses, hosts and stores of one test, each as its own process would have them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.buses: list[BufferedBus[RedisStreamsBus]] = []
        self.hosts: list[ServiceHost] = []
        self.stores: list[Store] = []

    async def bus(self, service: str, instance: str) -> BufferedBus[RedisStreamsBus]:
        bus = make_bus(self.settings, make_redis(self.settings), service=service,
                       instance=instance)
        await bus.start()
        self.buses.append(bus)
        return bus

    async def recorder(self) -> Recorder:
        bus = await self.bus("recorder", "rec-1")
        ctx = ServiceContext(name="recorder", instance="rec-1", bus=bus, clock=WallClock())
        service = Recorder(ctx)
        await self._host(service)
        return service

    async def db_writer(self, postgres_url: str, schema: str) -> DbWriterService:
        await migrate(postgres_url, schema=schema)
        store = Store(postgres_url, schema=schema)
        await store.__aenter__()
        self.stores.append(store)
        bus = await self.bus("db_writer", "dbw-1")
        ctx = ServiceContext(name="db_writer", instance="dbw-1", bus=bus, clock=WallClock())
        service = DbWriterService(ctx, store, backoff=backoff_of(self.settings),
                                  write_timeout=5.0)
        await self._host(service)
        return service

    async def _host(self, service: Service) -> None:
        host = ServiceHost(service, poll=0.1, claim_idle=1.0)
        await host.start()
        self.hosts.append(host)

    async def close(self) -> None:
        for host in self.hosts:
            await host.stop(timeout=5)
        for bus in self.buses:
            await bus.close()
        for store in self.stores:
            await store.__aexit__(None, None, None)


async def fill_ids(postgres_url: str, schema: str) -> list[str]:
    async with Store(postgres_url, schema=schema) as store:
        return [str(row["id"]) for row in await store.rows("fills")]
