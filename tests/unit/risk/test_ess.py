"""The ESS state machine and its guards: every transition, every boundary, exactly.

All pure: time is an integer handed in (the simulated clock's value in the service).
"""

from __future__ import annotations

import pytest

from cdb.events import SCALE, Trade
from cdb.risk import ess as E
from cdb.risk.ess import (
    Alarm,
    DrawdownGuard,
    EmergencyStop,
    ErrorBurstGuard,
    EssConfig,
    EssState,
    FlashCrashGuard,
    Guards,
    ResetRefused,
    StaleDataGuard,
    pct_to_ppm,
)

S = 1_000_000_000
T0 = 1_700_000_000 * S
CRASH = Alarm(reason=E.FLASH_CRASH, detail="BTCUSDT fell")


def trade(price: float | int, t: float, symbol: str = "BTCUSDT", n: int = 0) -> Trade:
    price_e8 = price if isinstance(price, int) else round(price * SCALE)
    return Trade(id=f"{symbol}:{n or t}", ts=T0 + round(t * S), correlation_id="c",
                 causation_id="c", source="ws", venue="x", symbol=symbol, trade_id=n,
                 price_e8=price_e8, qty_e8=SCALE)


# -- the state machine ------------------------------------------------------------------


def test_starts_active_and_a_trip_halts_with_reason_actor_and_time() -> None:
    stop = EmergencyStop(EssConfig())
    assert not stop.halted
    state = stop.trip(T0, CRASH, "risk-1")
    assert state == EssState(state="HALTED", reason="flash_crash", detail="BTCUSDT fell",
                             actor="risk-1", since_ns=T0)
    assert stop.halted
    assert stop.trips() == [state]


def test_a_second_trip_changes_nothing_so_the_first_starts_the_cooldown() -> None:
    stop = EmergencyStop(EssConfig())
    first = stop.trip(T0, CRASH, "risk-1")
    assert stop.trip(T0 + 5 * S, Alarm(reason=E.MANUAL, detail="x"), "alice") is None
    assert stop.state == first
    assert len(stop.history) == 1


def test_reset_is_refused_while_active() -> None:
    refused = EmergencyStop(EssConfig()).plan_reset(T0, "alice", "why")
    assert isinstance(refused, ResetRefused)
    assert refused.reason == E.NOT_HALTED


@pytest.mark.parametrize(("actor", "why"), [("", "why"), ("alice", ""), ("  ", " ")])
def test_reset_needs_who_and_why(actor: str, why: str) -> None:
    stop = EmergencyStop(EssConfig(cooldown_ns=0))
    stop.trip(T0, CRASH, "risk-1")
    refused = stop.plan_reset(T0 + S, actor, why)
    assert isinstance(refused, ResetRefused)
    assert refused.reason == E.MISSING_WHO_WHY
    assert stop.halted


def test_reset_within_the_cooldown_is_refused_with_the_time_left_to_the_ns() -> None:
    stop = EmergencyStop(EssConfig(cooldown_ns=300 * S))
    stop.trip(T0, CRASH, "risk-1")
    refused = stop.plan_reset(T0 + 300 * S - 1, "alice", "market calm")
    assert isinstance(refused, ResetRefused)
    assert refused.reason == E.COOLDOWN
    assert refused.retry_after_ns == 1
    early = stop.plan_reset(T0 + 100 * S, "alice", "market calm")
    assert isinstance(early, ResetRefused)
    assert early.retry_after_ns == 200 * S
    assert "200.0 s" in early.detail
    assert stop.halted, "planning changes nothing"


def test_reset_exactly_at_the_end_of_the_cooldown_is_recorded_with_who_and_why() -> None:
    stop = EmergencyStop(EssConfig(cooldown_ns=300 * S))
    stop.trip(T0, CRASH, "risk-1")
    plan = stop.plan_reset(T0 + 300 * S, " alice ", " market calm ")
    assert plan == EssState(state="ACTIVE", reason=E.RESET, detail="market calm", actor="alice",
                            since_ns=T0 + 300 * S)
    assert stop.halted, "nothing changes until apply"
    stop.apply(plan)
    assert not stop.halted
    assert stop.cooldown_left_ns(T0 + 300 * S) == 0
    assert [s.state for s in stop.history] == ["HALTED", "ACTIVE"]


def test_a_restored_halted_state_keeps_its_trip_time_for_the_cooldown() -> None:
    restored = EssState(state="HALTED", reason="drawdown", detail="d", actor="r", since_ns=T0)
    stop = EmergencyStop(EssConfig(cooldown_ns=60 * S), restored)
    assert stop.halted
    assert stop.cooldown_left_ns(T0 + 10 * S) == 50 * S
    assert stop.history == [], "restoring is not a change"


def test_cooldown_left_is_never_more_than_the_cooldown_when_the_clock_is_behind() -> None:
    stop = EmergencyStop(EssConfig(cooldown_ns=60 * S),
                         EssState(state="HALTED", reason="manual", since_ns=T0))
    assert stop.cooldown_left_ns(T0 - 3600 * S) == 60 * S


def test_a_change_sorts_after_the_recorded_one_even_when_the_clock_is_behind() -> None:
    """A simulated run restarting at its start time must not record a trip that sorts
    before a reset made later by hand (the latest record is the state)."""
    stop = EmergencyStop(EssConfig(), EssState(state="ACTIVE", reason=E.RESET, since_ns=T0))
    state = stop.trip(T0 - 60 * S, CRASH, "risk-1")
    assert state is not None
    assert state.since_ns == T0 + 1


@pytest.mark.parametrize(("pct", "ppm"), [(10.0, 100_000), (15.0, 150_000), (0.5, 5_000),
                                          (12.3456, 123_456)])
def test_percentages_become_exact_parts_per_million(pct: float, ppm: int) -> None:
    assert pct_to_ppm(pct) == ppm


# -- drawdown ---------------------------------------------------------------------------


def test_drawdown_of_exactly_the_limit_does_not_trip_and_one_unit_more_does() -> None:
    guard = DrawdownGuard(limit_ppm=100_000, peak_e8=100_000 * SCALE)
    assert guard.check(90_000 * SCALE) is None  # exactly 10 %: the limit is allowed
    alarm = guard.check(90_000 * SCALE - 1)  # 10 % and 1e-8 of a unit
    assert alarm is not None
    assert alarm.reason == E.DRAWDOWN
    assert "10.00 %" in alarm.detail


def test_drawdown_is_measured_from_the_highest_equity_seen() -> None:
    guard = DrawdownGuard(limit_ppm=100_000, peak_e8=100 * SCALE)
    assert guard.check(200 * SCALE) is None
    assert guard.check(181 * SCALE) is None  # 9.5 % below 200, 81 % above the start
    assert guard.check(179 * SCALE) is not None


def test_a_rebased_drawdown_accepts_the_loss_so_far() -> None:
    guard = DrawdownGuard(limit_ppm=100_000, peak_e8=100 * SCALE)
    assert guard.check(80 * SCALE) is not None
    guard.rebase(80 * SCALE)
    assert guard.check(73 * SCALE) is None  # 8.75 % below the new base
    assert guard.check(71 * SCALE) is not None


# -- flash crash ------------------------------------------------------------------------


def test_a_drop_of_exactly_15_percent_in_exactly_60_s_trips() -> None:
    guard = FlashCrashGuard(drop_ppm=150_000, window_ns=60 * S)
    assert guard.on_trades([trade(100.0, 0)]) is None
    alarm = guard.on_trades([trade(85.0, 60, n=2)])
    assert alarm is not None
    assert alarm.reason == E.FLASH_CRASH
    assert alarm.cause_id == "BTCUSDT:2"
    assert "15.00 %" in alarm.detail
    assert "60.0 s" in alarm.detail


def test_the_same_drop_one_ns_after_the_window_does_not_trip() -> None:
    guard = FlashCrashGuard(drop_ppm=150_000, window_ns=60 * S)
    guard.on_trades([trade(100.0, 0)])
    late = Trade(id="late", ts=T0 + 60 * S + 1, correlation_id="c", causation_id="c",
                 source="ws", venue="x", symbol="BTCUSDT", trade_id=3, price_e8=85 * SCALE,
                 qty_e8=SCALE)
    assert guard.on_trades([late]) is None


def test_a_drop_a_hair_short_of_15_percent_does_not_trip() -> None:
    guard = FlashCrashGuard(drop_ppm=150_000, window_ns=60 * S)
    guard.on_trades([trade(100.0, 0)])
    assert guard.on_trades([trade(85 * SCALE + 1, 30)]) is None


def test_the_high_is_the_highest_within_the_window_not_the_first() -> None:
    guard = FlashCrashGuard(drop_ppm=150_000, window_ns=60 * S)
    prices = [(100.0, 0), (120.0, 30), (110.0, 50), (103.0, 85)]  # 103 is 14.2 % under 120
    assert guard.on_trades([trade(p, t, n=i + 1) for i, (p, t) in enumerate(prices)]) is None
    alarm = guard.on_trades([trade(101.0, 89, n=9)])  # 15.8 % under 120, 59 s later
    assert alarm is not None
    assert "120 -> 101" in alarm.detail


def test_symbols_are_watched_apart() -> None:
    guard = FlashCrashGuard(drop_ppm=150_000, window_ns=60 * S)
    batch = [trade(100.0, 0, "AAA"), trade(10.0, 1, "BBB"), trade(90.0, 2, "AAA"),
             trade(9.0, 3, "BBB")]
    assert guard.on_trades(batch) is None  # each is down 10 %
    alarm = guard.on_trades([trade(8.5, 4, "BBB")])
    assert alarm is not None
    assert alarm.detail.startswith("BBB")


def test_a_slow_decline_is_not_a_flash_crash() -> None:
    guard = FlashCrashGuard(drop_ppm=150_000, window_ns=60 * S)
    trades = [trade(100.0 * (0.99 ** k), k * 10, n=k + 1) for k in range(60)]  # -45 % in 10 min
    assert guard.on_trades(trades) is None


def test_after_clear_the_old_high_is_forgotten() -> None:
    guard = FlashCrashGuard(drop_ppm=150_000, window_ns=60 * S)
    assert guard.on_trades([trade(100.0, 0), trade(80.0, 10)]) is not None
    guard.clear()
    assert guard.on_trades([trade(79.0, 11)]) is None


def test_the_first_crash_of_a_batch_is_reported() -> None:
    guard = FlashCrashGuard(drop_ppm=150_000, window_ns=60 * S)
    alarm = guard.on_trades([trade(100.0, 0, n=1), trade(84.0, 1, n=2), trade(50.0, 2, n=3)])
    assert alarm is not None
    assert alarm.cause_id == "BTCUSDT:2"


# -- error burst ------------------------------------------------------------------------


def test_five_errors_within_60_s_trip_and_four_do_not() -> None:
    guard = ErrorBurstGuard(count=5, window_ns=60 * S)
    for k in range(4):
        assert guard.on_error(T0 + k * S, T0 + k * S, "rejected") is None
    alarm = guard.on_error(T0 + 60 * S, T0 + 60 * S, "-1015 too many orders")
    assert alarm is not None  # the first is exactly 60 s before the fifth: within
    assert alarm.reason == E.ERROR_BURST
    assert "-1015" in alarm.detail


def test_errors_spread_wider_than_the_window_do_not_trip() -> None:
    guard = ErrorBurstGuard(count=5, window_ns=60 * S)
    for k in range(20):
        t = T0 + k * 16 * S  # one every 16 s: at most 4 in any 60 s
        assert guard.on_error(t, t, "rejected") is None


def test_old_errors_read_from_a_backlog_are_ignored() -> None:
    guard = ErrorBurstGuard(count=2, window_ns=60 * S)
    now = T0 + 3600 * S
    assert guard.on_error(T0, now, "old") is None
    assert guard.on_error(T0 + S, now, "old") is None
    assert guard.on_error(now, now, "new") is None


def test_errors_arriving_out_of_order_still_count_by_their_time() -> None:
    guard = ErrorBurstGuard(count=3, window_ns=10 * S)
    now = T0 + 20 * S
    assert guard.on_error(T0 + 20 * S, now, "a") is None
    assert guard.on_error(T0 + 5 * S, now, "stale") is None  # 15 s before the newest
    assert guard.on_error(T0 + 12 * S, now, "b") is None
    assert guard.on_error(T0 + 15 * S, now, "c") is not None


# -- stale data -------------------------------------------------------------------------


def test_stale_after_more_than_the_limit_exactly_the_limit_is_fresh() -> None:
    guard = StaleDataGuard(after_ns=30 * S, halt_after_ns=300 * S)
    guard.seen(["BTCUSDT", "ETHUSDT"], T0)
    guard.seen(["ETHUSDT"], T0 + 20 * S)
    assert guard.stale(T0 + 30 * S) == frozenset()
    assert guard.stale(T0 + 30 * S + 1) == {"BTCUSDT"}, "paused: the symbol, not the ESS"
    assert guard.check(T0 + 30 * S + 1, healthy_since=T0) is None
    assert guard.check(T0 + 300 * S, healthy_since=T0) is None
    alarm = guard.check(T0 + 300 * S + 1, healthy_since=T0)
    assert alarm is not None
    assert alarm.reason == E.STALE_DATA
    assert "no BTCUSDT trade for 300.0 s (limit 300 s)" in alarm.detail


def test_time_the_bus_was_down_does_not_count_towards_the_trip() -> None:
    """Silent for 400 s, but the bus came back 100 s ago: 100 s counted, no trip; the
    trip needs the full limit with the bus up, and never while it is down."""
    guard = StaleDataGuard(after_ns=30 * S, halt_after_ns=300 * S)
    guard.seen(["BTCUSDT"], T0)
    assert guard.check(T0 + 400 * S, healthy_since=None) is None, "bus down: no trip"
    back = T0 + 300 * S
    assert guard.check(T0 + 400 * S, healthy_since=back) is None
    assert guard.stale(T0 + 400 * S) == {"BTCUSDT"}, "still paused"
    alarm = guard.check(back + 300 * S + 1, healthy_since=back)
    assert alarm is not None
    assert "no BTCUSDT trade for 600.0 s, 300.0 s of it with the bus up" in alarm.detail


def test_a_symbol_never_seen_is_not_stale_and_zero_turns_the_guard_off() -> None:
    fresh = StaleDataGuard(after_ns=30 * S, halt_after_ns=300 * S)
    assert fresh.check(T0 + 10**6 * S, healthy_since=T0) is None
    assert fresh.stale(T0 + 10**6 * S) == frozenset()
    off = StaleDataGuard(after_ns=0, halt_after_ns=300 * S)
    off.seen(["BTCUSDT"], T0)
    assert off.check(T0 + 10**6 * S, healthy_since=T0) is None
    assert off.stale(T0 + 10**6 * S) == frozenset()
    no_trip = StaleDataGuard(after_ns=30 * S, halt_after_ns=0)
    no_trip.seen(["BTCUSDT"], T0)
    assert no_trip.check(T0 + 10**6 * S, healthy_since=T0) is None
    assert no_trip.stale(T0 + 10**6 * S) == {"BTCUSDT"}


def test_after_a_restart_a_silent_feed_trips_again_only_after_the_full_limit() -> None:
    guard = StaleDataGuard(after_ns=30 * S, halt_after_ns=300 * S)
    guard.seen(["BTCUSDT"], T0)
    assert guard.check(T0 + 400 * S, healthy_since=T0) is not None
    guard.restart(T0 + 400 * S)
    assert guard.check(T0 + 700 * S, healthy_since=T0) is None
    assert guard.check(T0 + 701 * S, healthy_since=T0) is not None


def test_guards_rebase_clears_everything_a_reset_accepts() -> None:
    config = EssConfig(error_burst_count=2)
    guards = Guards(config, equity_e8=100 * SCALE)
    guards.errors.on_error(T0, T0, "x")
    guards.flash_crash.on_trades([trade(100.0, 0)])
    guards.stale.seen(["BTCUSDT"], T0)
    guards.rebase(50 * SCALE, T0 + 100 * S)
    assert guards.drawdown.check(50 * SCALE) is None
    assert guards.errors.on_error(T0 + 100 * S, T0 + 100 * S, "y") is None
    assert guards.flash_crash.on_trades([trade(50.0, 101)]) is None
    assert guards.stale.stale(T0 + 120 * S) == frozenset()


def test_settings_give_the_ess_its_limits_with_the_spec_defaults() -> None:
    from cdb.config import load_settings

    assert load_settings(environ={}).ess_config() == EssConfig(
        drawdown_limit_ppm=100_000, flash_crash_drop_ppm=150_000, flash_crash_window_ns=60 * S,
        error_burst_count=5, error_burst_window_ns=60 * S, stale_after_ns=30 * S,
        stale_halt_after_ns=300 * S, cooldown_ns=300 * S,
    )
    custom = load_settings(environ={
        "ESS_DRAWDOWN_LIMIT_PCT": "12.5", "ESS_FLASH_CRASH_PCT": "20",
        "ESS_FLASH_CRASH_WINDOW_S": "30", "ESS_ERROR_BURST_COUNT": "3",
        "ESS_ERROR_BURST_WINDOW_S": "10", "ESS_STALE_DATA_S": "0", "ESS_COOLDOWN_S": "5",
    }).ess_config()
    assert custom == EssConfig(
        drawdown_limit_ppm=125_000, flash_crash_drop_ppm=200_000, flash_crash_window_ns=30 * S,
        error_burst_count=3, error_burst_window_ns=10 * S, stale_after_ns=0, cooldown_ns=5 * S,
    )


def test_bad_ess_settings_are_named() -> None:
    from cdb.config import load_settings
    from cdb.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"ESS_DRAWDOWN_LIMIT_PCT": "0", "ESS_ERROR_BURST_COUNT": "x"})
    assert "ESS_DRAWDOWN_LIMIT_PCT" in str(caught.value)
    assert "ESS_ERROR_BURST_COUNT" in str(caught.value)
