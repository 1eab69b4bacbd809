"""The Binance pieces in cdb's seams: the execution service drives the Binance venue and
publishes one fill per venue execution; the stream source's alerts reach the bus."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest
from tests.integration.binance.conftest import Eventually, order

from cdb.bus.keys import ALERTS_STREAM, FILLS, ORDERS
from cdb.bus.memory import MemoryBus
from cdb.clock import WallClock
from cdb.events import Alert, Fill
from cdb.marketdata.binance import LIVE_WS_URL, TESTNET_WS_URL, make_binance_source
from cdb.services.base import ServiceContext
from cdb.services.execution import ExecutionService
from cdb.testing.fake_binance import FakeBinance, Fault
from cdb.venues.binance import BinanceVenue

pytestmark = pytest.mark.integration


async def read_all(bus: MemoryBus, topic: str) -> list[object]:
    sub = bus.subscribe([topic], "test", "t")
    events = [e for batch in await sub.read(1000, 0.1) for e in batch.events]
    await sub.close()
    return events


async def test_execution_service_publishes_the_venue_fills_once(
    fake: FakeBinance, make_venue: Callable[..., Awaitable[BinanceVenue]],
) -> None:
    bus = MemoryBus()
    venue = await make_venue()
    ctx = ServiceContext(name="execution", instance="execution-1", bus=bus, clock=WallClock())
    service = ExecutionService(ctx, venue)
    fake.inject(Fault(kind="partial_fill", endpoint="POST /api/v3/order", parts=3))
    fake.inject(Fault(kind="timeout", endpoint="POST /api/v3/order", apply="before", delay_s=3))
    orders = [order(1, "0.03"), order(2, "0.01")]
    await service.handle(ORDERS, [orders[0]])
    await service.handle(ORDERS, orders)  # redelivered with the next one
    fills = [e for e in await read_all(bus, FILLS) if isinstance(e, Fill)]
    await bus.close()
    assert fake.order_arrivals == ["cdb-test-1", "cdb-test-2"]
    venue_truth = sorted((f.client_order_id, f"{f.symbol}-{f.trade_id}", f.qty_e8)
                         for f in fake.fills)
    assert sorted((f.client_order_id, f.venue_fill_id, f.qty_e8) for f in fills) == venue_truth
    assert len({f.id for f in fills}) == len(fills) == 4
    assert [f.order_status for f in fills if f.order_id == "o1"][-1] == "FILLED"


async def test_a_stale_binance_feed_becomes_a_stale_feed_alert(
    fake: FakeBinance, eventually: Eventually,
) -> None:
    bus = MemoryBus()
    ctx = ServiceContext(name="ws", instance="ws-1", bus=bus, clock=WallClock())
    source = make_binance_source(["BTCUSDT"], exchange_url=fake.url, source="ws-1",
                                 alert=ctx.alert, stale_after_s=0.3, backoff_base_s=0.02,
                                 backoff_cap_s=0.1)
    consumer = asyncio.create_task(anext(aiter(source)))

    async def stale_alert() -> list[Alert]:
        return [e for e in await read_all(bus, ALERTS_STREAM)
                if isinstance(e, Alert) and e.code == "stale_feed"]

    try:
        (alert,) = await eventually(stale_alert, within=3.0)  # type: ignore[misc]
        assert alert.level == "warning"
        assert "BTCUSDT" in alert.message
        assert alert.source == "ws-1"
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await bus.close()


def test_source_urls_follow_the_environment() -> None:
    assert make_binance_source(["BTCUSDT"]).url.startswith(LIVE_WS_URL)
    assert make_binance_source(["BTCUSDT"], testnet=True).url.startswith(TESTNET_WS_URL)
    local = make_binance_source(["BTCUSDT"], exchange_url="http://127.0.0.1:9")
    assert local.url == "ws://127.0.0.1:9/stream?streams=btcusdt@trade"
