"""risk: turns each signal into an order or a rejection with its reason, and feeds the
emergency stop system (ESS).

State (portfolio, open orders, order rate) is updated from fills and marks; the
decision itself is ``cdb.risk.limits.decide``, a pure function. Order and rejection
ids derive from the signal id, so a signal delivered twice (after a crash, a
reclaim) yields the same order id, which execution and the database deduplicate.

The ESS (``cdb.risk.ess``, pure; its saving and publishing in
``cdb.services.ess_control``) is fed here: trades (flash crash, stale data, drawdown
at the new marks), fills (drawdown), order rejections and exchange-error alerts (error
burst), and the operator (API).

Stale data is two things (``StaleDataGuard``). A symbol silent for ``ESS_STALE_DATA_S``
pauses: new orders on it are rejected (``stale_data``), reducing ones pass, and the
pause lifts by itself at its next trade (alerts ``trading_paused`` / ``trading_resumed``,
gauge ``cdb_risk_paused_symbols``). Only a silence of ``ESS_STALE_HALT_S`` counted while
this service's own reads of the bus work trips the latched ESS: an outage of cdb's
Redis, and the backlog it leaves, never does.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, ClassVar, Final

import msgspec

from cdb.bus.keys import ALERTS_STREAM, FILLS, MARKET_DATA, ORDERS, RISK_EVENTS, SIGNALS
from cdb.events import (
    FINAL_STATUSES,
    Alert,
    AnyEvent,
    Fill,
    Order,
    OrderUpdate,
    RiskDecision,
    Signal,
    fmt_e8,
)
from cdb.observability import metrics
from cdb.recent import RecentIds
from cdb.risk.ess import NS, Alarm, EmergencyStop, EssConfig, EssState, Guards, ResetRefused
from cdb.risk.limits import Approval, OrderRate, RiskLimits, decide
from cdb.risk.persistence import EssStore
from cdb.risk.portfolio import Portfolio
from cdb.services.base import Service, ServiceContext
from cdb.services.ess_control import EssControl

if TYPE_CHECKING:
    from cdb.storage.store import Store

History = Callable[[], AsyncIterator[list[AnyEvent]]]
"""The orders, fills and order updates on record, chunk by chunk: what the portfolio
is rebuilt from (orders first, then fills in event time, then updates)."""

# Alert codes other services publish that feed the ESS: an exchange error counts
# towards a burst. A stale feed reported by the market data source is not acted on
# here: risk's own stale-data guard sees the same silence, and judges it (pause, trip).
EXCHANGE_ERROR_PREFIXES: Final = ("exchange_", "venue_", "binance_")
# A finite source (replay, synthetic with a duration) that ended says so with this
# code: the silence after it is not a stale feed.
MARKET_DATA_END_CODES: Final = frozenset({"market_data_end"})
DECIDED_KEPT: Final = 100_000
"""Decided signal ids remembered against redelivery."""


def client_order_id(order_id: str) -> str:
    """Venue client order id derived from cdb's order id (Binance: <= 36 chars)."""
    return "cdb-" + hashlib.blake2b(order_id.encode(), digest_size=12).hexdigest()


def is_exchange_error(alert: Alert) -> bool:
    """Whether ``alert`` reports an exchange error (counted towards an error burst)."""
    return alert.level != "info" and alert.code.startswith(EXCHANGE_ERROR_PREFIXES)


class RiskService(Service):
    """Applies limits and the emergency stop to signals.

    Args:
        ctx: bus, clock and identity.
        limits: the risk limits.
        initial_cash_e8: the portfolio's cash at start (drawdown is measured from it).
        ess: when the ESS trips by itself, and its cooldown.
        ess_store: where the ESS state survives restarts (None: it does not).
        ess_watch: where other instances' changes show up, polled while running
            (Redis in the distributed mode; None when this is the only instance).
        api_token: the bearer token the API's mutating endpoints require (None:
            they refuse everyone).
        tick_s: how often (clock time) the ESS checks for stale data and other
            instances' changes when no event arrives; not in simulated time, where
            time only moves with events and the checks run with them.
    """

    name: ClassVar[str] = "risk"
    # Fills first, then marks, then signals: decisions see the freshest portfolio.
    inputs: ClassVar[tuple[str, ...]] = (FILLS, MARKET_DATA, SIGNALS, ALERTS_STREAM)

    def __init__(
        self, ctx: ServiceContext, limits: RiskLimits, initial_cash_e8: int, *,
        ess: EssConfig | None = None, ess_store: EssStore | None = None,
        ess_watch: EssStore | None = None, api_token: str | None = None,
        tick_s: float = 1.0, history: History | None = None,
    ) -> None:
        super().__init__(ctx)
        self._history = history
        self.limits = limits
        self.book = Portfolio(cash_e8=initial_cash_e8)
        self.rate = OrderRate(limits.rate_window_ns)
        self.ess_control = EssControl(ctx, ess or EssConfig(), self.book.equity_e8,
                                      initial_cash_e8, store=ess_store, watch=ess_watch)
        self.api_token = api_token
        self.orders = 0
        self.rejections: dict[str, int] = {}
        # Signals already decided, so a redelivered one is not decided twice. Redelivery
        # comes within a claim's idle time (seconds); the newest DECIDED_KEPT ids cover
        # that many times over, and a long run does not grow without bound.
        self._decided = RecentIds(DECIDED_KEPT)
        self._tick_s = tick_s
        labels = (ctx.name, ctx.instance)
        self._pending = metrics.risk_pending_orders.labels(*labels)
        self._exposure = metrics.risk_total_exposure.labels(*labels)
        self._orders = metrics.orders_submitted.labels(*labels)
        self._equity = metrics.equity.labels(*labels)

    @property
    def ess(self) -> EmergencyStop:
        return self.ess_control.ess

    @property
    def guards(self) -> Guards:
        return self.ess_control.guards

    @property
    def halted(self) -> bool:
        return self.ess_control.halted

    @property
    def paused(self) -> frozenset[str]:
        """Symbols whose new orders are paused: their market data is stale."""
        return self.ess_control.paused

    # -- lifecycle ---------------------------------------------------------------------

    async def on_start(self) -> None:
        """Come back in the state persisted before: the portfolio from the record of
        orders and fills, the ESS from its store (HALTED means HALTED)."""
        if self._history is not None:
            orders = fills = 0
            async for events in self._history():
                o, f = self._rebuild(events)
                orders, fills = orders + o, fills + f
            if orders or fills:
                book = self.book
                self.ctx.log.info(
                    "portfolio rebuilt from the record", orders=orders, fills=fills,
                    open_orders=len(book.open_orders), exposure=fmt_e8(book.exposure_e8()),
                    cash=fmt_e8(book.cash_e8),
                )
            self._update_gauges()
        await self.ess_control.restore()

    def _rebuild(self, history: list[AnyEvent]) -> tuple[int, int]:
        """Apply one chunk of the record: positions, cash, open orders and the order
        rate (this shard's symbols), so a restarted risk holds its limits against what
        is really open. Returns the orders and fills applied.

        Fills and updates still on the streams arrive again afterwards: fills count once
        (by id), updates only close orders. Orders decided just before a crash that the
        database does not hold yet count from their fills on.
        """
        book, symbols = self.book, self.ctx.symbols
        orders = fills = 0
        for event in history:
            if symbols and getattr(event, "symbol", None) not in symbols:
                continue
            if isinstance(event, Order):
                book.on_order(event)
                self.rate.record(event.ts)
                self._decided.add(event.causation_id)
                orders += 1
            elif isinstance(event, Fill):
                book.on_fill(event)
                fills += 1
            elif isinstance(event, OrderUpdate):
                book.on_order_update(event)
        return orders, fills

    async def produce(self) -> None:
        """The ESS's own timer: stale data and other instances' changes, between events."""
        if self.ctx.clock.simulated:
            return
        while True:
            await self.ctx.clock.sleep(self._tick_s)
            try:
                await self.tick()
            except Exception:
                self.ctx.log.exception("ESS tick failed; trying again at the next")

    async def tick(self) -> None:
        """One timer check: retry what is unsaved, adopt a newer shared state, look for
        stale data."""
        control = self.ess_control
        await control.flush()
        await control.poll()
        now = self.ctx.clock.now()
        if not self.halted:
            alarm = self.guards.stale.check(now, self.ctx.bus_up_since)
            if alarm is not None:
                await self.trip(alarm, self.ctx.instance)
        await control.update_pause(now)

    async def on_stop(self) -> None:
        await self.ess_control.stop()

    # -- events ------------------------------------------------------------------------

    async def handle(self, topic: str, events: list[AnyEvent]) -> None:
        if self.ess_control.pending:
            await self.ess_control.flush()
        alarm: Alarm | None = None
        if topic == MARKET_DATA:
            alarm = self._on_trades(events)
        elif topic == FILLS:
            alarm = self._on_fills(events)
        elif topic == ALERTS_STREAM:
            alarm = self._on_alerts(events)
        elif topic == SIGNALS:
            await self._decide([e for e in events if isinstance(e, Signal)])
        if alarm is not None and not self.halted:
            await self.trip(alarm, self.ctx.instance)
        if topic == MARKET_DATA and self.paused:
            await self.ess_control.update_pause(self.ctx.clock.now())
        self._update_gauges()

    def _on_trades(self, events: list[AnyEvent]) -> Alarm | None:
        now = self.ctx.clock.now()
        guards = self.guards
        # Stale is judged before these trades count as seen: the batch that ends a
        # silence is what reveals it in simulated time.
        stale = guards.stale.check(now, self.ctx.bus_up_since)
        marks: dict[str, int] = {}
        for trade in events:
            marks[trade.symbol] = trade.price_e8  # type: ignore[union-attr]
        guards.stale.seen(marks, now)
        crash = guards.flash_crash.on_trades(events)  # type: ignore[arg-type]
        self.book.on_marks(marks)
        drawdown = guards.drawdown.check(self.book.equity_e8())
        cause = events[-1].id if events else ""
        for alarm in (crash, drawdown, stale):
            if alarm is not None:
                return alarm if alarm.cause_id else msgspec.structs.replace(alarm, cause_id=cause)
        return None

    def _on_fills(self, events: list[AnyEvent]) -> Alarm | None:
        now = self.ctx.clock.now()
        alarm: Alarm | None = None
        for event in events:
            if isinstance(event, Fill):
                self.book.on_fill(event)
            elif isinstance(event, OrderUpdate):
                self.book.on_order_update(event)
                if event.status == "REJECTED":
                    burst = self.guards.errors.on_error(
                        event.ts, now, f"order {event.client_order_id} rejected: {event.reason}"
                    )
                    if burst is not None and alarm is None:
                        alarm = msgspec.structs.replace(burst, cause_id=event.id)
        drawdown = self.guards.drawdown.check(self.book.equity_e8())
        if alarm is None and drawdown is not None:
            alarm = msgspec.structs.replace(drawdown, cause_id=events[-1].id)
        return alarm

    def _on_alerts(self, events: list[AnyEvent]) -> Alarm | None:
        now = self.ctx.clock.now()
        alarm: Alarm | None = None
        for alert in events:
            if not isinstance(alert, Alert) or alert.source == self.ctx.instance:
                continue
            found: Alarm | None = None
            if alert.code in MARKET_DATA_END_CODES:
                self.guards.stale.forget()
            elif is_exchange_error(alert):
                found = self.guards.errors.on_error(
                    alert.ts, now, f"{alert.code} from {alert.source}: {alert.message}"
                )
            if found is not None and alarm is None:
                alarm = msgspec.structs.replace(found, cause_id=alert.id)
        return alarm

    async def _decide(self, signals: list[Signal]) -> None:
        orders: list[AnyEvent] = []
        rejections: list[AnyEvent] = []
        source = self.ctx.instance
        if not self.ctx.clock.simulated:
            # In simulated time nothing is decided during a silence: the batch that
            # ends it also ends the pause.
            await self.ess_control.update_pause(self.ctx.clock.now())
        paused = self.paused
        for signal in signals:
            if signal.id in self._decided:
                continue
            decision = decide(signal, self.book, self.limits, self.rate, halted=self.halted,
                              stale=signal.symbol in paused)
            self._decided.add(signal.id)
            if isinstance(decision, Approval):
                order_id = f"{signal.id}-o"
                order = Order(
                    id=order_id, ts=signal.ts, correlation_id=signal.correlation_id,
                    causation_id=signal.id, source=source,
                    client_order_id=client_order_id(order_id), symbol=signal.symbol,
                    side=signal.side, order_type="MARKET", qty_e8=decision.qty_e8,
                    ref_price_e8=signal.price_e8, ref_trade_id=signal.trade_id,
                    reduce_only=decision.reduce_only,
                )
                self.book.on_order(order)
                self.rate.record(signal.ts)
                orders.append(order)
            else:
                self.rejections[decision.reason] = self.rejections.get(decision.reason, 0) + 1
                metrics.risk_rejections.labels(self.ctx.name, source, decision.reason).inc()
                rejections.append(
                    RiskDecision(
                        id=f"{signal.id}-r", ts=signal.ts, correlation_id=signal.correlation_id,
                        causation_id=signal.id, source=source, signal_id=signal.id,
                        symbol=signal.symbol, side=signal.side, approved=False,
                        reason=decision.reason, detail=decision.detail,
                    )
                )
        if orders:
            await self.ctx.publish(ORDERS, orders)
            self.orders += len(orders)
            self._orders.inc(len(orders))
        if rejections:
            await self.ctx.publish(RISK_EVENTS, rejections)

    # -- the emergency stop ------------------------------------------------------------

    async def trip(self, alarm: Alarm, actor: str) -> EssState | None:
        """HALT for ``alarm`` (a guard's, or an operator's with ``MANUAL``); the new
        state, or None when it was HALTED already."""
        return await self.ess_control.trip(alarm, actor)

    async def trip_manually(self, actor: str, why: str) -> EssState | None:
        """An operator's trip (API, CLI)."""
        return await self.ess_control.trip_manually(actor, why)

    async def reset(self, actor: str, why: str) -> EssState | ResetRefused:
        """An operator's reset: refused while ACTIVE or within the cooldown; otherwise
        saved first, then applied.

        Raises:
            Exception: the store failed; the ESS stays HALTED.
        """
        return await self.ess_control.reset(actor, why)

    # -- views -------------------------------------------------------------------------

    def _update_gauges(self) -> None:
        self._pending.set(len(self.book.open_orders))
        self._exposure.set(self.book.exposure_e8() / 1e8)
        self._equity.set(self.book.equity_e8() / 1e8)

    def ess_status(self) -> dict[str, object]:
        """The ESS for people and probes: state, why, since when, cooldown, trips."""
        return self.ess_control.status()

    def risk_state(self) -> dict[str, object]:
        """Positions, exposure (as the limits see it) and the limits, for the API."""
        book, lim = self.book, self.limits
        symbols = sorted(set(book.positions) | {o.symbol for o in book.open_orders.values()})
        return {
            "positions": {
                s: {"qty": fmt_e8(book.position(s)), "mark": fmt_e8(book.mark(s)),
                    "exposure": fmt_e8(book.symbol_exposure_e8(s))}
                for s in symbols
            },
            "exposure": fmt_e8(book.exposure_e8()),
            "equity": fmt_e8(book.equity_e8()),
            "cash": fmt_e8(book.cash_e8),
            "peak_equity": fmt_e8(book.peak_equity_e8),
            "max_drawdown_pct": f"{book.max_drawdown_bp / 100:.2f}",
            "open_orders": len(book.open_orders),
            "orders": self.orders,
            "rejections": dict(sorted(self.rejections.items())),
            "limits": {
                "order_notional": fmt_e8(lim.order_notional_e8),
                "max_order_notional": fmt_e8(lim.max_order_notional_e8),
                "max_position": fmt_e8(lim.max_position_e8),
                "max_exposure": fmt_e8(lim.max_exposure_e8),
                "max_open_orders": lim.max_open_orders,
                "max_orders_per_window": lim.max_orders_per_window,
                "rate_window_s": lim.rate_window_ns / NS,
            },
            "ess": self.ess_status(),
        }

    def status(self) -> dict[str, object]:
        return {
            "orders": self.orders,
            "rejections": dict(self.rejections),
            "open_orders": len(self.book.open_orders),
            "exposure": fmt_e8(self.book.exposure_e8()),
            "halted": self.halted,
            "paused_symbols": sorted(self.paused),
            "ess": self.ess_status(),
        }


def store_history(store: Store) -> History:
    """``History`` from the database of record, bounded where it can be: the orders
    still in play (unfinished, or among the newest ``DECIDED_KEPT``) first, then every
    fill in event time (positions and cash are their sum), streamed chunk by chunk, then
    the updates of those orders. An update only closes an order and a fill only shrinks
    an open one, so applying the updates last ends in the same book."""

    async def history() -> AsyncIterator[list[AnyEvent]]:
        orders, updates = await store.orders_in_play(sorted(FINAL_STATUSES), DECIDED_KEPT)
        yield list(orders)
        async for fills in store.stream(Fill):
            yield list(fills)
        yield list(updates)

    return history
