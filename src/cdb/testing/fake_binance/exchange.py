"""The fake exchange itself: the matching engine, balances and the ledger of orders and fills.

Pure (no I/O; the server time comes from a callable): the server hands it the
parameters of each REST call, and it answers a JSON-ready object or raises
``ApiError`` with Binance's status, code and message. It is the venue's truth that
tests compare cdb's records against (``orders``, ``fills``).

Binance's behaviour where a client depends on it:

- a ``newClientOrderId`` is unique among *open* orders only (-2010 "Duplicate order
  sent."); once the order is closed the same id is accepted again, which is why a client
  must look an order of unknown outcome up before it sends it again;
- a market order fills at the last traded price (or ``fill_ratio`` of it in ``parts``,
  the rest expiring, on a ``partial_fill`` fault); a limit order locks its funds and
  fills at its price against the trades fed to ``match``;
- commission is charged in the asset received (base on a buy, quote on a sell);
- filters (LOT_SIZE, PRICE_FILTER, NOTIONAL) and balances are checked (-1013, -2010).

The records and their JSON shapes are in ``records``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Final

from cdb.events import SCALE, Trade, mul_e8, parse_e8
from cdb.testing.fake_binance.faults import Fault
from cdb.testing.fake_binance.records import (
    CID,
    ApiError,
    FakeFill,
    FakeOrder,
    SymbolInfo,
    decimal,
    f8,
    fill_json,
    order_json,
    order_response,
    required,
    symbol_json,
)

_OPEN: Final = ("NEW", "PARTIALLY_FILLED")


class Exchange:
    """The matching engine and ledger of the fake.

    Args:
        symbols: the tradable symbols.
        balances: initial free balances by asset (decimal strings); by default plenty.
        commission_bps: fee of every fill (maker and taker).
        now_ms: the server time in ms.
        rate_limits: the ``rateLimits`` ``exchangeInfo`` announces.
    """

    def __init__(self, symbols: list[SymbolInfo], *, balances: dict[str, str] | None,
                 commission_bps: int, now_ms: Callable[[], int],
                 rate_limits: Callable[[], list[dict[str, object]]]) -> None:
        self.symbols = {s.symbol: s for s in symbols}
        self.commission_bps = commission_bps
        self.now_ms = now_ms
        self._rate_limits = rate_limits
        self.prices = {s.symbol: parse_e8(s.price) for s in symbols}
        # Plenty by default: 1000 of each base asset, a million of each quote asset.
        start = balances if balances is not None else {
            **{s.base: "1000" for s in symbols}, **{s.quote: "1000000" for s in symbols}
        }
        self.balances: dict[str, list[int]] = {a: [parse_e8(v), 0] for a, v in start.items()}
        """Asset -> [free, locked] in e8."""
        self.orders: dict[int, FakeOrder] = {}
        """Every order ever accepted, by venue order id (the ledger)."""
        self.fills: list[FakeFill] = []
        """Every execution, in order (the ledger)."""
        self.order_requests: list[tuple[str, str]] = []
        """``(newClientOrderId, outcome)`` of every order request that reached matching."""
        self._order_ids = itertools.count(1_000_001)
        self._anon_ids = itertools.count(1)
        self._fill_ids: dict[str, Iterator[int]] = {}

    def match(self, trade: Trade) -> None:
        """A market trade printed: the price moves and resting orders fill against it."""
        if trade.symbol in self.symbols:
            self.prices[trade.symbol] = trade.price_e8
            self._match_resting(trade)

    # endpoints (params of the request, the fault acting on it) ----------------------

    def ping(self, params: dict[str, str], fault: Fault | None) -> object:
        return {}

    def time(self, params: dict[str, str], fault: Fault | None) -> object:
        return {"serverTime": self.now_ms()}

    def exchange_info(self, params: dict[str, str], fault: Fault | None) -> object:
        wanted = params.get("symbol")
        return {
            "timezone": "UTC",
            "serverTime": self.now_ms(),
            "rateLimits": self._rate_limits(),
            "exchangeFilters": [],
            "symbols": [symbol_json(s) for s in self.symbols.values()
                        if wanted in (None, s.symbol)],
        }

    def _symbol(self, params: dict[str, str]) -> SymbolInfo:
        name = required(params, "symbol")
        info = self.symbols.get(name)
        if info is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return info

    def new_order(self, params: dict[str, str], fault: Fault | None) -> object:
        info = self._symbol(params)
        side = required(params, "side")
        kind = required(params, "type")
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.")
        if kind not in ("MARKET", "LIMIT"):
            raise ApiError(400, -1116, "Invalid orderType.")
        qty = decimal(params, "quantity")
        cid = params.get("newClientOrderId") or f"fake-{next(self._anon_ids)}"
        if not CID.match(cid):
            raise ApiError(400, -1100, "Illegal characters found in parameter "
                                        "'newClientOrderId'; legal range is "
                                        "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
        price = 0
        tif = "GTC"
        if kind == "LIMIT":
            price = decimal(params, "price")
            tif = required(params, "timeInForce")
            if price % parse_e8(info.tick) or price <= 0:
                raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
        self._check_lot(info, qty, price or self.prices[info.symbol])
        if any(o.client_order_id == cid and o.status in _OPEN
               for o in self.orders.values()):
            self.order_requests.append((cid, "duplicate"))
            raise ApiError(400, -2010, "Duplicate order sent.")
        now = self.now_ms()
        order = FakeOrder(
            order_id=next(self._order_ids), symbol=info.symbol, client_order_id=cid, side=side,
            type=kind, time_in_force=tif, orig_qty_e8=qty, price_e8=price, status="NEW",
            time_ms=now, update_ms=now,
        )
        fills = (self._fill_market(info, order, fault) if kind == "MARKET"
                 else self._rest_limit(info, order))
        self.orders[order.order_id] = order
        self.order_requests.append((cid, "placed"))
        return order_response(order, fills, params.get("newOrderRespType", "FULL"))

    def _check_lot(self, info: SymbolInfo, qty: int, price: int) -> None:
        step = parse_e8(info.step)
        if qty % step or not parse_e8(info.min_qty) <= qty <= parse_e8(info.max_qty):
            raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
        if mul_e8(qty, price) < parse_e8(info.min_notional):
            raise ApiError(400, -1013, "Filter failure: NOTIONAL")

    def _balance(self, asset: str) -> list[int]:
        return self.balances.setdefault(asset, [0, 0])

    def _fill_market(self, info: SymbolInfo, order: FakeOrder,
                     fault: Fault | None) -> list[FakeFill]:
        price = self.prices[info.symbol]
        if order.side == "BUY":
            if self._balance(info.quote)[0] < mul_e8(order.orig_qty_e8, price):
                self._insufficient(order)
        elif self._balance(info.base)[0] < order.orig_qty_e8:
            self._insufficient(order)
        ratio, parts = 1.0, 1
        if fault is not None and fault.kind == "partial_fill":
            ratio, parts = fault.fill_ratio, max(1, fault.parts)
        step = parse_e8(info.step)
        executed = math.floor(order.orig_qty_e8 * ratio / step) * step
        pieces = _split(executed, parts, step)
        fills = [self._execute(info, order, price, qty, maker=False) for qty in pieces]
        order.status = "FILLED" if order.executed_e8 >= order.orig_qty_e8 else "EXPIRED"
        return fills

    def _insufficient(self, order: FakeOrder) -> None:
        self.order_requests.append((order.client_order_id, "insufficient"))
        raise ApiError(400, -2010, "Account has insufficient balance for requested action.")

    def _rest_limit(self, info: SymbolInfo, order: FakeOrder) -> list[FakeFill]:
        if order.side == "BUY":
            need, asset = mul_e8(order.orig_qty_e8, order.price_e8), info.quote
        else:
            need, asset = order.orig_qty_e8, info.base
        balance = self._balance(asset)
        if balance[0] < need:
            self._insufficient(order)
        balance[0] -= need
        balance[1] += need
        order.locked_e8 = need
        return []

    def _execute(self, info: SymbolInfo, order: FakeOrder, price: int, qty: int, *,
                 maker: bool) -> FakeFill:
        quote = mul_e8(qty, price)
        base_bal, quote_bal = self._balance(info.base), self._balance(info.quote)
        if order.side == "BUY":
            commission, asset = qty * self.commission_bps // 10_000, info.base
            if order.locked_e8:
                release = min(order.locked_e8, quote)
                order.locked_e8 -= release
                quote_bal[1] -= release
            else:
                quote_bal[0] -= quote
            base_bal[0] += qty - commission
        else:
            commission, asset = quote * self.commission_bps // 10_000, info.quote
            if order.locked_e8:
                release = min(order.locked_e8, qty)
                order.locked_e8 -= release
                base_bal[1] -= release
            else:
                base_bal[0] -= qty
            quote_bal[0] += quote - commission
        order.executed_e8 += qty
        order.quote_e8 += quote
        order.update_ms = self.now_ms()
        # Trade ids count per symbol, as Binance's do.
        fill = FakeFill(
            trade_id=next(self._fill_ids.setdefault(info.symbol, itertools.count(1))),
            order_id=order.order_id,
            client_order_id=order.client_order_id, symbol=info.symbol, side=order.side,
            price_e8=price, qty_e8=qty, quote_e8=quote, commission_e8=commission,
            commission_asset=asset, time_ms=order.update_ms, maker=maker,
        )
        self.fills.append(fill)
        return fill

    def _match_resting(self, trade: Trade) -> None:
        info = self.symbols[trade.symbol]
        for order in self.orders.values():
            if order.symbol != trade.symbol or order.status not in _OPEN:
                continue
            if order.type != "LIMIT":
                continue
            buy = order.side == "BUY"
            if (buy and trade.price_e8 > order.price_e8) or (
                not buy and trade.price_e8 < order.price_e8
            ):
                continue
            qty = min(order.orig_qty_e8 - order.executed_e8, trade.qty_e8)
            if qty <= 0:
                continue
            self._execute(info, order, order.price_e8, qty, maker=True)
            order.status = ("FILLED" if order.executed_e8 >= order.orig_qty_e8
                            else "PARTIALLY_FILLED")
            if order.status == "FILLED" and order.locked_e8:
                self._unlock(info, order)

    def _unlock(self, info: SymbolInfo, order: FakeOrder) -> None:
        balance = self._balance(info.quote if order.side == "BUY" else info.base)
        balance[0] += order.locked_e8
        balance[1] -= order.locked_e8
        order.locked_e8 = 0

    def _find(self, params: dict[str, str]) -> FakeOrder:
        info = self._symbol(params)
        order_id, cid = params.get("orderId"), params.get("origClientOrderId")
        if not order_id and not cid:
            raise ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, "
                                        "but both were empty/null!")
        # The latest order wins: a client order id may be reused once its order is closed.
        for order in reversed(self.orders.values()):
            if order.symbol != info.symbol:
                continue
            if (order_id and str(order.order_id) == order_id) or (
                not order_id and order.client_order_id == cid
            ):
                return order
        raise ApiError(400, -2013, "Order does not exist.")

    def query_order(self, params: dict[str, str], fault: Fault | None) -> object:
        return order_json(self._find(params))

    def cancel_order(self, params: dict[str, str], fault: Fault | None) -> object:
        try:
            order = self._find(params)
        except ApiError as exc:
            raise ApiError(400, -2011, "Unknown order sent.") from exc
        if order.status not in _OPEN:
            raise ApiError(400, -2011, "Unknown order sent.")
        order.status = "CANCELED"
        order.update_ms = self.now_ms()
        if order.locked_e8:
            self._unlock(self.symbols[order.symbol], order)
        body = order_json(order)
        body["origClientOrderId"] = order.client_order_id
        body["clientOrderId"] = params.get("newClientOrderId") or f"cancel-{order.order_id}"
        body["transactTime"] = order.update_ms
        for key in ("time", "updateTime", "isWorking", "stopPrice", "icebergQty"):
            body.pop(key, None)
        return body

    def open_orders(self, params: dict[str, str], fault: Fault | None) -> object:
        symbol = params.get("symbol")
        if symbol is not None:
            self._symbol(params)
        return [order_json(o) for o in self.orders.values()
                if o.status in _OPEN and symbol in (None, o.symbol)]

    def account(self, params: dict[str, str], fault: Fault | None) -> object:
        rate = f8(self.commission_bps * SCALE // 10_000)
        return {
            "makerCommission": self.commission_bps, "takerCommission": self.commission_bps,
            "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": rate, "taker": rate, "buyer": "0.00000000",
                                "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False,
            "updateTime": self.now_ms(), "accountType": "SPOT",
            "balances": [{"asset": a, "free": f8(f), "locked": f8(lk)}
                         for a, (f, lk) in sorted(self.balances.items())],
            "permissions": ["SPOT"], "uid": 354937868,
        }

    def my_trades(self, params: dict[str, str], fault: Fault | None) -> object:
        info = self._symbol(params)
        order_id = params.get("orderId")
        start = int(params.get("startTime", "0"))
        end = int(params.get("endTime", str(2**62)))
        from_id = int(params.get("fromId", "0"))
        limit = min(int(params.get("limit", "500")), 1000)
        rows = [
            f for f in self.fills
            if f.symbol == info.symbol and (order_id is None or str(f.order_id) == order_id)
            and start <= f.time_ms <= end and f.trade_id >= from_id
        ]
        return [fill_json(f) for f in rows[:limit]]

def _split(total: int, parts: int, step: int) -> list[int]:
    """``total`` in up to ``parts`` positive multiples of ``step``."""
    if total <= 0:
        return []
    lots = total // step
    parts = min(parts, lots)
    base, extra = divmod(lots, parts)
    return [(base + (1 if i < extra else 0)) * step for i in range(parts)]
