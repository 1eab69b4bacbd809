"""The risk service runs the ESS: trips by itself, blocks, cancels, alerts, records,
survives restarts, resets only by hand after the cooldown. Simulated clock, a bus that
records what is published, stores in memory."""

from __future__ import annotations

import pytest
from tests.unit.services.risk_harness import T0, Harness, S

from cdb.bus.keys import ALERTS_STREAM, ORDERS, RISK_EVENTS
from cdb.events import SCALE, Alert, CancelOrders, EssChange, Order, RiskDecision
from cdb.observability import metrics
from cdb.risk import ess as E
from cdb.risk.ess import EssConfig, EssState, ResetRefused
from cdb.risk.limits import RiskLimits
from cdb.risk.persistence import MemoryEssStore


def paused_metric(instance: str = "risk-1") -> float | None:
    return metrics.REGISTRY.get_sample_value("cdb_risk_paused_symbols",
                                             {"service": "risk", "instance": instance})


def halted_metric(instance: str = "risk-1") -> float | None:
    return metrics.REGISTRY.get_sample_value("cdb_ess_halted",
                                             {"service": "risk", "instance": instance})


async def test_a_flash_crash_trips_at_once_cancels_records_alerts_and_blocks_buys() -> None:
    h = Harness(instance="risk-crash")
    await h.trades(100.0, 99.0)
    assert not h.risk.halted
    assert halted_metric("risk-crash") == 0
    batch = await h.trades(92.0, 85.0, 84.0, at=30)
    assert h.risk.halted
    state = h.risk.ess.state
    assert state.reason == E.FLASH_CRASH
    assert state.since_ns == batch[-1].ts, "tripped in the evaluation of the crash's batch"
    [cancel] = h.bus.of(ORDERS)
    assert isinstance(cancel, CancelOrders)
    assert cancel.keep_reduce_only
    [change] = h.bus.of(RISK_EVENTS)
    assert isinstance(change, EssChange)
    assert (change.state, change.reason, change.actor) == ("HALTED", "flash_crash", "risk-crash")
    assert change.causation_id == batch[1].id, "the trade that revealed it"
    [alert] = h.bus.of(ALERTS_STREAM)
    assert isinstance(alert, Alert)
    assert (alert.level, alert.code) == ("critical", "ess_tripped")
    assert h.store.state == state, "saved before anything else"
    assert halted_metric("risk-crash") == 1
    labels = {"service": "risk", "instance": "risk-crash", "reason": "flash_crash"}
    assert metrics.REGISTRY.get_sample_value("cdb_ess_trips_total", labels) == 1
    rejected = await h.signal("BUY", 84.0)
    assert isinstance(rejected, RiskDecision)
    assert rejected.reason == "ess_halted"


async def test_while_halted_a_reducing_sell_still_leaves_risk() -> None:
    h = Harness()
    await h.trades(100.0)
    order = await h.signal("BUY", 100.0)
    assert isinstance(order, Order)
    await h.fill(order, 100.0)
    await h.risk.trip_manually("alice", "drill")
    sell = await h.signal("SELL", 100.0)
    assert isinstance(sell, Order)
    assert sell.reduce_only
    assert sell.qty_e8 <= order.qty_e8


async def test_a_drawdown_above_the_limit_trips_and_exactly_the_limit_does_not() -> None:
    h = Harness(cash=2_000, config=EssConfig(flash_crash_drop_ppm=900_000, stale_after_ns=0))
    await h.trades(100.0)
    order = await h.signal("BUY", 100.0)
    assert isinstance(order, Order)  # 10 units: 1000 of 2000
    await h.fill(order, 100.0)
    await h.trades(80.0, at=120)  # equity 1800: exactly 10 % below the peak of 2000
    assert not h.risk.halted
    await h.trades(79.99999999, at=240)  # 1e-7 more
    assert h.risk.halted
    assert h.risk.ess.state.reason == E.DRAWDOWN


async def test_a_burst_of_rejections_trips() -> None:
    h = Harness(config=EssConfig(error_burst_count=3, error_burst_window_ns=60 * S))
    await h.rejected(0)
    await h.rejected(30)
    assert not h.risk.halted
    await h.rejected(60)
    assert h.risk.halted
    assert h.risk.ess.state.reason == E.ERROR_BURST
    assert "-2010" in h.risk.ess.state.detail


async def test_exchange_error_alerts_count_towards_a_burst_but_not_risks_own_or_info() -> None:
    h = Harness(config=EssConfig(error_burst_count=2))
    await h.alert("exchange_rate_limited", 0)
    await h.alert("exchange_rate_limited", 1, source="risk-1")  # its own: ignored
    await h.alert("exchange_timeout", 2, level="info")  # informational: ignored
    await h.alert("event_parked", 3)  # not an exchange error
    assert not h.risk.halted
    await h.alert("binance_418_banned", 4)
    assert h.risk.halted
    assert h.risk.ess.state.reason == E.ERROR_BURST


async def test_a_stale_feed_alert_alone_neither_pauses_nor_trips() -> None:
    """ws's stale-feed alert is for operators: risk judges the silence by its own guard."""
    h = Harness()
    await h.trades(100.0)
    await h.alert("stale_feed", 1, source="ws-1")
    assert not h.risk.halted
    assert h.risk.paused == frozenset()


async def test_a_short_silence_pauses_new_orders_on_the_symbol_and_its_next_trade_resumes() -> None:
    h = Harness(config=EssConfig(stale_after_ns=30 * S, stale_halt_after_ns=300 * S))
    await h.trades(100.0, symbol="BTCUSDT", at=0)
    await h.trades(50.0, symbol="ETHUSDT", at=1)
    h.clock.advance(T0 + 30 * S)  # exactly the limit: fresh
    await h.risk.tick()
    assert h.risk.paused == frozenset()
    await h.trades(50.0, symbol="ETHUSDT", at=31)
    await h.risk.tick()
    assert h.risk.paused == {"BTCUSDT"}
    assert not h.risk.halted, "a pause, not a latched trip"
    assert paused_metric() == 1
    blocked = await h.signal("BUY", 100.0, symbol="BTCUSDT")
    assert isinstance(blocked, RiskDecision)
    assert blocked.reason == "stale_data"
    other = await h.signal("BUY", 50.0, symbol="ETHUSDT")
    assert isinstance(other, Order), "only the silent symbol is paused"
    await h.trades(101.0, symbol="BTCUSDT", at=40)
    assert h.risk.paused == frozenset()
    assert paused_metric() == 0
    assert isinstance(await h.signal("BUY", 101.0, symbol="BTCUSDT"), Order)
    codes = [a.code for a in h.bus.of(ALERTS_STREAM)]  # type: ignore[attr-defined]
    assert codes == ["trading_paused", "trading_resumed"]


async def test_stale_market_data_trips_on_the_batch_that_ends_a_long_silence() -> None:
    """In simulated time the batch that ends the silence is what reveals it."""
    h = Harness(config=EssConfig(stale_after_ns=30 * S, stale_halt_after_ns=300 * S))
    await h.trades(100.0, symbol="BTCUSDT", at=0)
    await h.trades(50.0, symbol="ETHUSDT", at=1)
    await h.trades(50.0, symbol="ETHUSDT", at=300)  # BTC silent for exactly 300 s
    assert not h.risk.halted
    await h.trades(50.0, symbol="ETHUSDT", at=301)
    assert h.risk.halted
    assert h.risk.ess.state.reason == E.STALE_DATA
    assert "no BTCUSDT trade for 301.0 s (limit 300 s)" in h.risk.ess.state.detail


async def test_the_timer_finds_stale_data_when_no_event_comes() -> None:
    h = Harness(config=EssConfig(stale_after_ns=30 * S, stale_halt_after_ns=300 * S))
    await h.trades(100.0)
    h.clock.advance(T0 + 31 * S)
    await h.risk.tick()
    assert h.risk.paused == {"BTCUSDT"}
    assert not h.risk.halted
    h.clock.advance(T0 + 301 * S)
    await h.risk.tick()
    assert h.risk.ess.state.reason == E.STALE_DATA


async def test_a_silence_while_the_bus_was_down_never_latches_the_ess() -> None:
    """Our own Redis down for 10 minutes: the market looks silent, new orders pause,
    nothing latches; back up, the backlog's trades resume trading at once, and only a
    full limit of silence with the bus up could trip."""
    h = Harness(config=EssConfig(stale_after_ns=30 * S, stale_halt_after_ns=300 * S))
    await h.trades(100.0)
    h.risk.ctx.bus_up_since = None  # the host's reads fail
    for minute in range(1, 11):
        h.clock.advance(T0 + minute * 60 * S)
        await h.risk.tick()
    assert h.risk.paused == {"BTCUSDT"}
    assert not h.risk.halted
    back = T0 + 600 * S
    h.risk.ctx.bus_up_since = back
    h.clock.advance(back + 299 * S)
    await h.risk.tick()
    assert not h.risk.halted, "299 s with the bus up: not yet"
    await h.trades(100.0, at=900)  # the buffered trades arrive
    assert h.risk.paused == frozenset()
    assert isinstance(await h.signal("BUY", 100.0), Order)
    h.clock.advance(T0 + 1201 * S)
    await h.risk.tick()
    assert h.risk.halted, "a feed silent for the full limit with the bus up trips"


async def test_restarted_halted_it_stays_halted_and_cancels_again() -> None:
    store = MemoryEssStore()
    first = Harness(store=store)
    await first.risk.trip_manually("alice", "maintenance")
    second = Harness(store=store, instance="risk-2")
    await second.risk.on_start()
    assert second.risk.halted
    assert second.risk.ess.state == first.risk.ess.state
    assert second.risk.ess.trips() == [], "a restored trip is not a trip of this run"
    assert halted_metric("risk-2") == 1
    assert any(isinstance(e, CancelOrders) for e in second.bus.of(ORDERS))
    assert [a.code for a in second.bus.of(ALERTS_STREAM)] == ["ess_restored"]  # type: ignore[attr-defined]
    rejected = await second.signal("BUY")
    assert isinstance(rejected, RiskDecision)
    assert rejected.reason == "ess_halted"


async def test_restarted_active_it_publishes_nothing() -> None:
    h = Harness(store=MemoryEssStore(EssState(state="ACTIVE", reason=E.RESET, since_ns=T0)))
    await h.risk.on_start()
    assert not h.risk.halted
    assert h.bus.topics == {}


async def test_reset_refused_in_cooldown_then_accepted_and_trading_resumes() -> None:
    h = Harness(config=EssConfig(cooldown_ns=300 * S))
    await h.trades(100.0, 100.0)
    await h.trades(80.0, at=10)  # flash crash
    assert h.risk.halted
    tripped = h.risk.ess.state.since_ns
    h.clock.advance(tripped + 299 * S)
    refused = await h.risk.reset("alice", "recovered")
    assert isinstance(refused, ResetRefused)
    assert refused.reason == E.COOLDOWN
    assert refused.retry_after_ns == S
    assert h.risk.halted
    h.clock.advance(tripped + 300 * S)
    state = await h.risk.reset("alice", "recovered")
    assert isinstance(state, EssState)
    assert not h.risk.halted
    assert h.store.state == state
    changes = [e for e in h.bus.of(RISK_EVENTS) if isinstance(e, EssChange)]
    assert [(c.state, c.actor, c.detail) for c in changes] == [
        ("HALTED", "risk-1", h.risk.ess.history[0].detail), ("ACTIVE", "alice", "recovered")]
    assert [a.code for a in h.bus.of(ALERTS_STREAM)] == ["ess_tripped", "ess_reset"]  # type: ignore[attr-defined]
    # The crash is still in the window and the price still low: neither trips again.
    await h.trades(80.0, at=311)
    assert not h.risk.halted
    order = await h.signal("BUY", 80.0)
    assert isinstance(order, Order)
    assert not order.reduce_only


async def test_a_reset_that_cannot_be_saved_is_refused_and_the_ess_stays_halted() -> None:
    class FailingStore(MemoryEssStore):
        fail = False

        async def save(self, state: EssState, change: EssChange) -> None:
            if self.fail:
                raise ConnectionError("redis down")
            await super().save(state, change)

    store = FailingStore()
    h = Harness(store=store, config=EssConfig(cooldown_ns=0))
    await h.risk.trip_manually("alice", "drill")
    store.fail = True
    with pytest.raises(ConnectionError):
        await h.risk.reset("alice", "done")
    assert h.risk.halted
    assert store.state is not None
    assert store.state.halted


async def test_a_trip_survives_a_failing_store_and_bus_and_is_saved_and_published_later() -> None:
    class FlakyStore(MemoryEssStore):
        fail = True

        async def save(self, state: EssState, change: EssChange) -> None:
            if self.fail:
                raise ConnectionError("redis down")
            await super().save(state, change)

    store = FlakyStore()
    h = Harness(store=store)
    h.bus.failing = True
    await h.risk.trip_manually("alice", "drill")
    assert h.risk.halted, "in memory at once, whatever the outage"
    assert store.state is None
    assert h.risk.ess_status()["saved"] is False
    store.fail = False
    h.bus.failing = False
    h.clock.advance(T0 + 2 * S)
    await h.trades(100.0, at=2)
    assert store.state is not None
    assert store.state.halted
    kinds = [type(e).__name__ for t in (ORDERS, RISK_EVENTS, ALERTS_STREAM) for e in h.bus.of(t)]
    assert kinds == ["CancelOrders", "EssChange", "Alert"]
    assert h.risk.ess_status()["saved"] is True


async def test_a_change_made_by_another_instance_is_adopted() -> None:
    shared = MemoryEssStore()
    a, b = Harness(store=shared, instance="risk-a"), Harness(store=shared, instance="risk-b")
    b.risk.ess_control.watch = shared
    await a.risk.trip_manually("alice", "drill")
    b.clock.advance(T0 + S)
    await b.risk.tick()
    assert b.risk.halted
    assert b.bus.of(ORDERS) == [], "the instance that tripped cancelled already"
    a.clock.advance(a.risk.ess.state.since_ns + 300 * S)
    assert isinstance(await a.risk.reset("alice", "done"), EssState)
    b.clock.advance(a.clock.now())
    await b.risk.tick()
    assert not b.risk.halted


async def test_manual_trip_is_idempotent() -> None:
    h = Harness()
    first = await h.risk.trip_manually("alice", "drill")
    assert first is not None
    assert await h.risk.trip_manually("bob", "again") is None
    assert h.risk.ess.state.actor == "alice"
    assert len(h.bus.of(RISK_EVENTS)) == 1


async def test_status_shows_state_reason_time_cooldown_and_trips() -> None:
    h = Harness(config=EssConfig(cooldown_ns=60 * S))
    await h.risk.trip_manually("alice", "drill")
    h.clock.advance(T0 + 20 * S)
    ess = h.risk.status()["ess"]
    assert isinstance(ess, dict)
    assert ess["state"] == "HALTED"
    assert ess["reason"] == "manual"
    assert ess["detail"] == "drill"
    assert ess["actor"] == "alice"
    assert ess["since"] == "2024-01-01T00:00:00.000+00:00"
    assert ess["cooldown_left_s"] == 40.0
    assert [t["reason"] for t in ess["trips"]] == ["manual"]  # type: ignore[index]


async def test_the_timer_does_not_run_in_simulated_time() -> None:
    h = Harness()
    await h.risk.produce()  # returns at once: simulated time moves with events only


async def test_exposure_limit_holds_at_the_mark_when_the_signal_price_is_older() -> None:
    """A signal priced below the mark must not buy more than the limit at the mark."""
    h = Harness(limits=RiskLimits(max_exposure_e8=1_500 * SCALE, max_position_e8=10**15))
    await h.trades(200.0)
    order = await h.signal("BUY", 100.0)  # 10 units: 2000 at the mark of 200
    assert isinstance(order, RiskDecision)
    assert order.reason == "exposure_limit"


async def test_the_end_of_a_finite_source_is_not_a_stale_feed() -> None:
    h = Harness(config=EssConfig(stale_after_ns=30 * S))
    await h.trades(100.0)
    await h.alert("market_data_end", 1, source="ws-1", level="info")
    h.clock.advance(T0 + 3600 * S)
    await h.risk.tick()
    assert not h.risk.halted
    await h.trades(100.0, at=3600)  # a new source starts: watched again
    h.clock.advance(T0 + 3631 * S)
    await h.risk.tick()
    assert h.risk.paused == {"BTCUSDT"}
