"""A redelivered signal is decided once, and what risk remembers for that is bounded."""

from __future__ import annotations

import pytest
from tests.unit.services.risk_harness import Harness

from cdb.bus.keys import ORDERS, RISK_EVENTS, SIGNALS
from cdb.events import SCALE, Signal
from cdb.services import risk as risk_module


def buy(h: Harness, sid: str) -> Signal:
    return Signal(id=sid, ts=h.clock.now(), correlation_id="t", causation_id="t",
                  source="signal", strategy_id="m", symbol="BTCUSDT", side="BUY",
                  price_e8=100 * SCALE, trade_id=1, move_bp=300, volume_e8=0)


async def test_a_redelivered_signal_gives_no_second_order() -> None:
    h = Harness()
    await h.trades(100.0)
    signal = buy(h, "s-1")
    await h.risk.handle(SIGNALS, [signal])
    assert len(h.bus.of(ORDERS)) == 1
    # The same signal again (its consumer restarted before acknowledging it).
    await h.risk.handle(SIGNALS, [signal])
    assert len(h.bus.of(ORDERS)) == 1


async def test_risk_remembers_only_the_newest_decided_signals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(risk_module, "DECIDED_KEPT", 3)
    h = Harness()
    await h.trades(100.0)
    for i in range(6):
        await h.risk.handle(SIGNALS, [buy(h, f"s-{i}")])
    assert list(h.risk._decided) == ["s-3", "s-4", "s-5"]
    decided = len(h.bus.of(ORDERS)) + len(h.bus.of(RISK_EVENTS))
    assert decided == 6
    await h.risk.handle(SIGNALS, [buy(h, "s-5")])  # still known: not decided again
    assert len(h.bus.of(ORDERS)) + len(h.bus.of(RISK_EVENTS)) == decided


async def test_a_rebuild_from_the_record_keeps_the_same_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cdb.events import Order

    monkeypatch.setattr(risk_module, "DECIDED_KEPT", 3)
    h = Harness()
    orders = [Order(id=f"s-{i}-o", ts=h.clock.now() + i, correlation_id="t",
                    causation_id=f"s-{i}", source="risk", client_order_id=f"c-{i}",
                    symbol="BTCUSDT", side="BUY", order_type="MARKET", qty_e8=SCALE,
                    ref_price_e8=100 * SCALE) for i in range(6)]
    assert h.risk._rebuild(list(orders)) == (6, 0)
    assert list(h.risk._decided) == ["s-3", "s-4", "s-5"]
