"""The Binance venue: orders placed once, state reconciled.

See the package docstring for the guarantees; this module is the state machine of each
order (PENDING, then UNKNOWN while its outcome is being resolved, then the venue's
status) and reconciliation. Requests go through ``BinanceClient`` (limits, retries, bans).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import structlog
from prometheus_client import Counter

from cdb.errors import ConfigError, VenueError
from cdb.events import Order, OrderStatus, Trade, parse_e8
from cdb.observability import metrics
from cdb.recent import RecentIds
from cdb.venues.base import Execution, ReconcileReport, VenueUpdate
from cdb.venues.binance.client import AlertHook, BinanceClient
from cdb.venues.binance.errors import (
    Duplicate,
    NotFound,
    OrderUnknownError,
    OutcomeUnknown,
    VenueAuthError,
    VenueBannedError,
    VenueRateLimitedError,
    VenueRejectedError,
    VenueUnavailableError,
)
from cdb.venues.binance.records import (
    FINAL,
    STATUS,
    BinanceVenueConfig,
    SymbolRules,
    VenueFill,
    fee_of,
    fill_of,
    order_params,
    symbol_rules,
    trade_row,
    venue_order,
)
from cdb.venues.limiter import Sleep, WindowLimiter

_log = structlog.get_logger(component="binance_venue")
unknown_orders_total = Counter(
    "cdb_venue_unknown_orders", "Order submissions with an unknown outcome, by resolution",
    ("service", "instance", "resolution"), registry=metrics.REGISTRY,
)

_MS: Final = 1_000_000
FINISHED_KEPT = 100_000
"""Finished orders the venue remembers (to recognise a resend without asking)."""


@dataclass(slots=True)
class _Tracked:
    order: Order
    status: OrderStatus | Literal["PENDING", "UNKNOWN"] = "PENDING"
    venue_id: int = 0
    cum_e8: int = 0
    fill_ids: set[str] = field(default_factory=set)
    sends: int = 0
    sent_at: float = float("-inf")
    """When it was last sent (clock); a not-found answer proves absence only after
    ``resolve_window_s`` from then."""


class BinanceVenue:
    """Binance spot orders for the execution service (``Venue`` protocol).

    Args:
        config: connection and behaviour.
        api_key, api_secret: the account's credentials (from secrets).
        alert: async ``(level, code, message)`` hook, e.g. ``ServiceContext.alert``.
        service, instance: metric labels.
        clock: monotonic seconds; sleep: waits seconds (tests shorten time).
        now_ns: wall time in ns (event timestamps of reports).
        rng: jitter of backoffs.
    """

    def __init__(
        self, config: BinanceVenueConfig, *, api_key: str, api_secret: str,
        alert: AlertHook | None = None, service: str = "execution", instance: str = "",
        clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep,
        now_ns: Callable[[], int] = time.time_ns, rng: random.Random | None = None,
    ) -> None:
        if not api_key or not api_secret:
            raise ConfigError([
                "BINANCE_API_KEY and BINANCE_API_SECRET: required by the binance venue "
                "(secret files /run/secrets/binance_api_key and binance_api_secret)"
            ])
        self.config = config
        self.name = config.name or ("binance" if config.mode == "live" else "binance-testnet")
        self._clock, self._sleep, self._now_ns = clock, sleep, now_ns
        self._labels = (service, instance or self.name)
        self._client = BinanceClient(
            config, api_key=api_key, api_secret=api_secret, name=self.name, alert=alert,
            labels=self._labels, clock=clock, sleep=sleep, now_ns=now_ns, rng=rng,
        )
        self._start_lock = asyncio.Lock()
        self._symbols: dict[str, SymbolRules] = {}
        self._by_cid: dict[str, _Tracked] = {}
        self._by_oid: dict[str, _Tracked] = {}
        self._live: dict[str, _Tracked] = {}
        """Orders not finished (pending, open or unknown), by client id: what polling
        walks, so its cost follows the open orders, not every order ever sent."""
        self._finished = RecentIds(FINISHED_KEPT)
        """Client ids of finished orders, oldest first; past ``FINISHED_KEPT`` the oldest
        is forgotten (a resend comes within minutes, not 100k orders later)."""
        self._last_poll = float("-inf")
        self._backlog: list[Execution] = []
        self.updates: list[VenueUpdate] = []
        """Orders that ended other than filled; ``take_updates`` hands them over."""
        self.started_ns = 0
        self.closed = False

    @property
    def limiter(self) -> WindowLimiter:
        """The request-weight limiter (its ``history`` measures a burst)."""
        return self._client.weights

    # lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> BinanceVenue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Connect: exchange info (filters, the venue's limits) and the clock offset."""
        async with self._start_lock:
            if self.closed:
                raise VenueError(f"{self.name} venue is closed; make a new one")
            if self._client.connected:
                return
            info = await self._client.connect()
            try:
                self._symbols.update(symbol_rules(info))
            except BaseException:
                await self._client.aclose()  # the next start connects again
                raise
            self.started_ns = self._now_ns()

    async def aclose(self) -> None:
        """Close the HTTP session (idempotent)."""
        self.closed = True
        await self._client.aclose()

    async def balances(self) -> dict[str, tuple[int, int]]:
        """``(free, locked)`` e8 of every asset of the account (weight 20)."""
        await self.start()
        body = await self._client.request("GET", "account", {})
        return {str(b["asset"]): (parse_e8(str(b["free"])), parse_e8(str(b["locked"])))
                for b in body.get("balances", [])}

    async def ping(self) -> None:
        """Health probe: one ``/api/v3/ping``; raises ``VenueError`` when unreachable."""
        await self.start()
        await self._client.request("GET", "ping", {}, retries=0)

    # the Venue protocol --------------------------------------------------------------------

    async def submit(self, order: Order) -> list[Execution]:
        """Place ``order`` once (idempotent on its client order id); executions so far.

        Raises:
            VenueRejectedError: refused (filters, balance); not placed.
            OrderUnknownError: placed or not, it could not be established; kept as
                unknown and resolved by a later poll or ``reconcile``, never resent.
            VenueBannedError, VenueRateLimitedError: not placed; a redelivery may retry.
        """
        tracked = self._by_cid.get(order.client_order_id)
        if tracked is not None and tracked.status != "UNKNOWN":
            return self._take_backlog()  # a resend of a known order never trades twice
        await self.start()
        if tracked is None:
            tracked = self._track(order, "PENDING")
        try:
            body = None
            if tracked.status == "UNKNOWN":
                body = await self._resolve(tracked)
            elif order.ts < self.started_ns:
                body = await self._lookup(order)  # a predecessor may have sent it
            if body is None:
                body = await self._place(tracked)
        except VenueRejectedError as exc:
            self._close(tracked, "REJECTED", str(exc))
            raise
        except (VenueBannedError, VenueRateLimitedError, VenueAuthError):
            if tracked.status != "UNKNOWN":
                self._forget(tracked)  # refused for sure, never placed: a redelivery may retry
            raise
        except BaseException:
            tracked.status = "UNKNOWN"  # sent or not, only a look-up may tell now
            raise
        return self._take_backlog() + await self._adopt(tracked, body)

    def _track(self, order: Order, status: Literal["PENDING", "UNKNOWN"]) -> _Tracked:
        tracked = _Tracked(order, status=status)
        self._by_cid[order.client_order_id] = tracked
        self._by_oid[order.id] = tracked
        self._live[order.client_order_id] = tracked
        return tracked

    async def cancel(self, order_id: str) -> bool:
        """Cancel an open order by cdb order id; False when it was not open."""
        tracked = self._by_oid.get(order_id)
        if tracked is None or tracked.status in FINAL or tracked.status == "PENDING":
            return False
        params = {"symbol": tracked.order.symbol,
                  "origClientOrderId": tracked.order.client_order_id}
        try:
            body = await self._client.request("DELETE", "order", params)
        except NotFound:
            try:
                body = await self._query(tracked.order)  # filled or gone: learn which
            except NotFound:
                return False  # never reached the venue; poll or reconcile settle it
            self._backlog.extend(await self._adopt(tracked, body))
            return False
        # The caller reports a cancel it asked for; only fills found here are new.
        self._backlog.extend(await self._adopt(tracked, body, report=False))
        return True

    async def on_trades(self, trades: Sequence[Trade]) -> list[Execution]:
        """Poll open orders for fills every ``poll_interval_s`` (trades pace it)."""
        if not self._open() or self._clock() - self._last_poll < self.config.poll_interval_s:
            return self._take_backlog()
        return await self.poll()

    def open_orders(self) -> list[Order]:
        return [t.order for t in self._open()]

    def take_updates(self) -> list[VenueUpdate]:
        """Orders that ended other than filled since the last call."""
        updates, self.updates = self.updates, []
        return updates

    def _open(self) -> list[_Tracked]:
        return [t for t in self._live.values()
                if t.status in ("NEW", "PARTIALLY_FILLED", "UNKNOWN")]

    def _take_backlog(self) -> list[Execution]:
        backlog, self._backlog = self._backlog, []
        return backlog

    async def poll(self) -> list[Execution]:
        """Look at every open or unknown order; new executions (errors are logged, not
        raised: polling runs on the market data path)."""
        self._last_poll = self._clock()
        executions = self._take_backlog()
        for tracked in self._open():
            try:
                body = await self._query(tracked.order)
            except NotFound:
                if tracked.status != "UNKNOWN":
                    self._close(tracked, "EXPIRED", "vanished from the venue")
                elif self._clock() - tracked.sent_at >= self.config.resolve_window_s:
                    # Proven absent: closed, not sent late at a price decided long ago.
                    unknown_orders_total.labels(*self._labels, "absent").inc()
                    self._close(tracked, "EXPIRED", "never reached the venue")
                continue
            except VenueError as exc:
                _log.warning("poll failed", venue=self.name, error=str(exc))
                break
            if tracked.status == "UNKNOWN":
                unknown_orders_total.labels(*self._labels, "adopted_later").inc()
            executions.extend(await self._adopt(tracked, body))
        return executions

    # placement and resolution --------------------------------------------------------------

    async def _place(self, tracked: _Tracked) -> Any:
        order = tracked.order
        params = order_params(order, self._symbols.get(order.symbol), self.name)
        while True:
            if tracked.sends >= self.config.max_sends:
                raise OrderUnknownError(
                    f"{self.name}: {order.client_order_id} not placed after {tracked.sends} "
                    "sends", client_order_id=order.client_order_id)
            tracked.sends += 1
            tracked.sent_at = self._clock()
            try:
                return await self._client.request("POST", "order", params, outcome_matters=True)
            except OutcomeUnknown as exc:
                _log.warning("order outcome unknown; resolving by client order id",
                             venue=self.name, client_order_id=order.client_order_id,
                             error=str(exc))
            except Duplicate:
                pass  # open on the venue already: adopt it
            tracked.status = "UNKNOWN"
            found = await self._resolve(tracked)
            if found is not None:
                return found
            _log.info("order proven absent; sending it once more", venue=self.name,
                      client_order_id=order.client_order_id)

    async def _query(self, order: Order) -> Any:
        return await self._client.request(
            "GET", "order", {"symbol": order.symbol, "origClientOrderId": order.client_order_id}
        )

    async def _lookup(self, order: Order) -> Any:
        """The order if the venue has it, None if it says it has not."""
        try:
            return await self._query(order)
        except NotFound:
            return None

    async def _resolve(self, tracked: _Tracked) -> Any:
        """Find an order of unknown outcome: its venue record, or None once a not-found
        answer comes ``resolve_window_s`` after its last send (it never reached the
        matching engine)."""
        cfg = self.config
        order = tracked.order
        started = self._clock()
        while True:
            try:
                found = await self._query(order)
                unknown_orders_total.labels(*self._labels, "adopted").inc()
                return found
            except NotFound:
                if self._clock() - tracked.sent_at >= cfg.resolve_window_s:
                    unknown_orders_total.labels(*self._labels, "absent").inc()
                    return None
            except (VenueUnavailableError, VenueRateLimitedError) as exc:
                if self._clock() - started >= cfg.resolve_give_up_s:
                    unknown_orders_total.labels(*self._labels, "unresolved").inc()
                    await self._client.alert("warning", "venue_order_unknown",
                                      f"{self.name}: cannot tell whether "
                                      f"{order.client_order_id} was placed: {exc}")
                    raise OrderUnknownError(
                        f"{self.name}: outcome of {order.client_order_id} unknown: {exc}",
                        client_order_id=order.client_order_id) from exc
            await self._sleep(cfg.resolve_interval_s)

    async def _adopt(self, tracked: _Tracked, body: Any, *, report: bool = True
                     ) -> list[Execution]:
        """Take the venue's record of an order: its status and any fills not yet reported."""
        order = tracked.order
        tracked.venue_id = int(body["orderId"])
        status = STATUS.get(str(body.get("status")), "NEW")
        executed = parse_e8(str(body.get("executedQty", "0")))
        stamp = int(body.get("transactTime") or body.get("updateTime") or 0)
        fills = [fill_of(f, stamp) for f in body.get("fills") or ()]
        if executed > sum(f.qty_e8 for f in fills):
            rows = await self._client.request("GET", "myTrades", {
                "symbol": order.symbol, "orderId": str(tracked.venue_id)})
            fills = [trade_row(r) for r in rows]
        executions = self._executions(tracked, fills, status)
        if status in FINAL:
            self._close(tracked, status, f"{status.lower()} on the venue", report=report)
        elif tracked.status in ("PENDING", "UNKNOWN", "NEW", "PARTIALLY_FILLED"):
            tracked.status = status
        return executions

    def _executions(self, tracked: _Tracked, fills: Iterable[VenueFill],
                    status: OrderStatus) -> list[Execution]:
        order = tracked.order
        info = self._symbols.get(order.symbol)
        ordered = sorted(fills, key=lambda f: f.trade_id)
        cum = 0
        out: list[Execution] = []
        for i, f in enumerate(ordered):
            cum += f.qty_e8
            fill_id = f"{order.symbol}-{f.trade_id}"
            if fill_id in tracked.fill_ids:
                continue
            tracked.fill_ids.add(fill_id)
            last = i == len(ordered) - 1
            out.append(Execution(
                order=order, ts=f.time_ms * _MS, price_e8=f.price_e8, qty_e8=f.qty_e8,
                fee_e8=fee_of(f, info), venue_fill_id=fill_id,
                status=status if last and status != "NEW" else "PARTIALLY_FILLED",
                cum_qty_e8=cum,
            ))
        tracked.cum_e8 = max(tracked.cum_e8, cum)
        return out

    def _close(self, tracked: _Tracked, status: OrderStatus, reason: str, *,
               report: bool = True) -> None:
        previous = tracked.status
        tracked.status = status
        cid = tracked.order.client_order_id
        if self._live.pop(cid, None) is not None:
            oldest = self._finished.add(cid)
            forgotten = self._by_cid.pop(oldest, None) if oldest is not None else None
            if forgotten is not None:
                self._by_oid.pop(forgotten.order.id, None)
        if report and status != "FILLED" and previous not in FINAL:
            self.updates.append(VenueUpdate(order=tracked.order, status=status, reason=reason,
                                            filled_qty_e8=tracked.cum_e8, ts=self._now_ns()))

    def _forget(self, tracked: _Tracked) -> None:
        cid = tracked.order.client_order_id
        self._by_cid.pop(cid, None)
        self._by_oid.pop(tracked.order.id, None)
        self._live.pop(cid, None)
        self._finished.discard(cid)

    # reconciliation ----------------------------------------------------------------------

    async def reconcile(
        self, orders: Iterable[Order], *, known_fill_ids: Collection[str] = (),
        filled: Mapping[str, tuple[int, int]] | None = None,
        recent_client_ids: Collection[str] = (),
        scan_since_ms: int | None = None, scan_symbols: Collection[str] = (),
        recorded_fill_ids: Collection[str] = (),
    ) -> ReconcileReport:
        """Compare what cdb knows with the venue; adopt known orders, report differences.

        Args:
            orders: orders cdb has sent or may have sent and not seen finish.
            known_fill_ids: ``venue_fill_id`` of every fill cdb has recorded for them.
            filled: cdb's filled quantity and fill count by order id; and
            recent_client_ids: client ids of every recent order (both unused here: the
                venue's own record of an order is what is adopted, and an order from
                before this process is looked up before it is sent).
            scan_since_ms: also compare the account's executions since this time (at
                most 24 h back: Binance's window) in ``scan_symbols`` and the orders'
                symbols with ``recorded_fill_ids``, cdb's fills since then.
        """
        await self.start()
        report = ReconcileReport()
        known = {o.client_order_id: o for o in orders}
        for cid, order in known.items():
            tracked = self._by_cid.get(cid) or self._track(order, "UNKNOWN")
            tracked.fill_ids.update(f for f in known_fill_ids
                                    if f.startswith(f"{order.symbol}-"))
            try:
                body = await self._query(order)
            except NotFound:
                report.not_on_venue.append(cid)
                self._forget(tracked)  # never placed: submitting it is safe
                continue
            except VenueError as exc:
                _log.warning("reconcile: lookup failed", client_order_id=cid, error=str(exc))
                report.unresolved.append(cid)
                continue
            report.missing_fills.extend(await self._adopt(tracked, body))
            report.adopted.append(venue_order(body))
        for row in await self._client.request("GET", "openOrders", {}):
            if row.get("clientOrderId") not in known:
                report.unknown_open.append(venue_order(row))
        if scan_since_ms is not None:
            seen = {*known_fill_ids, *recorded_fill_ids,
                    *(e.venue_fill_id for e in report.missing_fills)}
            for symbol in sorted({*scan_symbols, *(o.symbol for o in known.values())}):
                for row in await self._trades_since(symbol, scan_since_ms):
                    fill_id = f"{symbol}-{row['id']}"
                    if fill_id not in seen:
                        report.unknown_fills.append(
                            f"{fill_id} (venue order {row.get('orderId')})")
        if report.unknown_fills:
            await self._client.alert(
                "warning", "venue_unknown_fills",
                f"{self.name}: {len(report.unknown_fills)} recent execution(s) on the account "
                "that cdb has no record of: " + ", ".join(report.unknown_fills[:10]))
        if report.unknown_open:
            await self._client.alert(
                "warning", "venue_unknown_open_orders",
                f"{self.name}: {len(report.unknown_open)} open order(s) unknown to cdb: "
                + ", ".join(o.client_order_id for o in report.unknown_open[:10]))
        _log.info("reconciled", venue=self.name, adopted=len(report.adopted),
                  not_on_venue=len(report.not_on_venue), unknown_open=len(report.unknown_open),
                  missing_fills=len(report.missing_fills), unresolved=len(report.unresolved),
                  unknown_fills=len(report.unknown_fills))
        return report

    async def _trades_since(self, symbol: str, since_ms: int) -> list[Any]:
        """The account's executions in ``symbol`` from ``since_ms``, every page."""
        rows: list[Any] = []
        params = {"symbol": symbol, "startTime": str(since_ms), "limit": "1000"}
        while True:
            page = await self._client.request("GET", "myTrades", params)
            rows += page
            if len(page) < 1000:
                return rows
            params = {"symbol": symbol, "fromId": str(int(page[-1]["id"]) + 1),
                      "limit": "1000"}
