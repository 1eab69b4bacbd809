"""risk: turns each signal into an order or a rejection with its reason.

State (portfolio, open orders, order rate) is updated from fills and marks; the
decision itself is ``cdb.risk.limits.decide``, a pure function. Order and rejection
ids derive from the signal id, so a signal delivered twice (after a crash, a
reclaim) yields the same order id, which execution and the database deduplicate.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

from cdb.bus.keys import FILLS, MARKET_DATA, ORDERS, RISK_EVENTS, SIGNALS
from cdb.events import AnyEvent, Fill, Order, OrderUpdate, RiskDecision, Signal, Trade
from cdb.observability import metrics
from cdb.risk.limits import Approval, OrderRate, RiskLimits, decide
from cdb.risk.portfolio import Portfolio
from cdb.runtime.service import Service, ServiceContext


def client_order_id(order_id: str) -> str:
    """Venue client order id derived from cdb's order id (Binance: <= 36 chars)."""
    return "cdb-" + hashlib.blake2b(order_id.encode(), digest_size=12).hexdigest()


class RiskService(Service):
    """Applies limits (and the emergency stop) to signals."""

    name: ClassVar[str] = "risk"
    # Fills first, then marks, then signals: decisions see the freshest portfolio.
    inputs: ClassVar[tuple[str, ...]] = (FILLS, MARKET_DATA, SIGNALS)

    def __init__(self, ctx: ServiceContext, limits: RiskLimits, initial_cash_e8: int) -> None:
        super().__init__(ctx)
        self.limits = limits
        self.book = Portfolio(cash_e8=initial_cash_e8)
        self.rate = OrderRate(limits.rate_window_ns)
        self.halted = False
        self.orders = 0
        self.rejections: dict[str, int] = {}
        self._decided: set[str] = set()
        labels = (ctx.name, ctx.instance)
        self._pending = metrics.risk_pending_orders.labels(*labels)
        self._exposure = metrics.risk_total_exposure.labels(*labels)
        self._orders = metrics.orders_submitted.labels(*labels)
        self._equity = metrics.equity.labels(*labels)

    async def handle(self, topic: str, events: list[AnyEvent]) -> None:
        if topic == MARKET_DATA:
            marks: dict[str, int] = {}
            for trade in events:
                marks[trade.symbol] = trade.price_e8  # type: ignore[union-attr]
            self.book.on_marks(marks)
        elif topic == FILLS:
            for event in events:
                if isinstance(event, Fill):
                    self.book.on_fill(event)
                elif isinstance(event, OrderUpdate):
                    self.book.on_order_update(event)
        elif topic == SIGNALS:
            await self._decide([e for e in events if isinstance(e, Signal)])
        self._update_gauges()

    async def _decide(self, signals: list[Signal]) -> None:
        orders: list[AnyEvent] = []
        rejections: list[AnyEvent] = []
        source = self.ctx.instance
        for signal in signals:
            if signal.id in self._decided:
                continue
            decision = decide(signal, self.book, self.limits, self.rate, halted=self.halted)
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

    def _update_gauges(self) -> None:
        self._pending.set(len(self.book.open_orders))
        self._exposure.set(self.book.exposure_e8() / 1e8)
        self._equity.set(self.book.equity_e8() / 1e8)

    def status(self) -> dict[str, object]:
        return {
            "orders": self.orders,
            "rejections": dict(self.rejections),
            "open_orders": len(self.book.open_orders),
            "halted": self.halted,
        }


def last_prices(trades: list[Trade]) -> dict[str, int]:
    """Last price per symbol in a batch of trades."""
    return {t.symbol: t.price_e8 for t in trades}
