"""Portfolio state kept by risk: positions, cash, marks, open orders, equity.

Exposure is computed in one place (``exposure_e8``) and used by limits, metrics and
summaries alike: for each symbol, |position + open buy qty - open sell qty| at its
mark, so an order counts against limits from the moment it is approved, not only
once it fills. Money is e8 fixed point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cdb.events import Fill, Order, OrderUpdate, Side, mul_e8
from cdb.recent import RecentIds

FILLS_KEPT = 100_000
"""How many of the newest fill ids a portfolio remembers to apply each fill once."""


@dataclass(slots=True)
class OpenOrder:
    """An approved order not yet done."""

    symbol: str
    side: Side
    remaining_e8: int
    ref_price_e8: int


@dataclass(slots=True)
class Position:
    """Holdings of one symbol."""

    qty_e8: int = 0
    cost_e8: int = 0  # quote spent on the current holdings (for average price)


@dataclass(slots=True)
class Portfolio:
    """Cash, positions and open orders; updated from orders, fills and marks."""

    cash_e8: int
    initial_e8: int = 0
    positions: dict[str, Position] = field(default_factory=dict)
    marks: dict[str, int] = field(default_factory=dict)
    open_orders: dict[str, OpenOrder] = field(default_factory=dict)
    fees_e8: int = 0
    realized_e8: int = 0
    peak_equity_e8: int = 0
    max_drawdown_bp: int = 0
    seen_fills: RecentIds = field(default_factory=lambda: RecentIds(FILLS_KEPT))
    """Ids of the newest ``FILLS_KEPT`` fills applied (oldest first): a fill comes again
    only within a redelivery's reach, so older ids need not be kept forever."""

    def __post_init__(self) -> None:
        if not self.initial_e8:
            self.initial_e8 = self.cash_e8
        self.peak_equity_e8 = max(self.peak_equity_e8, self.cash_e8)

    def position(self, symbol: str) -> int:
        pos = self.positions.get(symbol)
        return pos.qty_e8 if pos else 0

    def open_qty(self, symbol: str, side: Side) -> int:
        return sum(
            o.remaining_e8 for o in self.open_orders.values()
            if o.symbol == symbol and o.side == side
        )

    def mark(self, symbol: str) -> int:
        return self.marks.get(symbol, 0)

    def symbol_exposure_e8(self, symbol: str) -> int:
        net = self.position(symbol) + self.open_qty(symbol, "BUY") - self.open_qty(symbol, "SELL")
        price = self.marks.get(symbol) or self._ref_price(symbol)
        return abs(mul_e8(net, price))

    def _ref_price(self, symbol: str) -> int:
        for o in self.open_orders.values():
            if o.symbol == symbol:
                return o.ref_price_e8
        return 0

    def exposure_e8(self) -> int:
        symbols = set(self.positions) | {o.symbol for o in self.open_orders.values()}
        return sum(self.symbol_exposure_e8(s) for s in symbols)

    def exposure_after(self, symbol: str, side: Side, qty_e8: int, ref_price_e8: int) -> tuple[
        int, int
    ]:
        """(symbol exposure, total exposure) once an order of ``qty_e8`` is open.

        Valued exactly as ``symbol_exposure_e8`` will value it after ``on_order``, so a
        limit checked with this holds for the exposure shown right after the decision.
        """
        net = self.position(symbol) + self.open_qty(symbol, "BUY") - self.open_qty(symbol, "SELL")
        net += qty_e8 if side == "BUY" else -qty_e8
        price = self.marks.get(symbol) or self._ref_price(symbol) or ref_price_e8
        after = abs(mul_e8(net, price))
        return after, self.exposure_e8() - self.symbol_exposure_e8(symbol) + after

    def equity_e8(self) -> int:
        return self.cash_e8 + sum(
            mul_e8(p.qty_e8, self.marks.get(s, 0)) for s, p in self.positions.items()
        )

    def on_order(self, order: Order) -> None:
        self.open_orders[order.id] = OpenOrder(
            order.symbol, order.side, order.qty_e8, order.ref_price_e8
        )

    def on_fill(self, fill: Fill) -> None:
        """Apply a fill once (fills are idempotent on their id)."""
        if fill.id in self.seen_fills:
            return
        self.seen_fills.add(fill.id)
        notional = mul_e8(fill.price_e8, fill.qty_e8)
        pos = self.positions.setdefault(fill.symbol, Position())
        if fill.side == "BUY":
            self.cash_e8 -= notional
            pos.qty_e8 += fill.qty_e8
            pos.cost_e8 += notional
        else:
            avg_cost = pos.cost_e8 * fill.qty_e8 // pos.qty_e8 if pos.qty_e8 else 0
            self.cash_e8 += notional
            self.realized_e8 += notional - avg_cost
            pos.qty_e8 -= fill.qty_e8
            pos.cost_e8 -= avg_cost
        self.cash_e8 -= fill.fee_e8
        self.fees_e8 += fill.fee_e8
        self.marks.setdefault(fill.symbol, fill.price_e8)
        order = self.open_orders.get(fill.order_id)
        if order is not None:
            order.remaining_e8 -= fill.qty_e8
            if order.remaining_e8 <= 0 or fill.order_status == "FILLED":
                del self.open_orders[fill.order_id]
        self.update_drawdown()

    def on_order_update(self, update: OrderUpdate) -> None:
        if update.status in ("CANCELED", "REJECTED", "EXPIRED", "FILLED"):
            self.open_orders.pop(update.order_id, None)

    def on_marks(self, marks: dict[str, int]) -> None:
        self.marks.update(marks)
        self.update_drawdown()

    def update_drawdown(self) -> int:
        """Refresh peak equity and max drawdown; return the current drawdown (bp)."""
        equity = self.equity_e8()
        if equity > self.peak_equity_e8:
            self.peak_equity_e8 = equity
        peak = self.peak_equity_e8
        drawdown = (peak - equity) * 10_000 // peak if peak > 0 else 0
        if drawdown > self.max_drawdown_bp:
            self.max_drawdown_bp = drawdown
        return drawdown
