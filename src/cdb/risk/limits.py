"""Risk limits: a pure decision from a signal and the portfolio to an order or a
rejection with its reason.

The checks run in a fixed order and the first that fails names the rejection, so a
decision is explainable and repeatable. Order rate is counted in event time, which
makes a flood rejected beyond the rate (never queued) and replays deterministic.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import msgspec

from cdb.events import SCALE, Signal, mul_e8
from cdb.risk.portfolio import Portfolio

# Reasons (label values of cdb_risk_rejections_total and risk_decisions.reason).
ESS_HALTED: Final = "ess_halted"
STALE_DATA: Final = "stale_data"
RATE_LIMIT: Final = "rate_limit"
OPEN_ORDERS: Final = "open_orders_limit"
ORDER_NOTIONAL: Final = "order_notional_limit"
POSITION_LIMIT: Final = "position_limit"
EXPOSURE_LIMIT: Final = "exposure_limit"
NO_POSITION: Final = "no_position"
NO_PRICE: Final = "no_price"
TOO_SMALL: Final = "below_min_qty"


class RiskLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Limits in quote currency (e8) unless named otherwise."""

    order_notional_e8: int = 1_000 * SCALE
    """Size of each new order."""
    max_order_notional_e8: int = 5_000 * SCALE
    max_position_e8: int = 5_000 * SCALE
    """Largest exposure in one symbol."""
    max_exposure_e8: int = 20_000 * SCALE
    """Largest total exposure."""
    max_open_orders: int = 5
    max_orders_per_window: int = 10
    rate_window_ns: int = 10 * 1_000_000_000
    qty_step_e8: int = 1_000
    """Order quantities are rounded down to this step (0.00001)."""


class Approval(msgspec.Struct, frozen=True, kw_only=True):
    """An order to place."""

    qty_e8: int
    reduce_only: bool


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """A refused signal and why."""

    reason: str
    detail: str


Decision = Approval | Rejection


class OrderRate:
    """Orders approved within the sliding window, in event time."""

    __slots__ = ("_times", "_window")

    def __init__(self, window_ns: int) -> None:
        self._window = window_ns
        self._times: deque[int] = deque()

    def count(self, now: int) -> int:
        times = self._times
        while times and times[0] <= now - self._window:
            times.popleft()
        return len(times)

    def record(self, ts: int) -> None:
        self._times.append(ts)


def _paused(signal: Signal, halted: bool) -> Rejection:
    """Why a new (non-reducing) order may not leave now."""
    if halted:
        return Rejection(reason=ESS_HALTED, detail="emergency stop is HALTED")
    return Rejection(reason=STALE_DATA, detail=f"{signal.symbol} market data is stale; paused")


def decide(
    signal: Signal, book: Portfolio, limits: RiskLimits, rate: OrderRate, *, halted: bool,
    stale: bool = False,
) -> Decision:
    """Decide on ``signal``: an approval with its quantity or a rejection with a reason.

    Args:
        signal: the strategy's signal.
        book: the portfolio as risk knows it (open orders included).
        limits: the configured limits.
        rate: orders approved recently (not modified here).
        halted: whether the emergency stop is HALTED (only reducing orders pass).
        stale: whether the signal's market data is stale (only reducing orders pass).
    """
    price = signal.price_e8
    if price <= 0:
        return Rejection(reason=NO_PRICE, detail="signal has no reference price")
    step = limits.qty_step_e8
    if signal.side == "SELL":
        sellable = book.position(signal.symbol) - book.open_qty(signal.symbol, "SELL")
        qty = min(sellable, limits.order_notional_e8 * SCALE // price)
        qty -= qty % step
        if qty <= 0:
            return Rejection(reason=NO_POSITION, detail=f"nothing to sell in {signal.symbol}")
        reduce_only = True
    else:
        if halted or stale:
            return _paused(signal, halted)
        qty = limits.order_notional_e8 * SCALE // price
        qty -= qty % step
        reduce_only = False
    if qty <= 0:
        return Rejection(reason=TOO_SMALL, detail="order size rounds to zero")
    if rate.count(signal.ts) >= limits.max_orders_per_window:
        return Rejection(
            reason=RATE_LIMIT,
            detail=f"{limits.max_orders_per_window} orders within "
            f"{limits.rate_window_ns / 1e9:g}s already",
        )
    if len(book.open_orders) >= limits.max_open_orders:
        return Rejection(reason=OPEN_ORDERS, detail=f"{len(book.open_orders)} orders open")
    if reduce_only:
        return Approval(qty_e8=qty, reduce_only=True)
    notional = mul_e8(qty, price)
    if notional > limits.max_order_notional_e8:
        return Rejection(reason=ORDER_NOTIONAL, detail=f"order notional {notional} too large")
    # Exposure is valued at the mark (as shown everywhere), not at the signal's price,
    # which may be older: checking at the mark keeps the shown exposure within limits.
    symbol_after, total_after = book.exposure_after(signal.symbol, "BUY", qty, price)
    if symbol_after > limits.max_position_e8:
        return Rejection(reason=POSITION_LIMIT, detail=f"{signal.symbol} exposure at limit")
    if total_after > limits.max_exposure_e8:
        return Rejection(reason=EXPOSURE_LIMIT, detail="total exposure at limit")
    return Approval(qty_e8=qty, reduce_only=False)
