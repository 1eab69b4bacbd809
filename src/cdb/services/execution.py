"""execution: places approved orders on a venue and publishes their fills.

Idempotent on the client order id (a redelivered order is not placed again); fills
are published on ``stream.fills`` with envelopes that chain them to their order.

A venue that can ``reconcile`` (Binance) is reconciled before the first order: the
orders the database holds as not finished, and the fills recorded for them, are
compared with the venue. Orders found there are tracked again (a resting order keeps
being polled for fills), fills made while execution was down are published, orders
that ended on the venue are reported, and every difference is logged, counted
(``cdb_venue_reconcile_differences``) and raised as a ``venue_reconcile`` alert.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ClassVar, Final

import msgspec
from prometheus_client import Counter

from cdb.bus.keys import FILLS, MARKET_DATA, ORDERS
from cdb.errors import OrderNotPlacedError, VenueError
from cdb.events import (
    FINAL_STATUSES,
    AnyEvent,
    CancelOrders,
    Fill,
    Order,
    OrderStatus,
    OrderUpdate,
    Trade,
)
from cdb.observability import metrics
from cdb.services.base import Service, ServiceContext
from cdb.venues.base import (
    Closes,
    Execution,
    Reconciles,
    ReportsUpdates,
    Venue,
)

if TYPE_CHECKING:
    from cdb.storage.store import Store

class Recalled(msgspec.Struct, frozen=True, kw_only=True):
    """What cdb's records say: orders not known to be finished, the venue fill ids
    recorded for them and, by order id, the quantity and number of those fills; the
    client ids of the latest orders (a day of event time); since ``since_ns`` (wall
    time), the symbols traded and every fill recorded."""

    orders: list[Order]
    fill_ids: set[str]
    filled: dict[str, tuple[int, int]] = msgspec.field(default_factory=dict)
    since_ns: int | None = None
    symbols: set[str] = msgspec.field(default_factory=set)
    recent_client_ids: set[str] = msgspec.field(default_factory=set)
    recent_fill_ids: set[str] = msgspec.field(default_factory=set)


Recall = Callable[[], Awaitable[Recalled]]

SCAN_BACK_S: Final = 24 * 3600.0
"""How far back reconciliation compares the account's executions (Binance's limit)."""

reconcile_differences = Counter(
    "cdb_venue_reconcile_differences",
    "Differences between the venue and the database found by reconciliation, by kind",
    ("service", "instance", "kind"), registry=metrics.REGISTRY,
)


def store_recall(store: Store) -> Recall:
    """``Recall`` from the database: orders without a final fill or update."""

    async def recall() -> Recalled:
        orders, fills = await store.unfinished_orders(sorted(FINAL_STATUSES))
        filled: dict[str, tuple[int, int]] = {}
        for order_id, _, qty in fills:
            qty_so_far, count = filled.get(order_id, (0, 0))
            filled[order_id] = (qty_so_far + qty, count + 1)
        since_ns = time.time_ns() - int(SCAN_BACK_S * 1e9)
        symbols, recent = await store.traded_since(since_ns)
        client_ids = await store.latest_client_ids(int(SCAN_BACK_S * 1e9))
        return Recalled(orders=orders, fill_ids={fill_id for _, fill_id, _ in fills},
                        filled=filled, since_ns=since_ns, symbols=symbols,
                        recent_client_ids=client_ids, recent_fill_ids=recent)

    return recall


class ExecutionService(Service):
    """Drives a ``Venue``: orders in, fills out."""

    name: ClassVar[str] = "execution"
    inputs: ClassVar[tuple[str, ...]] = (ORDERS, MARKET_DATA)

    def __init__(self, ctx: ServiceContext, venue: Venue, *, recall: Recall | None = None
                 ) -> None:
        super().__init__(ctx)
        self.venue = venue
        self._recall = recall
        self._updates = venue if isinstance(venue, ReportsUpdates) else None
        """The venue, when orders can end on it other than filled (asked once: the
        check runs on every batch otherwise)."""
        self.last_trade_ts = 0
        """Event time of the newest trade handed to the venue: every fill up to it is
        in the venue's ledger."""
        self.reconciled: object = None
        """The last reconciliation's report (``ReconcileReport``), None before one."""
        self.fills = 0
        self.orders = 0
        self._fills_metric = metrics.fills_total.labels(ctx.name, ctx.instance)
        self.cancelled = 0
        self._filled: dict[str, int] = {}
        """Cumulative filled quantity of orders not yet done, for cancel reports."""
        self._unreported: list[AnyEvent] = []
        """Cancels done on the venue whose report is not published yet."""

    async def on_start(self) -> None:
        await self.reconcile()

    async def on_stop(self) -> None:
        if isinstance(self.venue, Closes):
            await self.venue.aclose()

    async def reconcile(self) -> None:
        """Compare the venue with cdb's records; publish what was missed, report the rest.

        A venue that cannot be reached is alerted about, not fatal: orders redelivered
        later are still looked up by client order id before any is sent.
        """
        venue = self.venue
        if not isinstance(venue, Reconciles) or self._recall is None:
            return
        ctx = self.ctx
        try:
            recalled = await self._recall()
            orders = recalled.orders
            scan = recalled.since_ns // 1_000_000 if recalled.since_ns is not None else None
            report = await venue.reconcile(
                orders, known_fill_ids=recalled.fill_ids, filled=recalled.filled,
                recent_client_ids=recalled.recent_client_ids, scan_since_ms=scan,
                scan_symbols=recalled.symbols, recorded_fill_ids=recalled.recent_fill_ids)
        except VenueError as exc:
            ctx.log.warning("reconciliation failed", venue=self.venue.name, error=str(exc))
            await ctx.alert("warning", "venue_reconcile_failed",
                            f"{self.venue.name}: reconciliation at start failed: {exc}")
            return
        self.reconciled = report
        if report.missing_fills:
            await self._publish(report.missing_fills)
        await self._report_updates()
        found = {"missing_fill": len(report.missing_fills),
                 "not_on_venue": len(report.not_on_venue),
                 "unknown_open": len(report.unknown_open),
                 "unresolved": len(report.unresolved),
                 "unknown_fill": len(report.unknown_fills)}
        for kind, n in found.items():
            if n:
                reconcile_differences.labels(ctx.name, ctx.instance, kind).inc(n)
        ctx.log.info("reconciled with the venue", venue=self.venue.name,
                     checked=len(orders), adopted=len(report.adopted), **found)
        if any(found.values()):
            await ctx.alert("warning", "venue_reconcile", f"{self.venue.name}: " + ", ".join(
                f"{n} {kind.replace('_', ' ')}" for kind, n in found.items() if n))

    async def handle(self, topic: str, events: list[AnyEvent]) -> None:
        cancels: list[CancelOrders] = []
        if topic == MARKET_DATA:
            trades: list[Trade] = events  # type: ignore[assignment]
            executions = await self.venue.on_trades(trades)
            if trades:
                self.last_trade_ts = max(self.last_trade_ts, trades[-1].ts)
        else:
            executions = []
            for order in events:
                if isinstance(order, Order):
                    self.orders += 1
                    executions.extend(await self._submit(order))
                elif isinstance(order, CancelOrders):
                    cancels.append(order)
        if executions:
            await self._publish(executions)
        await self._report_updates()
        for command in cancels:
            await self._cancel(command)

    async def _submit(self, order: Order) -> list[Execution]:
        """Place ``order``; a venue that certainly did not place it gets it reported
        REJECTED (risk frees it, the ESS counts it), an unknown outcome is left to the
        venue to resolve by its client order id, never by sending it again."""
        try:
            return await self.venue.submit(order)
        except OrderNotPlacedError as exc:
            self._unreported.append(self._update(order, "REJECTED", str(exc), order.ts))
        except VenueError as exc:
            self.ctx.log.warning("order outcome unknown; the venue resolves it",
                                 order_id=order.id, error=str(exc))
        return []

    def _update(self, order: Order, status: OrderStatus, reason: str, ts: int) -> OrderUpdate:
        return OrderUpdate(
            id=f"{order.id}-{status.lower()}", ts=ts, correlation_id=order.correlation_id,
            causation_id=order.id, source=self.ctx.instance, order_id=order.id,
            client_order_id=order.client_order_id, symbol=order.symbol, status=status,
            reason=reason[:500], filled_qty_e8=self._filled.pop(order.id, 0),
        )

    async def _report_updates(self) -> None:
        """Publish orders that ended other than filled (venue updates, rejections)."""
        if self._updates is not None:
            for u in self._updates.take_updates():
                self._unreported.append(self._update(u.order, u.status, u.reason, u.ts))
        if self._unreported:
            await self.ctx.publish(FILLS, self._unreported)
            self._unreported = []

    async def _publish(self, executions: list[Execution]) -> None:
        source = self.ctx.instance
        venue = self.venue.name
        fills: list[AnyEvent] = [
            Fill(
                id=f"{x.order.id}-f{x.venue_fill_id.rsplit('-', 1)[-1]}", ts=x.ts,
                correlation_id=x.order.correlation_id, causation_id=x.order.id, source=source,
                order_id=x.order.id, client_order_id=x.order.client_order_id, venue=venue,
                symbol=x.order.symbol, side=x.order.side, price_e8=x.price_e8, qty_e8=x.qty_e8,
                fee_e8=x.fee_e8, venue_fill_id=x.venue_fill_id, order_status=x.status,
                cum_qty_e8=x.cum_qty_e8,
            )
            for x in executions
        ]
        await self.ctx.publish(FILLS, fills)
        filled = self._filled
        for x in executions:
            if x.status == "PARTIALLY_FILLED":
                filled[x.order.id] = x.cum_qty_e8
            else:
                filled.pop(x.order.id, None)
        self.fills += len(fills)
        self._fills_metric.inc(len(fills))

    async def _cancel(self, command: CancelOrders) -> None:
        """Cancel the open orders ``command`` names and report each as CANCELED (risk
        frees them; the database records them). A command delivered twice finds them
        gone and reports nothing twice; a report that failed to publish goes with the
        retry."""
        updates = self._unreported
        for order in self.venue.open_orders():
            if command.symbol and order.symbol != command.symbol:
                continue
            if command.keep_reduce_only and order.reduce_only:
                continue
            if not await self.venue.cancel(order.id):
                continue
            updates.append(OrderUpdate(
                id=f"{order.id}-x", ts=command.ts, correlation_id=order.correlation_id,
                causation_id=command.id, source=self.ctx.instance, order_id=order.id,
                client_order_id=order.client_order_id, symbol=order.symbol, status="CANCELED",
                reason=command.reason, filled_qty_e8=self._filled.pop(order.id, 0),
            ))
        if updates:
            self.ctx.log.warning("orders cancelled", count=len(updates), reason=command.reason)
            await self.ctx.publish(FILLS, updates)
            self.cancelled += len(updates)
            self._unreported = []

    def status(self) -> dict[str, object]:
        return {"venue": self.venue.name, "orders": self.orders, "fills": self.fills,
                "last_trade_ts": self.last_trade_ts}
