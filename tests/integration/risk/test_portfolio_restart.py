"""A restarted risk service rebuilds its portfolio from the database of record, so its
limits hold against what is really held and open, not against an empty book."""

from __future__ import annotations

from tests.unit.services.risk_harness import RecordingBus

from cdb.bus.keys import ORDERS, RISK_EVENTS, SIGNALS
from cdb.clock import SimClock
from cdb.events import SCALE, Fill, Order, RiskDecision, Signal
from cdb.risk.limits import RiskLimits
from cdb.services.base import ServiceContext
from cdb.services.risk import RiskService, store_history
from cdb.storage.store import Store

S = 1_000_000_000
T0 = 1_704_067_200 * S


def order(n: int, qty: int, ts: int) -> Order:
    return Order(id=f"s{n}-o", ts=ts, correlation_id=f"t{n}", causation_id=f"s{n}",
                 source="risk-1", client_order_id=f"c{n}", symbol="BTCUSDT", side="BUY",
                 order_type="MARKET", qty_e8=qty * SCALE, ref_price_e8=100 * SCALE)


def fill(o: Order, ts: int) -> Fill:
    return Fill(id=f"{o.id}-f", ts=ts, correlation_id=o.correlation_id, causation_id=o.id,
                source="execution", order_id=o.id, client_order_id=o.client_order_id,
                venue="paper", symbol=o.symbol, side=o.side, price_e8=100 * SCALE,
                qty_e8=o.qty_e8, fee_e8=0, venue_fill_id=f"v{o.id}", order_status="FILLED",
                cum_qty_e8=o.qty_e8)


def buy(n: int, ts: int) -> Signal:
    return Signal(id=f"s{n}", ts=ts, correlation_id=f"t{n}", causation_id=f"t{n}",
                  source="signal", strategy_id="m", symbol="BTCUSDT", side="BUY",
                  price_e8=100 * SCALE, trade_id=n, move_bp=300, volume_e8=0)


def restarted_risk(store: Store) -> tuple[RiskService, RecordingBus]:
    bus = RecordingBus()
    ctx = ServiceContext(name="risk", instance="risk-2", bus=bus,  # type: ignore[arg-type]
                         clock=SimClock(T0 + 10 * S))
    # Orders of 1,000 (10 BTC at 100) up to 1,500 in the symbol: fine on an empty book,
    # not with 10 BTC held and 3 on order.
    limits = RiskLimits(order_notional_e8=1_000 * SCALE, max_position_e8=1_500 * SCALE)
    risk = RiskService(ctx, limits, 100_000 * SCALE, history=store_history(store))
    return risk, bus


async def test_a_restarted_risk_rebuilds_positions_and_open_orders_and_holds_its_limits(
    store: Store,
) -> None:
    held, still_open = order(1, 10, T0), order(2, 3, T0 + S)
    await store.write([held, still_open, fill(held, T0 + 2 * S)])

    risk, bus = restarted_risk(store)
    await risk.on_start()
    assert risk.book.position("BTCUSDT") == 10 * SCALE
    assert set(risk.book.open_orders) == {"s2-o"}
    assert risk.book.cash_e8 == (100_000 - 1_000) * SCALE

    await risk.handle(SIGNALS, [buy(3, T0 + 10 * S)])  # 10 more would make 23 BTC
    [decision] = bus.of(RISK_EVENTS)
    assert isinstance(decision, RiskDecision)
    assert not decision.approved
    assert decision.reason == "position_limit"
    assert bus.of(ORDERS) == []
    # A signal decided before the restart, redelivered, is not decided again.
    await risk.handle(SIGNALS, [buy(2, T0 + S)])
    assert len(bus.of(RISK_EVENTS)) == 1
    assert bus.of(ORDERS) == []
