"""The embedded pipeline: the five services as tasks of one process.

In-memory bus, SQLite store, paper venue, and (for synthetic and replay sources) a
clock driven by event time. In the fastest mode the source hands over one batch,
then waits until every service on the trading path has acknowledged it before the
next: the run is then a deterministic function of its input, so one seed or one file
gives the same orders, fills and PnL every time. The db_writer is off that path (it
commits in a thread while the pipeline goes on) and is drained at the end.

Every run is a session with its own run id, on every row it writes. A simulated run
(synthetic, replay) starts from nothing: no ESS state, position or cash from the runs
before it in the same database, so one input gives one summary. A live run, or one
started with ``resume``, continues the latest run instead: its ESS state, positions
and open orders, rebuilt from that run's rows as the distributed mode does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterable, Callable, Iterable
from pathlib import Path
from typing import Literal

import msgspec

from cdb.bus.memory import MemoryBus
from cdb.clock import NS_PER_S, SimClock, WallClock
from cdb.config import Settings
from cdb.events import SCALE, Trade
from cdb.marketdata import ReportsFeedHealth
from cdb.marketdata.replay import ReplaySource
from cdb.marketdata.shapes import Shape
from cdb.marketdata.synthetic import SyntheticSource
from cdb.observability import metrics
from cdb.observability.health import Health
from cdb.report.series import SeriesRecorder
from cdb.risk.ess import EssState
from cdb.risk.limits import ESS_HALTED
from cdb.risk.persistence import DatabaseEssStore
from cdb.runtime.control_http import service_routers
from cdb.runtime.http import HttpServer, build_app
from cdb.runtime.service import ServiceHost
from cdb.services.base import Service, ServiceContext
from cdb.services.db_writer import DbWriterService
from cdb.services.execution import ExecutionService, store_recall
from cdb.services.risk import RiskService, store_history
from cdb.services.signal import SignalService
from cdb.services.ws import Pace, WsService
from cdb.storage.runs import RunRecord, new_run_id
from cdb.storage.store import Store
from cdb.strategies.base import load as load_strategy
from cdb.venues.base import Closes, Venue
from cdb.venues.paper import PaperVenue

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


class RunOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What ``cdb run`` runs."""

    db_url: str
    replay: tuple[str, ...] = ()
    seed: int = 7
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    duration_s: float = 4 * 3600.0
    speed: float | None = None
    """None: as fast as possible; 1.0: real time; k: k times real time."""
    shapes: tuple[Shape, ...] = ()
    instance: str = "embedded"
    batch_size: int = 1000
    source: Literal["synthetic", "replay", "binance"] = "synthetic"
    """``binance``: live trades from the exchange's websocket (``duration_s`` of wall
    time); the others are replayed in simulated time."""
    venue: Literal["paper", "binance-testnet", "binance-live"] = "paper"
    exchange_url: str | None = None
    """Point the Binance source and venue elsewhere (FakeBinance in tests)."""
    metrics_port: int | None = None
    """Serve /metrics and /health of the whole pipeline on this port (default
    CDB_METRICS_PORT; None: no HTTP)."""
    replay_symbol: str | None = None
    """The symbol of replay files whose names do not say it."""
    resume: bool = False
    """Continue the latest run of the database (its ESS, positions, open orders)
    instead of starting a fresh one; a live source always does."""
    run_id: str | None = None
    """The id of a new run (default: made from the start time)."""


class Progress(msgspec.Struct, kw_only=True):
    """A live view of a run."""

    trades: int = 0
    signals: int = 0
    orders: int = 0
    fills: int = 0
    sim_ts: int = 0


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What a run did, from the services' own counts."""

    run_id: str = ""
    kind: str = ""
    """synthetic, replay or live."""
    resumed: bool = False
    """This leg continued an earlier run's state (live, or ``--resume``)."""
    trades: int
    malformed_rows: int
    first_errors: list[str]
    signals: int
    orders: int
    fills: int
    rejections: dict[str, int]
    initial_equity: str
    equity: str
    pnl: str
    fees: str
    max_drawdown_pct: str
    open_positions: dict[str, str]
    first_ts: int
    last_ts: int
    wall_seconds: float
    db_url: str
    rows: dict[str, int]
    ess: EssState = msgspec.field(default_factory=EssState)
    """The ESS at the end of the run (state, reason, detail, actor, since_ns)."""
    ess_trips: list[EssState] = msgspec.field(default_factory=list)
    """Every trip during the run, oldest first."""
    ess_blocked: int = 0
    """Signals refused because the ESS was HALTED."""
    ess_start: EssState = msgspec.field(default_factory=EssState)
    """The ESS when the run started (HALTED when it resumed a halted run)."""


def _fmt(value_e8: int) -> str:
    return f"{value_e8 / SCALE:,.2f}"


class EmbeddedPipeline:
    """Builds and runs the five services on one event loop.

    Args:
        settings: strategy, limits and fees (from the environment and flags).
        options: source, speed and database.
        source: the trade batches to run on, instead of the one ``options`` names.
        bus: the in-memory bus to run on (a subclass that can pause or sabotage).
        after_batch: awaited after each batch is paced (the trading path has it then).
    """

    def __init__(
        self, settings: Settings, options: RunOptions, *,
        source: Iterable[list[Trade]] | AsyncIterable[list[Trade]] | None = None,
        bus: MemoryBus | None = None, after_batch: Pace | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.bus = bus if bus is not None else MemoryBus()
        self._after_batch = after_batch
        self.live = options.source == "binance"
        # A live feed runs on the wall clock; files and the synthetic market on event time.
        self.clock: SimClock | WallClock = WallClock() if self.live else SimClock()
        self.progress = Progress()
        self._first_ts = 0
        self._wall_start = 0.0
        self._wall_anchor: tuple[float, int] | None = None
        self._replay: ReplaySource | None = None
        self.series = SeriesRecorder()
        self.run_id = options.run_id or new_run_id()
        self.resumed = False
        self.legs = 1
        self._ess_start = EssState()
        # Set by run, once its services exist.
        self._risk: RiskService | None = None
        self.services: dict[str, Service] = {}
        self.venue: Venue | None = None
        # Fail on a bad strategy id or unreadable file now, before anything starts.
        self._strategy_params = settings.strategy_params(default_id="momentum")
        self._strategy = load_strategy(self._strategy_params)
        self._source = source if source is not None else self._make_source()

    def _make_source(self) -> Iterable[list[Trade]] | AsyncIterable[list[Trade]]:
        o = self.options
        name = f"{o.instance}.ws"
        if self.live:
            from cdb.marketdata.binance import make_binance_source

            # Paper trading follows the real market; testnet orders its own book.
            return make_binance_source(
                o.symbols, exchange_url=o.exchange_url, testnet=o.venue == "binance-testnet",
                source=name,
            )
        if o.replay:
            self._replay = ReplaySource(
                [Path(p) for p in o.replay], source=name, batch_size=o.batch_size,
                symbol=o.replay_symbol,
            )
            return self._replay.batches()
        return SyntheticSource(
            seed=o.seed, symbols=o.symbols, duration_s=o.duration_s, shapes=o.shapes,
            source=name, batch_size=o.batch_size,
        ).batches()

    def _ctx(self, name: str) -> ServiceContext:
        return ServiceContext(
            name=name, instance=f"{self.options.instance}.{name}", bus=self.bus, clock=self.clock
        )

    async def _pace(self, batch: list[Trade]) -> None:
        await self._advance(batch)
        if self._after_batch is not None:
            await self._after_batch(batch)

    async def _advance(self, batch: list[Trade]) -> None:
        """Count the batch, move the clock to it and wait for the trading path."""
        last = batch[-1].ts
        if not self._first_ts:
            self._first_ts = batch[0].ts
        if isinstance(self.clock, WallClock):
            self.progress.trades += len(batch)
            self.progress.sim_ts = last
            self._sample(batch)
            return
        self.clock.advance(last)
        self.progress.trades += len(batch)
        self.progress.sim_ts = last
        speed = self.options.speed
        if speed is not None:
            if self._wall_anchor is None:
                self._wall_anchor = (time.monotonic(), batch[0].ts)
            wall0, ts0 = self._wall_anchor
            due = wall0 + (last - ts0) / NS_PER_S / speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        # Lockstep with the trading path (not the db_writer): determinism and flat memory.
        await self.bus.wait_drained(exclude_groups=frozenset({DbWriterService.name}))
        self._sample(batch)

    def _sample(self, batch: list[Trade]) -> None:
        """One point per symbol and batch for the report, and the equity after it."""
        add = self.series.add_price
        for trade in {t.symbol: t for t in batch}.values():
            add(trade.symbol, trade.ts, trade.price_e8)
        if self._risk is not None:
            self.series.add_equity(batch[-1].ts, self._risk.book.equity_e8())

    async def _open_run(self, store: Store) -> RunRecord:
        """This run's row: a new run, or the latest one continued (live or resume)."""
        o = self.options
        kind = "live" if self.live else o.source
        previous = None
        if o.resume:
            previous = await store.latest_run(("synthetic", "replay", "live"))
        elif self.live:
            previous = await store.latest_run(("live",))
        if previous is not None:
            self.run_id, self.resumed, self.legs = previous.run_id, True, previous.legs + 1
            started = previous.started_ns
        else:
            started = time.time_ns()
        record = RunRecord(
            run_id=self.run_id, kind=kind, started_ns=started, legs=self.legs,
            settings=msgspec.json.encode(self._settings_view()).decode(),
            inputs=msgspec.json.encode(self._inputs()).decode(),
        )
        await store.save_run(record)
        return record

    def _settings_view(self) -> dict[str, object]:
        o, s = self.options, self.settings
        view = msgspec.to_builtins(o)
        view.pop("db_url", None)  # may carry a password; the report shows settings
        view["strategy"] = msgspec.to_builtins(self._strategy_params)
        view["risk_limits"] = msgspec.to_builtins(s.risk_limits())
        view["initial_cash"] = str(s.risk_initial_cash)
        view["fees_bps"] = {"taker": str(s.paper_taker_fee_bps),
                            "maker": str(s.paper_maker_fee_bps),
                            "slippage": str(s.paper_slippage_bps)}
        return dict(view)

    def _inputs(self) -> list[dict[str, object]]:
        o = self.options
        if self.live:
            return [{"source": "binance", "symbols": list(o.symbols)}]
        if not o.replay:
            return [{"source": "synthetic", "seed": o.seed, "symbols": list(o.symbols),
                     "duration_s": o.duration_s}]
        found = []
        for name in o.replay:
            path = Path(name)
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            found.append({"path": str(path.resolve()), "bytes": path.stat().st_size,
                          "sha256": digest.hexdigest()})
        return found

    async def run(self, on_progress: Callable[[Progress], None] | None = None) -> RunSummary:
        """Run the source to its end, drain every service, and summarise."""
        s, o = self.settings, self.options
        self._wall_start = time.monotonic()
        async with Store.open_migrated(o.db_url) as runs_store:
            record = await self._open_run(runs_store)
        if self.legs > 1:
            # Ids restart their sequence in each process: a leg of its own keeps them apart.
            self.options = o = msgspec.structs.replace(o, instance=f"{o.instance}-{self.legs}")
        store = Store(o.db_url, run_id=self.run_id)
        async with store:
            ws = WsService(self._ctx("ws"), self._source, self._pace)
            signal = SignalService(
                self._ctx("signal"), self._strategy, self._strategy_params.strategy_id
            )
            token = s.cdb_api_token.get_secret_value() if s.cdb_api_token else None
            # No Redis here: the run's ess_changes rows carry its ESS from leg to leg; a
            # fresh run has none, a resumed one rebuilds its book from its rows.
            risk = RiskService(
                self._ctx("risk"), s.risk_limits(), round(s.risk_initial_cash * SCALE),
                ess=s.ess_config(), ess_store=DatabaseEssStore(store), api_token=token,
                history=store_history(store) if self.resumed else None,
            )
            exec_ctx = self._ctx("execution")
            venue = await self._venue(exec_ctx)
            # A real venue is reconciled with this database's records before trading.
            recall = None if isinstance(venue, PaperVenue) else store_recall(store)
            execution = ExecutionService(exec_ctx, venue, recall=recall)
            db_writer = DbWriterService(self._ctx("db_writer"), store)
            services: list[Service] = [db_writer, execution, risk, signal, ws]
            hosts = [ServiceHost(svc) for svc in services]
            self.venue = venue
            self._risk = risk
            self.services = {svc.name: svc for svc in services}
            http = self._http(store, services)
            if http is not None:
                await http.start()
            ticker = asyncio.create_task(self._tick(on_progress), name="embedded.progress")
            try:
                for host, svc in zip(hosts, services, strict=True):
                    await host.start()
                    if svc is risk:  # restored (a resumed run) before any trade
                        self._ess_start = risk.ess.state
                if isinstance(self._source, ReportsFeedHealth):
                    # Gaps and stale feeds reach risk's ESS.
                    self._source.attach_alerts(ws.ctx.alert)
                if self.live:
                    # A live feed never ends by itself: listen for duration_s.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(hosts[-1].wait_producer(), o.duration_s)
                    await hosts[-1].stop()
                else:
                    await hosts[-1].wait_producer()
                await self.bus.wait_drained()
            finally:
                ticker.cancel()
                for host in reversed(hosts):
                    await host.stop()
                await self.bus.close()
                if http is not None:
                    await http.stop()
                if isinstance(venue, Closes):
                    await venue.aclose()
            self._refresh_progress()
            if on_progress is not None:
                on_progress(self.progress)
            rows = await store.counts()
            summary = self._summary(ws, signal, risk, execution, rows)
            # The series end where the run ends (a last batch smaller than a sample).
            self.series.add_equity(ws.last_trade_ts or self._first_ts, risk.book.equity_e8())
            await store.save_run(msgspec.structs.replace(
                record, finished_ns=time.time_ns(),
                summary=msgspec.json.encode(summary).decode(),
                series=msgspec.json.encode(self.series.result()).decode(),
            ))
        return summary

    async def _venue(self, ctx: ServiceContext) -> Venue:
        """The paper venue, or Binance (testnet unless ``binance-live`` is named)."""
        s, o = self.settings, self.options
        if o.venue == "paper":
            return PaperVenue(
                taker_fee_bps=s.paper_taker_fee_bps, maker_fee_bps=s.paper_maker_fee_bps,
                slippage_bps=s.paper_slippage_bps,
            )
        from cdb.venues.binance.factory import venue_from_settings

        venue = venue_from_settings(s, o.venue, exchange_url=o.exchange_url,
                                    alert=ctx.alert, instance=ctx.instance)
        await venue.start()
        return venue

    def _http(self, store: Store, services: list[Service]) -> HttpServer | None:
        """/metrics and /health of the five services on one port, when asked for."""
        port = self.options.metrics_port or self.settings.cdb_metrics_port
        if port is None:
            return None
        health = Health("embedded", self.options.instance, self.settings.environment)
        health.add("database", store.ping)
        health.details = lambda: {
            "progress": msgspec.to_builtins(self.progress),
            **{svc.name: svc.status() for svc in services},
        }
        health.ready = True
        for svc in services:
            metrics.prime(svc.name, svc.ctx.instance, topics=svc.inputs)
        routes = service_routers(services)
        return HttpServer(build_app(health, extra=routes), self.settings.bind_host, port)

    def _refresh_progress(self) -> None:
        p, svc = self.progress, self.services
        p.signals = svc["signal"].signals  # type: ignore[attr-defined]
        p.orders = svc["risk"].orders  # type: ignore[attr-defined]
        p.fills = svc["execution"].fills  # type: ignore[attr-defined]

    async def _tick(self, on_progress: Callable[[Progress], None] | None) -> None:
        while on_progress is not None:
            await asyncio.sleep(0.2)
            self._refresh_progress()
            on_progress(self.progress)

    def _summary(
        self, ws: WsService, signal: SignalService, risk: RiskService,
        execution: ExecutionService, rows: dict[str, int],
    ) -> RunSummary:
        book = risk.book
        equity = book.equity_e8()
        stats = self._replay.stats if self._replay else None
        return RunSummary(
            run_id=self.run_id,
            kind="live" if self.live else self.options.source,
            resumed=self.resumed,
            trades=ws.trades,
            malformed_rows=stats.malformed if stats else 0,
            first_errors=[f"{e.line}: {e.reason}" for e in stats.errors[:5]] if stats else [],
            signals=signal.signals,
            orders=risk.orders,
            fills=execution.fills,
            rejections=dict(sorted(risk.rejections.items())),
            initial_equity=_fmt(book.initial_e8),
            equity=_fmt(equity),
            pnl=_fmt(equity - book.initial_e8),
            fees=_fmt(book.fees_e8),
            max_drawdown_pct=f"{book.max_drawdown_bp / 100:.2f}",
            open_positions={
                s: f"{p.qty_e8 / SCALE:.8f}".rstrip("0").rstrip(".")
                for s, p in sorted(book.positions.items()) if p.qty_e8
            },
            first_ts=self._first_ts,
            last_ts=ws.last_trade_ts,
            wall_seconds=round(time.monotonic() - self._wall_start, 3),
            db_url=self.options.db_url,
            rows=rows,
            ess=risk.ess.state,
            ess_trips=[t for t in risk.ess.trips() if t != self._ess_start],
            ess_blocked=risk.rejections.get(ESS_HALTED, 0),
            ess_start=self._ess_start,
        )
