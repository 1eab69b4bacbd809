"""The Binance venue's configuration and the records it hands out, all exact (e8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from cdb.events import Order, OrderStatus, fmt_e8, mul_e8, parse_e8
from cdb.venues.base import VenueOrder
from cdb.venues.binance.errors import VenueRejectedError

Mode = Literal["testnet", "live"]
FINAL: Final = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})
STATUS: Final[dict[str, OrderStatus]] = {
    "NEW": "NEW", "PARTIALLY_FILLED": "PARTIALLY_FILLED", "FILLED": "FILLED",
    "CANCELED": "CANCELED", "PENDING_CANCEL": "CANCELED", "REJECTED": "REJECTED",
    "EXPIRED": "EXPIRED", "EXPIRED_IN_MATCH": "EXPIRED",
}


class BinanceVenueConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How the Binance venue connects and behaves. Credentials are passed separately
    so they never sit in a printable struct.

    Args:
        mode: ``testnet`` (default) or ``live``: live trading needs this said explicitly.
        rest_url: base URL overriding the mode's (FakeBinance: ``http://127.0.0.1:PORT``).
        weight_limit, weight_window_s: client-side request weight budget (the venue's
            own ``exchangeInfo`` limit lowers it further).
        order_limit, order_window_s: client-side new-order budget.
        timeout_s: one request's timeout.
        recv_window_ms: how long a signed request stays valid.
        max_retries: retries of a repeatable request on 5xx/timeouts.
        max_rate_limit_retries: retries after 429/-1003/-1015 before giving up.
        backoff_base_s, backoff_cap_s: exponential backoff (with jitter) bounds.
        resolve_window_s: how long an unknown order may still appear on the venue.
        resolve_interval_s: pause between look-ups of an unknown order.
        resolve_give_up_s: after this, an order that cannot be looked up stays unknown.
        max_sends: most submissions of one order (each after proof it was not placed).
        poll_interval_s: how often open orders are polled for fills.
        name: the venue's name on fills.
    """

    mode: Mode = "testnet"
    rest_url: str | None = None
    weight_limit: int = 1200
    weight_window_s: float = 60.0
    weight_margin_s: float = 1.0
    order_limit: int = 50
    order_window_s: float = 10.0
    timeout_s: float = 10.0
    recv_window_ms: int = 5000
    max_retries: int = 3
    max_rate_limit_retries: int = 5
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    resolve_window_s: float = 10.0
    resolve_interval_s: float = 1.0
    resolve_give_up_s: float = 60.0
    max_sends: int = 2
    poll_interval_s: float = 2.0
    name: str = ""


class VenueFill(msgspec.Struct, frozen=True, kw_only=True):
    trade_id: int
    price_e8: int
    qty_e8: int
    commission_e8: int
    commission_asset: str
    time_ms: int


@dataclass(frozen=True, slots=True)
class SymbolRules:
    base: str
    quote: str
    step_e8: int
    tick_e8: int
    min_qty_e8: int
    min_notional_e8: int


def fill_of(row: Any, time_ms: int) -> VenueFill:
    return VenueFill(trade_id=int(row["tradeId"]), price_e8=parse_e8(row["price"]),
                 qty_e8=parse_e8(row["qty"]), commission_e8=parse_e8(row["commission"]),
                 commission_asset=str(row["commissionAsset"]), time_ms=time_ms)


def trade_row(row: Any) -> VenueFill:
    return VenueFill(trade_id=int(row["id"]), price_e8=parse_e8(row["price"]),
                 qty_e8=parse_e8(row["qty"]), commission_e8=parse_e8(row["commission"]),
                 commission_asset=str(row["commissionAsset"]), time_ms=int(row["time"]))


def fee_of(fill: VenueFill, info: SymbolRules | None) -> int:
    if info is None or fill.commission_asset == info.quote:
        return fill.commission_e8
    if fill.commission_asset == info.base:
        return mul_e8(fill.commission_e8, fill.price_e8)
    return 0


def venue_order(row: Any) -> VenueOrder:
    return VenueOrder(
        symbol=str(row["symbol"]), venue_order_id=int(row["orderId"]),
        client_order_id=str(row["clientOrderId"]), side=str(row["side"]),
        type=str(row["type"]), status=str(row["status"]),
        orig_qty_e8=parse_e8(str(row["origQty"])),
        executed_qty_e8=parse_e8(str(row["executedQty"])),
        price_e8=parse_e8(str(row["price"])), time_ms=int(row.get("time") or 0),
    )


def symbol_rules(info: Any) -> dict[str, SymbolRules]:
    """Each symbol's assets and filters, from ``exchangeInfo``."""
    rules: dict[str, SymbolRules] = {}
    for row in info.get("symbols", []):
        filters = {f["filterType"]: f for f in row.get("filters", [])}
        lot, price = filters.get("LOT_SIZE", {}), filters.get("PRICE_FILTER", {})
        notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
        rules[row["symbol"]] = SymbolRules(
            base=row["baseAsset"], quote=row["quoteAsset"],
            step_e8=parse_e8(lot.get("stepSize", "0.00000001")) or 1,
            tick_e8=parse_e8(price.get("tickSize", "0.00000001")) or 1,
            min_qty_e8=parse_e8(lot.get("minQty", "0")),
            min_notional_e8=parse_e8(notional.get("minNotional", "0")),
        )
    return rules


def order_params(order: Order, info: SymbolRules | None, venue: str) -> dict[str, str]:
    """``POST order`` parameters of ``order`` rounded to its symbol's filters (never up).

    Raises:
        VenueRejectedError: unknown symbol, or below the venue's minimum once rounded.
    """
    cid = order.client_order_id
    if info is None:
        raise VenueRejectedError(f"{venue}: unknown symbol {order.symbol}", client_order_id=cid)
    qty = order.qty_e8 // info.step_e8 * info.step_e8  # never more than risk approved
    price = order.price_e8 if order.order_type == "LIMIT" else order.ref_price_e8
    if order.order_type == "LIMIT":
        price = price // info.tick_e8 * info.tick_e8
    if qty < max(info.min_qty_e8, 1) or mul_e8(qty, price) < info.min_notional_e8:
        raise VenueRejectedError(
            f"{venue}: {cid} quantity {fmt_e8(order.qty_e8)} {order.symbol} is below the "
            f"venue's minimum (step {fmt_e8(info.step_e8)}, min notional "
            f"{fmt_e8(info.min_notional_e8)})", client_order_id=cid)
    params = {"symbol": order.symbol, "side": order.side, "type": order.order_type,
              "quantity": fmt_e8(qty), "newClientOrderId": cid, "newOrderRespType": "FULL"}
    if order.order_type == "LIMIT":
        params.update(timeInForce="GTC", price=fmt_e8(price))
    return params
