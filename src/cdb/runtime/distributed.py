"""One service as its own process: Redis Streams bus, PostgreSQL, HTTP API, signals.

``cdb service NAME`` lands here. The service object is the same as in the embedded
mode; only the bus (Redis Streams), the store (PostgreSQL) and the clock (wall) are
swapped. SIGTERM and SIGINT drain: the batch in hand finishes and is acknowledged,
then the process exits within ``CDB_DRAIN_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path

from cdb.bus.keys import MARKET_DATA
from cdb.bus.redis_streams import RedisStreamsBus
from cdb.clock import NS_PER_S, WallClock
from cdb.config import Settings
from cdb.events import SCALE, Trade
from cdb.marketdata.replay import ReplaySource
from cdb.marketdata.synthetic import START_NS, SyntheticSource
from cdb.observability.health import Health
from cdb.resilience.redis import make_bus, make_redis
from cdb.runtime.http import HttpServer, build_app
from cdb.runtime.service import Service, ServiceContext, ServiceHost
from cdb.services.db_writer import DbWriterService
from cdb.services.execution import ExecutionService
from cdb.services.risk import RiskService
from cdb.services.signal import SignalService
from cdb.services.ws import WsService
from cdb.storage.store import Store, migrate
from cdb.strategies.base import load as load_strategy
from cdb.venues.paper import PaperVenue

SERVICES = ("ws", "signal", "risk", "execution", "db_writer")
DOWNSTREAM_OF_MARKET_DATA = ("signal", "risk", "execution")
LAG_HIGH_WATER = 5_000
"""ws waits while a consumer group of market data is this far behind (< MAXLEN)."""


class LagPacer:
    """Paces ws: at a replay speed, and never further ahead than consumers can follow.

    Redis trims streams to MAXLEN whatever the groups have read, so a producer must
    not outrun its consumers by more than that: this is the backpressure the
    in-memory bus gives for free.
    """

    def __init__(self, bus: RedisStreamsBus, speed: float | None) -> None:
        self._bus = bus
        self._speed = speed
        self._anchor: tuple[float, int] | None = None
        self._since_check = 0

    async def __call__(self, batch: list[Trade]) -> None:
        if self._speed is not None:
            if self._anchor is None:
                self._anchor = (time.monotonic(), batch[0].ts)
            wall0, ts0 = self._anchor
            delay = wall0 + (batch[-1].ts - ts0) / NS_PER_S / self._speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        self._since_check += len(batch)
        if self._since_check < 1_000:
            return
        self._since_check = 0
        while True:
            lag = max([await self._bus.pending(MARKET_DATA, g) for g in DOWNSTREAM_OF_MARKET_DATA])
            if lag < LAG_HIGH_WATER:
                return
            await asyncio.sleep(0.005)


def _source(settings: Settings, instance: str) -> Iterable[list[Trade]]:
    if settings.ws_source == "replay":
        paths = [Path(p.strip()) for p in settings.ws_replay.split(",") if p.strip()]
        return ReplaySource(paths, source=instance).batches()
    # A live-paced market starts now; a replay as fast as possible keeps the fixed
    # start so its trade ids and times repeat run after run.
    live = settings.ws_speed != "max"
    return SyntheticSource(
        seed=settings.ws_seed, symbols=settings.symbols(), duration_s=settings.ws_duration_s,
        source=instance, start_ns=WallClock().now() if live else START_NS,
    ).batches()


def parse_speed(text: str) -> float | None:
    """``max``, ``realtime`` or a factor."""
    if text == "max":
        return None
    if text == "realtime":
        return 1.0
    return float(text)


async def build_service(
    name: str, settings: Settings, bus: RedisStreamsBus, health: Health
) -> tuple[Service, Store | None]:
    """The service object of ``name`` over the distributed seams."""
    instance = settings.cdb_consumer or f"{name}-{socket.gethostname()}"
    ctx = ServiceContext(name=name, instance=instance, bus=bus, clock=WallClock())
    if name == "ws":
        # Groups exist before the first trade, so trimming never drops unread events.
        for group in DOWNSTREAM_OF_MARKET_DATA:
            sub = bus.subscribe([MARKET_DATA], group, instance)
            await sub.ensure_groups()
        pacer = LagPacer(bus, parse_speed(settings.ws_speed))
        return WsService(ctx, _source(settings, instance), pacer), None
    if name == "signal":
        params = settings.strategy_params()
        return SignalService(ctx, load_strategy(params), params.strategy_id), None
    if name == "risk":
        return RiskService(ctx, settings.risk_limits(),
                           round(settings.risk_initial_cash * SCALE)), None
    if name == "execution":
        venue = PaperVenue(
            taker_fee_bps=settings.paper_taker_fee_bps, maker_fee_bps=settings.paper_maker_fee_bps,
            slippage_bps=settings.paper_slippage_bps,
        )
        return ExecutionService(ctx, venue), None
    if name == "db_writer":
        url, schema = settings.postgres_url(), settings.postgres_schema()
        await migrate(url, schema=schema)
        store = Store(url, schema=schema)
        await store.__aenter__()
        health.add("postgres", store.ping)
        return DbWriterService(ctx, store), store
    raise ValueError(f"unknown service {name!r}; one of {', '.join(SERVICES)}")


async def run_service(name: str, settings: Settings) -> None:
    """Run service ``name`` until SIGTERM/SIGINT, then drain and exit."""
    client = make_redis(settings)
    bus = make_bus(settings, client)
    health = Health(name, settings.cdb_consumer or f"{name}-{socket.gethostname()}",
                    settings.environment)

    async def ping_redis() -> None:
        await client.ping()

    health.add("redis", ping_redis)
    service, store = await build_service(name, settings, bus, health)
    pid = os.getpid()
    health.details = lambda: {"pid": pid, **service.status()}
    host = ServiceHost(service, claim_idle=settings.cdb_claim_idle_s)
    app = build_app(health, extra=service.routes())
    http = HttpServer(app, settings.bind_host, settings.port_of(name))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await http.start()
    try:
        await host.start()
        health.ready = True
        service.ctx.log.info("ready", port=settings.port_of(name))
        await stop.wait()
    finally:
        health.ready = False
        await host.stop(timeout=settings.cdb_drain_timeout_s)
        await http.stop()
        if store is not None:
            await store.__aexit__(None, None, None)
        await bus.close()
