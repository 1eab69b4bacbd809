"""Invariants over a recording: each one passes on a clean run and names what breaks it."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cdb.chaos.checks.context import CheckContext
from cdb.chaos.checks.invariants import (
    audit_chain_complete,
    exposure_within_limit,
    lag_recovers,
    no_dead_letters,
    no_duplicates,
    no_lost_events,
    no_order_after_ess_trip,
)
from cdb.chaos.history.recording import Recording
from cdb.chaos.scenario.params import Params
from cdb.chaos.scenario.validate import validate_text
from cdb.chaos.targets.base import Plan
from cdb.events import SCALE, AnyEvent, EssChange, Fill, Order, RiskDecision, Signal, Trade
from cdb.risk.limits import RiskLimits

S = 1_000_000_000
PRICE = 100 * SCALE


def chain(n: int, ts: int, *, qty: int = SCALE, fills: int = 1) -> list[AnyEvent]:
    trade = f"synthetic:BTCUSDT:{n}"
    signal = Signal(id=f"s{n}", ts=ts, correlation_id=trade, causation_id=trade, source="sig",
                    strategy_id="m", symbol="BTCUSDT", side="BUY", price_e8=PRICE, trade_id=n,
                    move_bp=0, volume_e8=0)
    order = Order(id=f"s{n}-o", ts=ts, correlation_id=trade, causation_id=signal.id,
                  source="risk", client_order_id=f"c{n}", symbol="BTCUSDT", side="BUY",
                  order_type="MARKET", qty_e8=qty, ref_price_e8=PRICE)
    out: list[AnyEvent] = [signal, order]
    for i in range(fills):
        out.append(Fill(id=f"s{n}-o-f{i}", ts=ts + 1 + i, correlation_id=trade,
                        causation_id=order.id, source="exec", order_id=order.id,
                        client_order_id=order.client_order_id, venue="paper",
                        symbol="BTCUSDT", side="BUY", price_e8=PRICE, qty_e8=qty // fills,
                        fee_e8=0, venue_fill_id=f"c{n}-{i}", order_status="FILLED",
                        cum_qty_e8=qty))
    return out


TABLE = {Signal: "signals", Order: "orders", Fill: "fills", EssChange: "ess_changes",
         RiskDecision: "risk_decisions"}


def context(events: list[AnyEvent], *, db: list[AnyEvent] | None = None,
            ledger: bool = True, max_exposure: float = 1e6,
            samples: list[tuple[float, int]] | None = None) -> CheckContext:
    rec = Recording(t_of=lambda ts: ts / S)
    topic = {Signal: "stream.signals", Order: "stream.orders", Fill: "stream.fills",
             EssChange: "stream.risk_events", RiskDecision: "stream.risk_events"}
    for e in events:
        rec.on_events(topic[type(e)], [e])
    stored = events if db is None else db
    rec.db = {t: [] for t in ("signals", "orders", "fills", "risk_decisions", "order_updates",
                              "alerts", "ess_changes")}
    for e in stored:
        rec.db[TABLE[type(e)]].append(msgspec.structs.asdict(e))
    if ledger:
        rec.ledger = [{"order_id": e.order_id, "client_order_id": e.client_order_id,
                       "venue_fill_id": e.venue_fill_id, "qty_e8": e.qty_e8}
                      for e in events if isinstance(e, Fill)]
    for t, total in samples or []:
        rec.sample("__lag__", t, {"total": total})
    for tid in range(1, 4):
        rec.on_events("stream.market_data", [trade(tid)])
    rec.streams = {"stream.market_data": {"entries_added": 3, "producer": {
        "service": "ws", "published": 3}, "groups": {
            "signal": {"pending": 0, "entries_read": 3, "lag": 0}}}}
    doc = validate_text(textwrap.dedent("title: t\n"), "t.yaml").scenario
    assert doc is not None
    plan = Plan(scenario=doc, mode="embedded", seed=1, namespace="n", report_dir=Path("."),
                market_duration=10)
    return CheckContext(scenario=doc, plan=plan, recording=rec, steps=[], ended={},
                        t_end=10, finished=True,
                        limits=RiskLimits(max_exposure_e8=int(max_exposure * SCALE)),
                        fault_windows=[("f", 1.0, 2.0)])


def trade(tid: int) -> Trade:
    return Trade(id=f"t{tid}", ts=tid * S, correlation_id="", causation_id="", source="ws",
                 venue="synthetic", symbol="BTCUSDT", trade_id=tid, price_e8=PRICE, qty_e8=1)


def rejection(n: int, ts: int, reason: str = "ess_halted") -> RiskDecision:
    return RiskDecision(id=f"s{n}-r", ts=ts, correlation_id=f"synthetic:BTCUSDT:{n}",
                        causation_id=f"s{n}", source="risk", signal_id=f"s{n}",
                        symbol="BTCUSDT", side="BUY", approved=False, reason=reason)


def p(**kw: Any) -> Params:
    return Params(kw)


def ess(state: str, ts: int) -> EssChange:
    return EssChange(id=f"e{ts}", ts=ts, correlation_id="", causation_id="", source="risk",
                     state=state, reason="flash_crash" if state == "HALTED" else "manual_reset",
                     actor="x")  # type: ignore[arg-type]


CLEAN = chain(1, 1 * S) + chain(2, 2 * S, fills=2)
TRIPPED = [*CLEAN, ess("HALTED", 3 * S), chain(3, 4 * S)[0], rejection(3, 4 * S)]
"""A clean run with a trip and a signal rejected while HALTED."""


@pytest.mark.parametrize("check", [no_lost_events, no_duplicates, audit_chain_complete,
                                   exposure_within_limit, no_order_after_ess_trip,
                                   no_dead_letters])
def test_a_clean_run_passes_saying_what_it_examined(check: Any) -> None:
    result = check(context(TRIPPED), p())
    assert result.status == "pass", result.detail
    assert result.examined
    assert all(n >= 0 for n in result.examined.values())


@pytest.mark.parametrize(("check", "events", "reason"), [
    (no_order_after_ess_trip, CLEAN, "0 trips (needs 1)"),
    (no_order_after_ess_trip, [*CLEAN, ess("HALTED", 9 * S)], "0 decided_while_halted"),
    (no_duplicates, [], "0 signals (needs 1)"),
    (audit_chain_complete, [], "0 orders (needs 1)"),
    (exposure_within_limit, [], "0 fills (needs 1)"),
    (no_lost_events, [], "0 events (needs 1)"),
])
def test_a_check_that_examined_nothing_is_unknown_never_pass(check: Any, events: list[AnyEvent],
                                                             reason: str) -> None:
    result = check(context(events), p())
    assert result.status == "unknown"
    assert reason in result.detail


def test_a_scenario_can_require_more_than_the_defaults_or_lift_them() -> None:
    more = audit_chain_complete(context(CLEAN), p(requires={"orders": 5}))
    assert (more.status, more.examined["orders"]) == ("unknown", 2)
    assert "2 orders (needs 5)" in more.detail
    lifted = no_order_after_ess_trip(context(CLEAN), p(requires={"trips": 0,
                                                                 "decided_while_halted": 0}))
    assert lifted.status == "pass"


def test_an_order_open_at_the_trip_must_be_cancelled() -> None:
    resting = chain(5, 2 * S, fills=0)  # an order never filled
    events = [*CLEAN, *resting, ess("HALTED", 3 * S), chain(6, 4 * S)[0], rejection(6, 4 * S)]
    result = no_order_after_ess_trip(context(events), p())
    assert result.status == "fail"
    assert "order s5-o open at the trip at t=3.000s (flash_crash) was not cancelled" in (
        result.detail)
    assert result.examined["open_at_trip"] == 1


def test_a_ledger_that_could_not_be_observed_examined_no_execution() -> None:
    result = no_lost_events(context(CLEAN, ledger=False), p())
    assert result.status == "unknown"
    assert "0 executions (needs 1)" in result.detail


def test_trades_lost_at_the_tail_are_found_by_the_producer_count() -> None:
    ctx = context(CLEAN)
    ctx.recording.streams["stream.market_data"]["producer"]["published"] = 5  # type: ignore[index]
    result = no_lost_events(ctx, p())
    assert result.status == "fail"
    assert "stream.market_data: ws published 5, the stream got 3: 2 lost on the way" in (
        result.detail)


def test_two_decisions_for_one_signal_on_the_bus_are_a_duplicate() -> None:
    """The database would keep both rows here; on the bus the second decision is seen
    even where a database collapsed it."""
    events = [*CLEAN, rejection(1, 1 * S, reason="rate_limit")]
    result = no_duplicates(context(events, db=CLEAN), p())
    assert result.status == "fail"
    assert "signal s1 decided 2 times: order s1-o, rejection s1-r (rate_limit)" in result.detail


def test_a_redelivered_entry_is_counted_not_a_duplicate() -> None:
    ctx = context(CLEAN)
    ctx.recording.on_events("stream.orders", [CLEAN[1]])  # the same order id again
    result = no_duplicates(ctx, p())
    assert result.status == "pass", result.detail
    assert result.examined["redelivered"] == 1


def test_an_order_while_halted_fails_but_a_reset_reopens_trading() -> None:
    events = [ess("HALTED", 3 * S), *chain(4, 4 * S), ess("ACTIVE", 5 * S), *chain(6, 6 * S)]
    result = no_order_after_ess_trip(context(events), p())
    assert result.examined["decided_while_halted"] == 1
    assert result.status == "fail"
    assert "order s4-o at t=4.000s while HALTED since t=3.000s" in result.detail
    assert "s6-o" not in result.detail


def test_a_fill_missing_from_the_database_is_lost() -> None:
    db = [e for e in CLEAN if e.id != "s2-o-f1"]
    result = no_lost_events(context(CLEAN, db=db), p())
    assert result.status == "fail"
    assert "fill s2-o-f1" in result.detail
    assert "venue execution c2-1" in " ".join(result.evidence)


def test_a_gap_in_trade_ids_is_a_lost_trade() -> None:
    ctx = context(CLEAN)
    for tid in (4, 5, 8):  # 1-3 are the context's own
        ctx.recording.on_events("stream.market_data", [trade(tid)])
    result = no_lost_events(ctx, p())
    assert result.status == "fail"
    assert "2 BTCUSDT trade(s) never reached the bus" in result.detail


def _stream(added: int, **groups: tuple[int, int | None, int | None]) -> dict[str, Any]:
    return {"entries_added": added, "groups": {
        g: {"pending": pending, "entries_read": read, "lag": lag}
        for g, (pending, read, lag) in groups.items()}}


def test_stream_conservation_counts_every_group() -> None:
    ctx = context(CLEAN)
    ctx.recording.streams = {"stream.signals": _stream(40, risk=(0, 40, 0), db_writer=(0, 40, 0))}
    passed = no_lost_events(ctx, p())
    assert passed.status == "pass"
    assert "2 stream/group balance(s) conserved" in passed.detail
    # risk holds 3 unacknowledged; db_writer never read 5 (and Redis could not give a lag)
    ctx.recording.streams = {"stream.signals": _stream(40, risk=(3, 40, 0),
                                                      db_writer=(0, 35, None))}
    failed = no_lost_events(ctx, p())
    assert failed.status == "fail"
    assert "stream.signals/risk: 40 added = 37 acknowledged + 3 pending + 0 never delivered" in (
        failed.evidence)
    assert "stream.signals/db_writer: 40 added = 35 acknowledged + 0 pending + 5 never " \
        "delivered" in failed.evidence


def test_duplicates_are_found() -> None:
    dup = msgspec.structs.replace(CLEAN[2], id="s1-o-f0-dup")  # same venue fill id
    result = no_duplicates(context([*CLEAN, dup], ledger=False), p())
    assert result.status == "fail"
    assert "2 fills with venue fill id c1-0" in result.detail
    assert "filled 2 of 1" in " ".join(result.evidence)


def test_a_fill_the_venue_never_made_is_a_duplicate() -> None:
    extra = Fill(**{**msgspec.structs.asdict(CLEAN[2]), "id": "ghost", "venue_fill_id": "g"})
    ctx = context(CLEAN, db=[*CLEAN, extra])
    result = no_duplicates(ctx, p())
    assert result.status == "fail"
    assert "fill ghost (g) was never made by the venue" in " ".join(result.evidence)


def test_exposure_over_the_limit_fails_with_the_time() -> None:
    result = exposure_within_limit(context(CLEAN, max_exposure=150), p())
    assert result.status == "fail"
    assert "exposure 200.00 > limit 150.00 at t=2.000s after order s2-o" in result.detail


def test_a_broken_chain_is_named() -> None:
    orphan = msgspec.structs.replace(CLEAN[1], id="lonely", causation_id="nobody",
                                     client_order_id="cx")
    result = audit_chain_complete(context([*CLEAN, orphan]), p())
    assert result.status == "fail"
    assert "order lonely has no signal nobody" in result.detail


def test_lag_must_come_back_to_zero_within_the_bound() -> None:
    ok = lag_recovers(context(CLEAN, samples=[(2.0, 50), (3.0, 0)]), p(within="2s"))
    assert (ok.status, ok.measured) == ("pass", 1.0)
    assert ok.examined["lag_episodes"] == 1
    slow = lag_recovers(context(CLEAN, samples=[(2.0, 50), (5.0, 0)]), p(within="2s"))
    assert slow.status == "fail"
    never = lag_recovers(context(CLEAN, samples=[(2.0, 50), (5.0, 3)]), p())
    assert never.status == "fail"
    assert "never back to 0" in never.detail
    blind = lag_recovers(context(CLEAN), p())
    assert blind.status == "unknown"
    never_behind = lag_recovers(context(CLEAN, samples=[(2.0, 0), (3.0, 0)]), p())
    assert never_behind.status == "unknown"
    assert "0 lag_episodes (needs 1)" in never_behind.detail


def test_unfinished_runs_cannot_prove_nothing_was_lost() -> None:
    ctx = context(CLEAN)
    ctx.finished = False
    assert no_lost_events(ctx, p()).status == "unknown"
