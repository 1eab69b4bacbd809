"""The paper venue: fills orders against the live trade feed, with fees and slippage.

Matching is a pure function of the order and the trades that follow it in event time,
whatever order the two streams arrive in: recent trades are kept per symbol, so an
order that arrives after the trades that follow it still matches those same trades.
That is what makes a replay give the same fills on every run.

Liquidity model: each market trade offers its own quantity to each resting order
(orders do not compete for a print). Market orders take the trade price moved
against them by ``slippage_bps`` and pay the taker fee; limit orders fill at their
limit once a trade prints through it and pay the maker fee. An order larger than a
print fills in parts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from cdb.events import Order, Trade, mul_e8
from cdb.recent import RecentIds
from cdb.venues.base import Execution, ReconcileReport, VenueOrder

DONE_KEPT = 100_000
"""Finished orders whose client ids are remembered (a resend comes within minutes)."""
LEDGER_KEPT = 100_000
"""Executions kept in the venue's own ledger."""


@dataclass(slots=True)
class _Resting:
    order: Order
    filled_e8: int = 0
    fills: int = 0


class PaperVenue:
    """A simulated venue matching against market trades.

    Args:
        taker_fee_bps: fee of market orders, in basis points of notional.
        maker_fee_bps: fee of limit orders.
        slippage_bps: adverse price move applied to market orders.
        memory: trades kept per symbol to match late-arriving orders.
    """

    def __init__(
        self, *, taker_fee_bps: int = 10, maker_fee_bps: int = 2, slippage_bps: int = 5,
        memory: int = 50_000, name: str = "paper",
    ) -> None:
        self.name = name
        self._taker = taker_fee_bps
        self._maker = maker_fee_bps
        self._slip = slippage_bps
        # One tape for all symbols: extending it is a single C call per batch, and the
        # rare order that arrives late scans it for its own symbol.
        self._recent: deque[Trade] = deque(maxlen=memory)
        self._resting: dict[str, dict[str, _Resting]] = {}
        self._by_client_id: dict[str, _Resting] = {}
        """Orders resting (not yet finished), by client id."""
        self._done = RecentIds(DONE_KEPT)
        """Client ids of the newest ``DONE_KEPT`` finished orders (and of those placed
        before a restart): a resend of one of them is not placed again."""
        self.ledger: deque[Execution] = deque(maxlen=LEDGER_KEPT)
        """The newest executions, the venue's own record (tests compare it to the
        database)."""

    async def submit(self, order: Order) -> list[Execution]:
        cid = order.client_order_id
        if cid in self._by_client_id or cid in self._done:
            return []  # a resend of a known order never trades twice
        resting = _Resting(order)
        # The late-arrival path: trades after the order that were already seen.
        symbol = order.symbol
        after = (t for t in self._recent if t.symbol == symbol and _after(t, order))
        execs = self._match(resting, after)
        if resting.filled_e8 < order.qty_e8:
            self._by_client_id[cid] = resting
            self._resting.setdefault(order.symbol, {})[order.id] = resting
        else:
            self._finished(cid)
        return execs

    async def cancel(self, order_id: str) -> bool:
        book = next((b for b in self._resting.values() if order_id in b), None)
        if book is None:
            return False
        self._finished(book.pop(order_id).order.client_order_id)
        return True

    def _finished(self, client_order_id: str) -> None:
        self._by_client_id.pop(client_order_id, None)
        self._done.add(client_order_id)

    async def on_trades(self, trades: Sequence[Trade]) -> list[Execution]:
        self._recent.extend(trades)
        if not self._resting:
            return []
        execs: list[Execution] = []
        for symbol, book in list(self._resting.items()):
            if not book:
                continue
            symbol_trades = [t for t in trades if t.symbol == symbol]
            for order_id, resting in list(book.items()):
                order = resting.order
                execs.extend(self._match(resting, (t for t in symbol_trades if _after(t, order))))
                if resting.filled_e8 >= order.qty_e8:
                    del book[order_id]
                    self._finished(order.client_order_id)
            if not book:
                del self._resting[symbol]
        return execs

    def open_orders(self) -> list[Order]:
        return [r.order for book in self._resting.values() for r in book.values()]

    async def reconcile(
        self, orders: Iterable[Order], *, filled: Mapping[str, tuple[int, int]] | None = None,
        recent_client_ids: Collection[str] = (), **_: object,
    ) -> ReconcileReport:
        """Take back the orders a previous execution process had resting when it ended:
        the paper book lives in memory, the database knows what was ordered and filled.

        Each order rests again with the quantity and number of fills on record, so it
        goes on matching the trades after it (those the crashed process had not
        acknowledged come again), its next fill ids follow the recorded ones, and a
        redelivered copy of it is recognised and not placed twice.

        Args:
            orders: orders without a final fill or update in the database.
            filled: by order id, the quantity filled and the number of fills on record.
            recent_client_ids: client ids of the recent orders, finished ones included:
                a redelivered copy of one of them is not placed again.
        """
        for cid in recent_client_ids:
            self._finished(cid)  # until adopted below: a finished one stays finished
        report = ReconcileReport()
        done = filled or {}
        for order in orders:
            if order.client_order_id in self._by_client_id:
                continue
            qty, count = done.get(order.id, (0, 0))
            resting = _Resting(order, filled_e8=qty, fills=count)
            if qty < order.qty_e8:
                self._done.discard(order.client_order_id)
                self._by_client_id[order.client_order_id] = resting
                self._resting.setdefault(order.symbol, {})[order.id] = resting
            report.adopted.append(VenueOrder(
                symbol=order.symbol, venue_order_id=0, client_order_id=order.client_order_id,
                side=order.side, type=order.order_type,
                status="PARTIALLY_FILLED" if qty else "NEW", orig_qty_e8=order.qty_e8,
                executed_qty_e8=qty, price_e8=order.price_e8, time_ms=order.ts // 1_000_000))
        return report

    def _match(self, resting: _Resting, trades: Iterable[Trade]) -> list[Execution]:
        order = resting.order
        execs: list[Execution] = []
        buy = order.side == "BUY"
        limit = order.order_type == "LIMIT"
        for trade in trades:
            remaining = order.qty_e8 - resting.filled_e8
            if remaining <= 0:
                break
            if limit:
                if (buy and trade.price_e8 > order.price_e8) or (
                    not buy and trade.price_e8 < order.price_e8
                ):
                    continue
                price = order.price_e8
                fee_bps = self._maker
            else:
                slip = trade.price_e8 * self._slip // 10_000
                price = trade.price_e8 + slip if buy else trade.price_e8 - slip
                fee_bps = self._taker
            qty = min(remaining, trade.qty_e8)
            resting.filled_e8 += qty
            resting.fills += 1
            done = resting.filled_e8 >= order.qty_e8
            execution = Execution(
                order=order, ts=trade.ts, price_e8=price, qty_e8=qty,
                fee_e8=mul_e8(price, qty) * fee_bps // 10_000,
                venue_fill_id=f"{order.client_order_id}-{resting.fills}",
                status="FILLED" if done else "PARTIALLY_FILLED",
                cum_qty_e8=resting.filled_e8, trade_id=trade.id,
            )
            execs.append(execution)
            self.ledger.append(execution)
        return execs


def _after(trade: Trade, order: Order) -> bool:
    """Whether ``trade`` printed after the market state the order was decided on."""
    return trade.ts > order.ts or (trade.ts == order.ts and trade.trade_id > order.ref_trade_id)
