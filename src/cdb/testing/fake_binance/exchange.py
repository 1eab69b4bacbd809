"""The fake exchange itself: symbols, balances, orders, fills, and Binance's JSON shapes.

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
- filters (LOT_SIZE, PRICE_FILTER, NOTIONAL) and balances are checked (-1013, -2010);
- decimals are answered with eight places, as Binance does.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator
from typing import Final

import msgspec

from cdb.events import SCALE, Trade, mul_e8, parse_e8
from cdb.testing.fake_binance.faults import Fault

_CID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
QUOTES: Final = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")
_DEFAULT_PRICES: Final = {"BTCUSDT": "42000", "ETHUSDT": "2300", "SOLUSDT": "100",
                          "BNBUSDT": "310", "XRPUSDT": "0.62"}
_OPEN: Final = ("NEW", "PARTIALLY_FILLED")


def f8(value_e8: int) -> str:
    """Binance's decimal format: always eight decimals."""
    sign = "-" if value_e8 < 0 else ""
    whole, frac = divmod(abs(value_e8), SCALE)
    return f"{sign}{whole}.{frac:08d}"


class ApiError(Exception):
    """A Binance error answer: HTTP status, error code, message, extra headers."""

    def __init__(self, status: int, code: int, msg: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.headers = status, code, msg, headers or {}


class SymbolInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A tradable symbol of the fake (filters as in ``exchangeInfo``)."""

    symbol: str
    base: str
    quote: str
    price: str = "100"
    step: str = "0.00001"
    tick: str = "0.01"
    min_qty: str = "0.00001"
    max_qty: str = "9000"
    min_notional: str = "5"

    @classmethod
    def of(cls, symbol: str, price: str | None = None) -> SymbolInfo:
        """A symbol with its base and quote split off a known quote asset."""
        quote = next((q for q in QUOTES if symbol.endswith(q) and symbol != q), symbol[-4:])
        return cls(symbol=symbol, base=symbol[: -len(quote)], quote=quote,
                   price=price or _DEFAULT_PRICES.get(symbol, "100"))


class FakeFill(msgspec.Struct, frozen=True, kw_only=True):
    """One execution in the fake's ledger (a row of ``myTrades``)."""

    trade_id: int
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    price_e8: int
    qty_e8: int
    quote_e8: int
    commission_e8: int
    commission_asset: str
    time_ms: int
    maker: bool


class FakeOrder(msgspec.Struct, kw_only=True):
    """One order in the fake's ledger."""

    order_id: int
    symbol: str
    client_order_id: str
    side: str
    type: str
    time_in_force: str
    orig_qty_e8: int
    price_e8: int
    status: str
    time_ms: int
    update_ms: int
    executed_e8: int = 0
    quote_e8: int = 0
    locked_e8: int = 0
    """Funds held for a resting order (quote for a buy, base for a sell)."""


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
            "symbols": [_symbol_json(s) for s in self.symbols.values()
                        if wanted in (None, s.symbol)],
        }

    def _symbol(self, params: dict[str, str]) -> SymbolInfo:
        name = _required(params, "symbol")
        info = self.symbols.get(name)
        if info is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return info

    def new_order(self, params: dict[str, str], fault: Fault | None) -> object:
        info = self._symbol(params)
        side = _required(params, "side")
        kind = _required(params, "type")
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.")
        if kind not in ("MARKET", "LIMIT"):
            raise ApiError(400, -1116, "Invalid orderType.")
        qty = _decimal(params, "quantity")
        cid = params.get("newClientOrderId") or f"fake-{next(self._anon_ids)}"
        if not _CID.match(cid):
            raise ApiError(400, -1100, "Illegal characters found in parameter "
                                        "'newClientOrderId'; legal range is "
                                        "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
        price = 0
        tif = "GTC"
        if kind == "LIMIT":
            price = _decimal(params, "price")
            tif = _required(params, "timeInForce")
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
        return self._order_response(order, fills, params.get("newOrderRespType", "FULL"))

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
        return _order_json(self._find(params))

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
        body = _order_json(order)
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
        return [_order_json(o) for o in self.orders.values()
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
        return [_fill_json(f) for f in rows[:limit]]

    def _order_response(self, order: FakeOrder, fills: list[FakeFill], kind: str) -> object:
        ack = {"symbol": order.symbol, "orderId": order.order_id, "orderListId": -1,
               "clientOrderId": order.client_order_id, "transactTime": order.update_ms}
        if kind == "ACK":
            return ack
        result = {
            **ack, "price": f8(order.price_e8), "origQty": f8(order.orig_qty_e8),
            "executedQty": f8(order.executed_e8), "origQuoteOrderQty": "0.00000000",
            "cummulativeQuoteQty": f8(order.quote_e8), "status": order.status,
            "timeInForce": order.time_in_force, "type": order.type, "side": order.side,
            "workingTime": order.time_ms, "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        if kind == "RESULT":
            return result
        result["fills"] = [
            {"price": f8(f.price_e8), "qty": f8(f.qty_e8),
             "commission": f8(f.commission_e8), "commissionAsset": f.commission_asset,
             "tradeId": f.trade_id}
            for f in fills
        ]
        return result


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was "
                                    "empty/null, or malformed.")
    return value


def _decimal(params: dict[str, str], name: str) -> int:
    text = _required(params, name)
    if not re.fullmatch(r"[0-9]{1,20}(\.[0-9]{1,20})?", text):
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal "
                                    "range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.")
    try:
        return parse_e8(text)
    except ValueError as exc:
        raise ApiError(400, -1111, f"Parameter '{name}' has too much precision.") from exc


def _split(total: int, parts: int, step: int) -> list[int]:
    """``total`` in up to ``parts`` positive multiples of ``step``."""
    if total <= 0:
        return []
    lots = total // step
    parts = min(parts, lots)
    base, extra = divmod(lots, parts)
    return [(base + (1 if i < extra else 0)) * step for i in range(parts)]


def _symbol_json(s: SymbolInfo) -> dict[str, object]:
    return {
        "symbol": s.symbol, "status": "TRADING", "baseAsset": s.base, "baseAssetPrecision": 8,
        "quoteAsset": s.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT",
                       "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
        "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": f8(parse_e8(s.tick)),
             "maxPrice": "1000000.00000000", "tickSize": f8(parse_e8(s.tick))},
            {"filterType": "LOT_SIZE", "minQty": f8(parse_e8(s.min_qty)),
             "maxQty": f8(parse_e8(s.max_qty)), "stepSize": f8(parse_e8(s.step))},
            {"filterType": "NOTIONAL", "minNotional": f8(parse_e8(s.min_notional)),
             "applyMinToMarket": True, "maxNotional": "9000000.00000000",
             "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _order_json(o: FakeOrder) -> dict[str, object]:
    return {
        "symbol": o.symbol, "orderId": o.order_id, "orderListId": -1,
        "clientOrderId": o.client_order_id, "price": f8(o.price_e8),
        "origQty": f8(o.orig_qty_e8), "executedQty": f8(o.executed_e8),
        "cummulativeQuoteQty": f8(o.quote_e8), "status": o.status,
        "timeInForce": o.time_in_force, "type": o.type, "side": o.side,
        "stopPrice": "0.00000000", "icebergQty": "0.00000000", "time": o.time_ms,
        "updateTime": o.update_ms, "isWorking": o.type == "LIMIT",
        "workingTime": o.time_ms, "origQuoteOrderQty": "0.00000000",
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def _fill_json(f: FakeFill) -> dict[str, object]:
    return {
        "symbol": f.symbol, "id": f.trade_id, "orderId": f.order_id, "orderListId": -1,
        "price": f8(f.price_e8), "qty": f8(f.qty_e8), "quoteQty": f8(f.quote_e8),
        "commission": f8(f.commission_e8), "commissionAsset": f.commission_asset,
        "time": f.time_ms, "isBuyer": f.side == "BUY", "isMaker": f.maker,
        "isBestMatch": True,
    }
