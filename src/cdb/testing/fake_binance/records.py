"""The fake's records (symbols, orders, fills, errors) and Binance's JSON shapes of them.

Decimals are answered with eight places, as Binance does; parameters are parsed and
refused with Binance's codes and messages.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from cdb.events import SCALE, parse_e8

CID: Final = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
QUOTES: Final = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")
_DEFAULT_PRICES: Final = {"BTCUSDT": "42000", "ETHUSDT": "2300", "SOLUSDT": "100",
                          "BNBUSDT": "310", "XRPUSDT": "0.62"}


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


def required(params: dict[str, str], name: str) -> str:
    """Parameter ``name``; -1102 when it is missing or empty."""
    value = params.get(name)
    if not value:
        raise ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was "
                                    "empty/null, or malformed.")
    return value


def decimal(params: dict[str, str], name: str) -> int:
    """Decimal parameter ``name`` in e8; -1100/-1111 as Binance answers a malformed one."""
    text = required(params, name)
    if not re.fullmatch(r"[0-9]{1,20}(\.[0-9]{1,20})?", text):
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal "
                                    "range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.")
    try:
        return parse_e8(text)
    except ValueError as exc:
        raise ApiError(400, -1111, f"Parameter '{name}' has too much precision.") from exc


def symbol_json(s: SymbolInfo) -> dict[str, object]:
    """A symbol as ``exchangeInfo`` lists it."""
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


def order_json(o: FakeOrder) -> dict[str, object]:
    """An order as ``GET order`` and ``openOrders`` answer it."""
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


def fill_json(f: FakeFill) -> dict[str, object]:
    """An execution as a row of ``myTrades``."""
    return {
        "symbol": f.symbol, "id": f.trade_id, "orderId": f.order_id, "orderListId": -1,
        "price": f8(f.price_e8), "qty": f8(f.qty_e8), "quoteQty": f8(f.quote_e8),
        "commission": f8(f.commission_e8), "commissionAsset": f.commission_asset,
        "time": f.time_ms, "isBuyer": f.side == "BUY", "isMaker": f.maker,
        "isBestMatch": True,
    }


def order_response(order: FakeOrder, fills: list[FakeFill], kind: str) -> object:
    """A new order's answer in ``newOrderRespType`` ``kind`` (ACK, RESULT or FULL)."""
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
