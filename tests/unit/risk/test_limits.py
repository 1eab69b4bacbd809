"""Each risk limit rejects with its reason; within limits a signal becomes an order."""

import pytest

from cdb.events import SCALE, Fill, Order, Signal
from cdb.risk import limits as L
from cdb.risk.limits import Approval, OrderRate, Rejection, RiskLimits, decide
from cdb.risk.portfolio import Portfolio

S = 1_000_000_000


def signal(side: str = "BUY", price: float = 100.0, ts: float = 1.0, sym: str = "BTCUSDT",
           n: int = 1) -> Signal:
    return Signal(
        id=f"s{n}", ts=int(ts * S), correlation_id="t", causation_id="t", source="x",
        strategy_id="m", symbol=sym, side=side, price_e8=round(price * SCALE), trade_id=n,
        move_bp=300, volume_e8=0,
    )


def limits(**kw: int) -> RiskLimits:
    base = {"order_notional_e8": 1_000 * SCALE, "max_position_e8": 5_000 * SCALE,
            "max_exposure_e8": 20_000 * SCALE, "max_open_orders": 5, "max_orders_per_window": 10}
    base.update(kw)
    return RiskLimits(**base)


def fill(order_id: str, side: str, qty: float, price: float = 100.0, sym: str = "BTCUSDT",
         n: int = 1) -> Fill:
    return Fill(
        id=f"f{order_id}{n}", ts=1, correlation_id="t", causation_id=order_id, source="x",
        order_id=order_id, client_order_id="c", venue="paper", symbol=sym, side=side,
        price_e8=round(price * SCALE), qty_e8=round(qty * SCALE), fee_e8=0, venue_fill_id="v",
        order_status="FILLED", cum_qty_e8=round(qty * SCALE),
    )


def order(oid: str, side: str = "BUY", qty: float = 10.0, sym: str = "BTCUSDT") -> Order:
    return Order(
        id=oid, ts=1, correlation_id="t", causation_id="s", source="x", client_order_id="c" + oid,
        symbol=sym, side=side, order_type="MARKET", qty_e8=round(qty * SCALE),
        ref_price_e8=100 * SCALE,
    )


def test_a_buy_within_limits_is_sized_by_order_notional() -> None:
    d = decide(signal(price=100.0), Portfolio(cash_e8=10**13), limits(), OrderRate(S), halted=False)
    assert d == Approval(qty_e8=10 * SCALE, reduce_only=False)


def test_sell_without_a_position_is_rejected() -> None:
    d = decide(signal("SELL"), Portfolio(cash_e8=10**13), limits(), OrderRate(S), halted=False)
    assert isinstance(d, Rejection)
    assert d.reason == L.NO_POSITION


def test_sell_reduces_at_most_the_position() -> None:
    book = Portfolio(cash_e8=10**13)
    book.on_fill(fill("o1", "BUY", 3.0))
    d = decide(signal("SELL"), book, limits(), OrderRate(S), halted=False)
    assert d == Approval(qty_e8=3 * SCALE, reduce_only=True)


def test_position_limit_counts_open_orders_and_is_exact_at_the_boundary() -> None:
    book = Portfolio(cash_e8=10**13)
    book.marks["BTCUSDT"] = 100 * SCALE
    for i in range(4):
        book.on_order(order(f"o{i}"))  # 4 x 1000 open
    ok = decide(signal(), book, limits(max_open_orders=10), OrderRate(S), halted=False)
    assert isinstance(ok, Approval)  # 4000 + 1000 == 5000: at the limit is allowed
    book.on_order(order("o9"))
    d = decide(signal(), book, limits(max_open_orders=10), OrderRate(S), halted=False)
    assert isinstance(d, Rejection)
    assert d.reason == L.POSITION_LIMIT


def test_total_exposure_limit_across_symbols() -> None:
    book = Portfolio(cash_e8=10**13)
    book.on_fill(fill("o1", "BUY", 10.0, sym="ETHUSDT"))
    book.marks["ETHUSDT"] = 100 * SCALE
    d = decide(signal(), book, limits(max_exposure_e8=1_500 * SCALE), OrderRate(S), halted=False)
    assert isinstance(d, Rejection)
    assert d.reason == L.EXPOSURE_LIMIT


def test_order_notional_limit() -> None:
    d = decide(signal(), Portfolio(cash_e8=10**13),
               limits(order_notional_e8=6_000 * SCALE, max_order_notional_e8=5_000 * SCALE,
                      max_position_e8=10**15, max_exposure_e8=10**15),
               OrderRate(S), halted=False)
    assert isinstance(d, Rejection)
    assert d.reason == L.ORDER_NOTIONAL


def test_open_orders_limit() -> None:
    book = Portfolio(cash_e8=10**13)
    book.on_order(order("o1", sym="ETHUSDT"))
    d = decide(signal(), book, limits(max_open_orders=1), OrderRate(S), halted=False)
    assert isinstance(d, Rejection)
    assert d.reason == L.OPEN_ORDERS


def test_order_rate_limit_in_event_time_with_a_sliding_window() -> None:
    rate = OrderRate(10 * S)
    lim = limits(max_orders_per_window=3, max_position_e8=10**15, max_exposure_e8=10**15)
    book = Portfolio(cash_e8=10**13)
    for t in (0.0, 1.0, 2.0):
        rate.record(int(t * S))
    d = decide(signal(ts=9.9), book, lim, rate, halted=False)
    assert isinstance(d, Rejection)
    assert d.reason == L.RATE_LIMIT
    assert isinstance(decide(signal(ts=10.0), book, lim, rate, halted=False), Approval)


def test_halted_blocks_buys_but_lets_a_reducing_sell_through() -> None:
    book = Portfolio(cash_e8=10**13)
    book.on_fill(fill("o1", "BUY", 3.0))
    d = decide(signal(), book, limits(), OrderRate(S), halted=True)
    assert isinstance(d, Rejection)
    assert d.reason == L.ESS_HALTED
    assert isinstance(decide(signal("SELL"), book, limits(), OrderRate(S), halted=True), Approval)


@pytest.mark.parametrize("price", [0.0])
def test_signal_without_price_is_rejected(price: float) -> None:
    d = decide(signal(price=price), Portfolio(cash_e8=1), limits(), OrderRate(S), halted=False)
    assert isinstance(d, Rejection)
    assert d.reason == L.NO_PRICE


def test_portfolio_pnl_fees_and_drawdown_are_exact() -> None:
    book = Portfolio(cash_e8=1_000 * SCALE)
    book.on_fill(fill("o1", "BUY", 2.0, price=100.0))
    book.on_fill(fill("o1", "BUY", 2.0, price=100.0))  # duplicate delivery: applied once
    assert book.position("BTCUSDT") == 2 * SCALE
    book.on_marks({"BTCUSDT": 50 * SCALE})
    assert book.equity_e8() == 900 * SCALE
    assert book.max_drawdown_bp == 1000  # 10.00 %
    book.on_fill(fill("o2", "SELL", 2.0, price=150.0))
    assert book.realized_e8 == 100 * SCALE
    assert book.cash_e8 == 1_100 * SCALE


def test_a_fill_counts_once_and_the_ids_kept_for_that_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cdb.risk import portfolio

    monkeypatch.setattr(portfolio, "FILLS_KEPT", 3)
    book = Portfolio(cash_e8=10**13)
    fills = [fill(f"o{i}", "BUY", 1.0) for i in range(5)]
    for f in fills:
        book.on_fill(f)
    book.on_fill(fills[4])  # redelivered: applied once
    assert book.position("BTCUSDT") == 5 * SCALE
    assert list(book.seen_fills) == [f.id for f in fills[2:]]
