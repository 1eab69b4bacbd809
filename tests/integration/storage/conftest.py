"""Fixtures of the PostgreSQL store tests: one server per session, a schema per test,
and a factory of event chains."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from cdb.events import AnyEvent, Fill, Order, Signal, trade_event_id

T0 = 1_700_000_000_000_000_000
PRICE = 3_012_345_000_000  # 30123.45


@pytest.fixture
def schema() -> str:
    """A schema no other test uses: tests share the server, never their tables."""
    return f"t_{uuid.uuid4().hex[:12]}"


def chain(n: int) -> list[AnyEvent]:
    """Trade ``n``'s signal, order and two fills (the trade itself is not stored)."""
    tid = trade_event_id("binance", "BTCUSDT", n)
    ts = T0 + n * 1_000_000
    signal = Signal(
        id=f"sig-{n}", ts=ts + 1_000, correlation_id=tid, causation_id=tid, source="signal-1",
        strategy_id="momentum", symbol="BTCUSDT", side="SELL", price_e8=PRICE, trade_id=n,
        move_bp=-312, volume_e8=123_456_789_000_000,
    )  # fmt: skip
    order = Order(
        id=f"ord-{n}", ts=ts + 2_000, correlation_id=tid, causation_id=signal.id,
        source="risk-1", client_order_id=f"cdb-{n}", symbol="BTCUSDT", side="SELL",
        order_type="MARKET", qty_e8=2_000_000, ref_price_e8=PRICE, reduce_only=True,
    )  # fmt: skip
    fills = [
        Fill(
            id=f"fill-{n}-{i}", ts=ts + 3_000 + i * 1_000, correlation_id=tid,
            causation_id=order.id, source="exec-1", order_id=f"venue-{n}",
            client_order_id=order.client_order_id, venue="paper", symbol="BTCUSDT",
            side="SELL", price_e8=PRICE - i, qty_e8=1_000_000, fee_e8=1_234,
            venue_fill_id=f"vf-{n}-{i}", order_status="FILLED" if i else "PARTIALLY_FILLED",
            cum_qty_e8=1_000_000 * (i + 1),
        )
        for i in range(2)
    ]  # fmt: skip
    return [signal, order, *fills]


@pytest.fixture
def make_chain() -> Callable[[int], list[AnyEvent]]:
    """``make_chain(n)``: the stored events of trade ``n``'s chain."""
    return chain
