"""The paper venue fills against following trades, with fees, slippage and parts."""

import pytest

from cdb.events import SCALE, Order, Trade, trade_event_id
from cdb.venues.paper import PaperVenue


def trade(n: int, price: float, qty: float, ts: int | None = None) -> Trade:
    tid = trade_event_id("test", "BTCUSDT", n)
    return Trade(
        id=tid, ts=n if ts is None else ts, correlation_id=tid, causation_id=tid, source="t",
        venue="test", symbol="BTCUSDT", trade_id=n, price_e8=round(price * SCALE),
        qty_e8=round(qty * SCALE),
    )


def order(qty: float, side: str = "BUY", kind: str = "MARKET", limit: float = 0.0, ts: int = 1,
          ref_trade: int = 1, oid: str = "o1") -> Order:
    return Order(
        id=oid, ts=ts, correlation_id="t", causation_id="s", source="r", client_order_id="c-" + oid,
        symbol="BTCUSDT", side=side, order_type=kind, qty_e8=round(qty * SCALE),
        price_e8=round(limit * SCALE), ref_price_e8=100 * SCALE, ref_trade_id=ref_trade,
    )


async def test_market_buy_fills_at_next_trade_with_slippage_and_fee() -> None:
    venue = PaperVenue(taker_fee_bps=10, slippage_bps=5)
    await venue.on_trades([trade(1, 100.0, 5.0)])
    assert await venue.submit(order(1.0)) == []  # trade 1 is the decision's own trade
    (x,) = await venue.on_trades([trade(2, 200.0, 5.0)])
    assert x.price_e8 == round(200.1 * SCALE)
    assert x.qty_e8 == SCALE
    assert x.fee_e8 == round(0.2001 * SCALE)
    assert x.status == "FILLED"


async def test_a_large_order_fills_in_parts_across_trades() -> None:
    venue = PaperVenue(slippage_bps=0)
    await venue.submit(order(3.0))
    execs = await venue.on_trades([trade(2, 100.0, 1.0), trade(3, 101.0, 1.5), trade(4, 99.0, 9)])
    assert [(x.qty_e8, x.status, x.cum_qty_e8) for x in execs] == [
        (SCALE, "PARTIALLY_FILLED", SCALE),
        (150_000_000, "PARTIALLY_FILLED", 250_000_000),
        (50_000_000, "FILLED", 3 * SCALE),
    ]
    assert venue.open_orders() == []


async def test_limit_buy_waits_for_a_print_through_its_price_and_fills_at_it() -> None:
    venue = PaperVenue(maker_fee_bps=2)
    assert await venue.submit(order(1.0, kind="LIMIT", limit=95.0)) == []
    assert await venue.on_trades([trade(2, 96.0, 1.0)]) == []
    (x,) = await venue.on_trades([trade(3, 94.0, 1.0)])
    assert x.price_e8 == 95 * SCALE
    assert x.fee_e8 == 95 * SCALE * 2 // 10_000


async def test_limit_sell_fills_when_price_rises_to_it() -> None:
    venue = PaperVenue()
    await venue.submit(order(1.0, side="SELL", kind="LIMIT", limit=105.0))
    assert await venue.on_trades([trade(2, 104.0, 1.0)]) == []
    assert len(await venue.on_trades([trade(3, 105.0, 1.0)])) == 1


async def test_fills_do_not_depend_on_whether_the_order_or_the_trades_arrive_first() -> None:
    early, late = PaperVenue(), PaperVenue()
    following = [trade(2, 101.0, 0.4), trade(3, 102.0, 0.4), trade(4, 103.0, 0.4)]
    await early.submit(order(1.0))
    a = await early.on_trades(following)
    await late.on_trades([trade(1, 100.0, 1.0), *following])
    b = await late.submit(order(1.0))
    assert a == b
    assert len(a) == 3


async def test_a_resent_order_never_trades_twice() -> None:
    venue = PaperVenue()
    await venue.submit(order(1.0))
    await venue.submit(order(1.0))
    execs = await venue.on_trades([trade(2, 100.0, 10.0)])
    assert len(execs) == 1
    assert len(venue.ledger) == 1


async def test_cancel_removes_a_resting_order() -> None:
    venue = PaperVenue()
    await venue.submit(order(1.0, kind="LIMIT", limit=50.0))
    assert await venue.cancel("o1")
    assert not await venue.cancel("o1")
    assert await venue.on_trades([trade(2, 40.0, 1.0)]) == []


async def test_what_the_venue_remembers_of_finished_orders_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cdb.venues import paper

    monkeypatch.setattr(paper, "DONE_KEPT", 2)
    monkeypatch.setattr(paper, "LEDGER_KEPT", 2)
    venue = PaperVenue()
    for i in range(3):
        await venue.submit(order(1.0, oid=f"o{i}", ts=10 * i))
        await venue.on_trades([trade(10 * i + 1, 100.0, 5.0, ts=10 * i + 1)])
    assert venue.open_orders() == []
    assert list(venue._done) == ["c-o1", "c-o2"]
    assert venue._by_client_id == {}
    assert [x.order.id for x in venue.ledger] == ["o1", "o2"]
    assert await venue.submit(order(1.0, oid="o2", ts=20)) == []  # a resend: not again
    # A cancelled order is finished too.
    await venue.submit(order(1.0, oid="o3", ts=40))
    assert await venue.cancel("o3")
    assert await venue.submit(order(1.0, oid="o3", ts=40)) == []
