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
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from cdb.bus.buffered import BufferedBus, guarded
from cdb.bus.keys import MARKET_DATA, SERVICES
from cdb.bus.redis import backoff_of, make_bus, make_redis, redis_probe
from cdb.bus.redis_streams import RedisStreamsBus
from cdb.clock import NS_PER_S, WallClock
from cdb.config import Settings
from cdb.errors import BusError, StoreError
from cdb.events import SCALE, Trade
from cdb.marketdata.replay import ReplaySource
from cdb.marketdata.synthetic import START_NS, SyntheticSource
from cdb.observability.health import Health
from cdb.risk.persistence import DatabaseEssStore, LayeredEssStore, RedisEssStore
from cdb.runtime.control_http import service_routers
from cdb.runtime.http import HttpServer, build_app
from cdb.runtime.observer import ServiceObserver, prepare_process
from cdb.runtime.service import ServiceHost
from cdb.services.base import Service, ServiceContext
from cdb.services.db_writer import DbWriterService
from cdb.services.execution import ExecutionService, store_recall
from cdb.services.risk import RiskService, store_history
from cdb.services.signal import SignalService
from cdb.services.ws import WsService
from cdb.storage.runs import RunRecord, session_id
from cdb.storage.store import Store
from cdb.strategies.base import load as load_strategy
from cdb.venues.base import Venue
from cdb.venues.paper import PaperVenue

if TYPE_CHECKING:
    from cdb.marketdata.binance import BinanceTradeSource

DOWNSTREAM_OF_MARKET_DATA = ("signal", "risk", "execution")
SHARDED = frozenset({"signal", "risk"})
"""Services keeping per-symbol state: each shard owns a disjoint set of symbols."""
LAG_HIGH_WATER = 5_000
"""ws waits while a consumer group of market data is this far behind (< MAXLEN)."""


class LagPacer:
    """Paces ws: at a replay speed, and never further ahead than consumers can follow.

    Redis trims streams to MAXLEN whatever the groups have read, so a producer must
    not outrun its consumers by more than that: this is the backpressure the
    in-memory bus gives for free.
    """

    def __init__(self, bus: BufferedBus[RedisStreamsBus], speed: float | None,
                 start_ns: int | None = None) -> None:
        self._bus = bus
        self._speed = speed
        self._anchor: tuple[float, int] | None = None
        if start_ns is not None and speed is not None:
            # A given start is a wall-clock instant: trades are due on the wall, not
            # from whenever the first one happened to be published.
            self._anchor = (time.monotonic() + (start_ns - time.time_ns()) / NS_PER_S, start_ns)
        self._since_check = 0

    async def until_due(self, batch: list[Trade]) -> None:
        """Before publishing: wait until the batch's last trade is due at this speed, so
        no trade reaches the bus before its time (as on a real feed)."""
        if self._speed is not None:
            if self._anchor is None:
                self._anchor = (time.monotonic(), batch[0].ts)
            wall0, ts0 = self._anchor
            delay = wall0 + (batch[-1].ts - ts0) / NS_PER_S / self._speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def lag(self) -> int:
        """How far the slowest consumer group of the market data is behind.

        Every group counts, a shard's (``signal.<shard>``) too, and one whose service
        has not started reading yet (ws creates the contract groups ahead of their
        services so that none is outrun while it starts), except a service's plain
        group that nobody joined while its shard groups exist: with sharding, ws's
        ``signal`` group is never read.
        """
        bus = self._bus
        groups = await guarded(bus.breaker, partial(bus.inner.backlogs, MARKET_DATA))
        sharded = {g.group.partition(".")[0] for g in groups if "." in g.group}
        return max([g.events for g in groups
                    if g.consumers or g.group not in sharded] or [0])

    async def __call__(self, batch: list[Trade]) -> None:
        """After publishing: hold while a consumer group is far behind."""
        self._since_check += len(batch)
        if self._since_check < 1_000:
            return
        self._since_check = 0
        while True:
            try:
                lag = await self.lag()
            except BusError:
                # Redis is unreachable: trades go to the bounded disk buffer, whose
                # flush is paced by the consumer groups once Redis is back.
                return
            if lag < LAG_HIGH_WATER:
                return
            await asyncio.sleep(0.005)


def _binance_source(settings: Settings, instance: str) -> BinanceTradeSource:
    from cdb.marketdata.binance import make_binance_source

    # Paper trading follows the real market; the testnet venue trades on its own book.
    return make_binance_source(
        settings.symbols(), exchange_url=settings.binance_url,
        testnet=settings.execution_venue == "binance-testnet", source=instance,
    )


def _source(settings: Settings, instance: str) -> Iterable[list[Trade]]:
    if settings.ws_source == "replay":
        paths = [Path(p.strip()) for p in settings.ws_replay.split(",") if p.strip()]
        return ReplaySource(paths, source=instance).batches()
    # A live-paced market starts now; a replay as fast as possible keeps the fixed
    # start so its trade ids and times repeat run after run.
    speed = parse_speed(settings.ws_speed)
    live = speed is not None
    # Near real time a trade is published on its own, as a live feed delivers it;
    # batching would hold the first trades of a batch back for the last one.
    batch = 1 if speed is not None and speed <= 100 else 1000
    start = settings.ws_start_ns
    if start is None:
        start = WallClock().now() if live else START_NS
    return SyntheticSource(
        seed=settings.ws_seed, symbols=settings.symbols(), duration_s=settings.ws_duration_s,
        source=instance, start_ns=start, batch_size=batch, shapes=settings.market_shapes(),
        trades_per_s=settings.ws_trades_per_s, bursts_per_hour=settings.ws_bursts_per_hour,
    ).batches()


def parse_speed(text: str) -> float | None:
    """``max``, ``realtime`` or a factor."""
    if text == "max":
        return None
    if text == "realtime":
        return 1.0
    return float(text)


async def _database(settings: Settings, session: str, resources: AsyncExitStack) -> Store:
    """The migrated database of record, open until ``resources`` close."""
    return await resources.enter_async_context(Store.open_migrated(
        settings.postgres_url(), settings.postgres_schema(), run_id=session, scoped=False))


async def build_service(
    name: str, settings: Settings, bus: BufferedBus[RedisStreamsBus], health: Health,
    resources: AsyncExitStack,
) -> Service:
    """The service object of ``name`` over the distributed seams; what it opens (its
    database) is closed with ``resources``."""
    instance = settings.cdb_consumer or f"{name}-{socket.gethostname()}"
    sharded = name in SHARDED
    ctx = ServiceContext(
        name=name, instance=instance, bus=bus, clock=WallClock(),
        shard=settings.cdb_shard if sharded else "",
        symbols=frozenset(settings.shard_symbols()) if sharded else frozenset(),
    )
    if name == "ws":
        # Groups exist before the first trade, so trimming never drops unread events.
        # Redis down at start is no reason not to start: trades go to the disk buffer,
        # whose flush waits for the consumers' groups (BacklogGate).
        try:
            for group in DOWNSTREAM_OF_MARKET_DATA:
                sub = bus.inner.subscribe([MARKET_DATA], group, instance)
                try:
                    await sub.ensure_groups()
                finally:
                    await sub.close()  # its connection is not needed any more
        except BusError as exc:
            ctx.log.warning("cannot create the consumer groups yet", error=str(exc))
        if settings.ws_source == "binance":  # live: trades come when they come
            live = _binance_source(settings, instance)
            live.attach_alerts(ctx.alert)  # gaps and a stale feed reach risk's ESS
            health.add("exchange", live.probe, critical=False)
            return WsService(ctx, live, LagPacer(bus, None))
        pacer = LagPacer(bus, parse_speed(settings.ws_speed), settings.ws_start_ns)
        return WsService(ctx, _source(settings, instance), pacer, before=pacer.until_due)
    if name == "signal":
        params = settings.strategy_params()
        return SignalService(ctx, load_strategy(params), params.strategy_id)
    if name == "risk":
        # The ESS state lives in Redis and is recorded in Postgres; a restart reads both
        # (the newer wins), so risk needs the database at start.
        store = await _database(settings, _session(bus), resources)
        health.add("postgres", store.ping, critical=False)
        shared = RedisEssStore(bus.inner.client, bus.inner.namespace)
        token = settings.cdb_api_token.get_secret_value() if settings.cdb_api_token else None
        return RiskService(
            ctx, settings.risk_limits(), round(settings.risk_initial_cash * SCALE),
            ess=settings.ess_config(), ess_store=LayeredEssStore(shared, DatabaseEssStore(store)),
            ess_watch=shared, api_token=token, history=store_history(store),
        )
    if name == "execution":
        return await _execution(settings, ctx, health, _session(bus), resources)
    if name == "db_writer":
        store = await _database(settings, _session(bus), resources)
        try:
            await store.open_session(RunRecord(run_id=_session(bus), kind="distributed",
                                               started_ns=time.time_ns()))
        except StoreError as exc:  # the writer retries its batches; the record can wait
            ctx.log.warning("cannot record the session yet", error=str(exc))
        writer = DbWriterService(
            ctx, store, backoff=backoff_of(settings), write_timeout=settings.cdb_db_write_timeout_s
        )
        # Critical (observability.health.CRITICAL): it holds its batch and retries, but
        # persisting is its whole job, so it is unhealthy and not ready meanwhile.
        health.add("postgres", writer.probe)
        return writer
    raise ValueError(f"unknown service {name!r}; one of {', '.join(SERVICES)}")


def _session(bus: BufferedBus[RedisStreamsBus]) -> str:
    """The namespace's one continuous session: the run id on every row it writes."""
    return session_id(bus.inner.namespace.name)


async def _execution(
    settings: Settings, ctx: ServiceContext, health: Health, session: str,
    resources: AsyncExitStack,
) -> Service:
    """Execution on its venue (EXECUTION_VENUE), reconciled with the database at start.

    Binance's orders are compared with the account. The paper book lives in this
    process's memory only, so a restart takes back from the record the orders it had
    resting, with what they filled: without that they would never fill, and a
    redelivered copy of one would be placed a second time.
    """
    venue: Venue
    if settings.execution_venue == "paper":
        venue = PaperVenue(
            taker_fee_bps=settings.paper_taker_fee_bps, maker_fee_bps=settings.paper_maker_fee_bps,
            slippage_bps=settings.paper_slippage_bps,
        )
    else:
        from cdb.venues.binance.factory import venue_from_settings

        binance = venue_from_settings(settings, settings.execution_venue,
                                      exchange_url=settings.binance_url, alert=ctx.alert,
                                      instance=ctx.instance)
        health.add("exchange", binance.ping, critical=False)
        venue = binance
    store = await _database(settings, session, resources)
    health.add("postgres", store.ping, critical=False)
    return ExecutionService(ctx, venue, recall=store_recall(store))


async def run_service(name: str, settings: Settings) -> None:
    """Run service ``name`` until SIGTERM/SIGINT, then drain and exit."""
    instance = settings.cdb_consumer or f"{name}-{socket.gethostname()}"
    prepare_process(settings, name, instance)  # log identity, secrets masked everywhere
    client = make_redis(settings)
    bus = make_bus(settings, client, service=name, instance=instance)
    await bus.start()  # flushes first what a crash left in the disk buffer
    health = Health(name, instance, settings.environment)
    # As the service declares (observability.health.CRITICAL): degraded for ws, which
    # buffers on disk; unhealthy and not ready for the consumers, which get nothing.
    health.add("redis", redis_probe(bus, client))
    resources = AsyncExitStack()
    service = await build_service(name, settings, bus, health, resources)
    pid = os.getpid()
    health.details = lambda: {"pid": pid, **service.status(), **bus.status()}
    host = ServiceHost(service, claim_idle=settings.cdb_claim_idle_s)
    app = build_app(health, extra=service_routers([service]))
    http = HttpServer(app, settings.bind_host, settings.port_of(name))
    observer = ServiceObserver(settings, health, bus, inputs=service.inputs,
                               http_port=settings.port_of(name))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await http.start()
    try:
        await host.start()
        health.ready = True
        await observer.start()  # monitor, discovery heartbeat, gRPC health
        service.ctx.log.info("ready", port=settings.port_of(name))
        await stop.wait()
    finally:
        health.ready = False
        await observer.stop()
        await host.stop(timeout=settings.cdb_drain_timeout_s)
        await http.stop()
        await resources.aclose()
        await bus.close()
