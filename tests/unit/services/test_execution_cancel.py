"""Execution carries out risk's cancel command: open orders that add risk are cancelled
on the venue and reported CANCELED once; reducing orders stay."""

from __future__ import annotations

import pytest
from tests.unit.services.risk_harness import T0, RecordingBus

from cdb.bus.keys import FILLS, MARKET_DATA, ORDERS
from cdb.clock import SimClock
from cdb.errors import BusError
from cdb.events import SCALE, CancelOrders, Fill, Order, OrderUpdate, Trade, decode, encode
from cdb.services.base import ServiceContext
from cdb.services.execution import ExecutionService
from cdb.venues.paper import PaperVenue

S = 1_000_000_000


def order(oid: str, side: str = "BUY", symbol: str = "BTCUSDT", qty: float = 10.0,
          reduce_only: bool = False) -> Order:
    return Order(id=oid, ts=T0, correlation_id=f"t-{oid}", causation_id="s", source="risk",
                 client_order_id=f"c-{oid}", symbol=symbol, side=side,  # type: ignore[arg-type]
                 order_type="MARKET", qty_e8=round(qty * SCALE), ref_price_e8=100 * SCALE,
                 reduce_only=reduce_only)


def trade(n: int, qty: float, symbol: str = "BTCUSDT") -> Trade:
    return Trade(id=f"t{n}", ts=T0 + n * S, correlation_id=f"t{n}", causation_id=f"t{n}",
                 source="ws", venue="x", symbol=symbol, trade_id=n, price_e8=100 * SCALE,
                 qty_e8=round(qty * SCALE))


def cancel(symbol: str = "", keep_reduce_only: bool = True) -> CancelOrders:
    return CancelOrders(id="cx", ts=T0 + 10 * S, correlation_id="ess", causation_id="ess",
                        source="risk", reason="ESS HALTED: flash_crash", symbol=symbol,
                        keep_reduce_only=keep_reduce_only)


def service() -> tuple[ExecutionService, RecordingBus, PaperVenue]:
    bus = RecordingBus()
    venue = PaperVenue()
    ctx = ServiceContext(name="execution", instance="ex-1", bus=bus,  # type: ignore[arg-type]
                         clock=SimClock(T0))
    return ExecutionService(ctx, venue), bus, venue


def test_the_command_travels_the_wire_intact() -> None:
    command = cancel("ETHUSDT", keep_reduce_only=False)
    assert decode(encode(command)) == command


async def test_open_orders_are_cancelled_and_reported_once_reducing_ones_stay() -> None:
    svc, bus, venue = service()
    await svc.handle(ORDERS, [order("o1"), order("o2", symbol="ETHUSDT"),
                              order("o3", side="SELL", reduce_only=True)])
    await svc.handle(MARKET_DATA, [trade(1, 4.0)])  # o1 4 of 10, o3 4 of 10
    await svc.handle(ORDERS, [cancel()])
    updates = [e for e in bus.of(FILLS) if isinstance(e, OrderUpdate)]
    assert {(u.order_id, u.status, u.filled_qty_e8) for u in updates} == {
        ("o1", "CANCELED", 4 * SCALE), ("o2", "CANCELED", 0)}
    assert all(u.causation_id == "cx" and u.reason.startswith("ESS HALTED") for u in updates)
    assert [o.id for o in venue.open_orders()] == ["o3"]
    await svc.handle(ORDERS, [cancel()])  # delivered again
    assert len([e for e in bus.of(FILLS) if isinstance(e, OrderUpdate)]) == 2
    await svc.handle(MARKET_DATA, [trade(2, 100.0)])
    fills = [e for e in bus.of(FILLS) if isinstance(e, Fill)]
    assert {f.order_id for f in fills} == {"o1", "o3"}, "nothing of a cancelled order fills"


async def test_a_command_for_one_symbol_leaves_the_others() -> None:
    svc, _, venue = service()
    await svc.handle(ORDERS, [order("o1"), order("o2", symbol="ETHUSDT")])
    await svc.handle(ORDERS, [cancel("ETHUSDT", keep_reduce_only=False)])
    assert [o.id for o in venue.open_orders()] == ["o1"]


async def test_orders_before_the_command_in_one_batch_are_cancelled_too() -> None:
    svc, bus, venue = service()
    await svc.handle(ORDERS, [order("o1"), cancel()])
    assert venue.open_orders() == []
    assert [e.order_id for e in bus.of(FILLS) if isinstance(e, OrderUpdate)] == ["o1"]


async def test_a_report_that_failed_to_publish_goes_out_with_the_retry() -> None:
    svc, bus, _ = service()
    await svc.handle(ORDERS, [order("o1")])
    bus.failing = True
    with pytest.raises(BusError):  # the host retries the batch; so does the test
        await svc.handle(ORDERS, [cancel()])
    bus.failing = False
    await svc.handle(ORDERS, [cancel()])
    assert [e.order_id for e in bus.of(FILLS) if isinstance(e, OrderUpdate)] == ["o1"]
