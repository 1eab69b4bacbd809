"""Invariants: properties that must hold over the whole recorded run, whatever the
faults did. A violation fails the run (see ``verdict``).

- ``no_order_after_ess_trip``: no new order between an ESS trip and its reset
  (orders that only reduce a position are allowed);
- ``no_lost_events``: everything the coordinator saw on the bus for the database is in
  it (or dead-lettered), every venue execution is a fill in the database, no trade is
  missing from the market data (exchange trade ids are consecutive), and every consumer
  group acknowledged everything (stream conservation);
- ``no_dead_letters``: no event parked as unprocessable;
- ``no_duplicates``: one order per signal, one decision per signal, unique client order
  ids and venue fill ids, never more filled than ordered, and no fill in the database
  the venue did not make;
- ``exposure_within_limit``: exposure (positions and open orders at transaction prices)
  never above the limit, at any point of the order and fill timeline;
- ``audit_chain_complete``: every order has its signal, every fill its order, all in one
  correlation chain; every signal a decision; every order a fill or an update;
- ``lag_recovers``: consumer lag back to zero within a bound after the last fault.

The delivery invariants (``no_lost_events``, ``no_dead_letters``, ``no_duplicates``)
are in ``delivery``; importing this module registers them all.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec

from cdb.chaos.checks.context import FINAL, CheckContext
from cdb.chaos.checks.delivery import no_dead_letters, no_duplicates, no_lost_events
from cdb.chaos.checks.verdict import Assertion
from cdb.chaos.checks.violations import MAX_EVIDENCE, result
from cdb.chaos.scenario.params import Params
from cdb.chaos.scenario.registry import INVARIANTS, P
from cdb.chaos.scenario.timeline import TimelineError, resolve
from cdb.events import SCALE, mul_e8

__all__ = ["audit_chain_complete", "exposure_within_limit", "lag_recovers", "no_dead_letters",
           "no_duplicates", "no_lost_events", "no_order_after_ess_trip"]


def _halted_windows(ctx: CheckContext) -> list[tuple[int, int | None, str]]:
    """(start, end or None, reason) of every HALTED period, in event time."""
    halted: list[tuple[int, int | None, str]] = []
    for change in ctx.union("ess_changes", "ess_change"):
        if change["state"] == "HALTED" and (not halted or halted[-1][1] is not None):
            halted.append((change["ts"], None, change.get("reason", "")))
        elif change["state"] == "ACTIVE" and halted and halted[-1][1] is None:
            start, _, reason = halted[-1]
            halted[-1] = (start, change["ts"], reason)
    return halted


def _within(ts: int, windows: list[tuple[int, int | None, str]], grace_ns: int = 0) -> bool:
    return any(start + grace_ns < ts and (end is None or ts < end) for start, end, _ in windows)


@INVARIANTS.register("no_order_after_ess_trip", summary="no new order between an ESS trip "
                     "and its reset (reduce-only orders excepted), and every order open at "
                     "the trip cancelled (or filled) soon after it",
                     params={"grace": P.duration("event-time slack after the trip"),
                             "cancel_within": P.duration("how soon an order open at the "
                                                         "trip must be ended (default 5s)")})
def no_order_after_ess_trip(ctx: CheckContext, p: Params) -> Assertion:
    """Examines the trips, the signals decided while HALTED (orders and rejections)
    and the orders open at each trip; needs a trip and a decision while HALTED."""
    name = "no_order_after_ess_trip"
    grace_ns = int(p.duration("grace", 0.0) * 1e9)
    cancel_ns = int(p.duration("cancel_within", 5.0) * 1e9)
    halted = _halted_windows(ctx)
    orders = ctx.union("orders", "order")
    rejections = ctx.union("risk_decisions", "risk_decision")
    problems = []
    reduce_only = 0
    for order in orders:
        if not _within(order["ts"], halted, grace_ns):
            continue
        if order.get("reduce_only"):
            reduce_only += 1
            continue
        start = max(s for s, _, _ in halted if s < order["ts"])
        reason = next(r for s, _, r in halted if s == start)
        problems.append(
            f"order {order['id']} at t={ctx.t_of(order['ts']):.3f}s while HALTED since "
            f"t={ctx.t_of(start):.3f}s ({reason})")
    open_at_trip, cancelled, unended = _open_at_trip(ctx, orders, halted, cancel_ns)
    problems += unended
    decided = sum(1 for o in orders if _within(o["ts"], halted, grace_ns)) + sum(
        1 for d in rejections if _within(d["ts"], halted, grace_ns))
    examined = {"trips": len(halted), "orders": len(orders), "decided_while_halted": decided,
                "reduce_only_while_halted": reduce_only, "open_at_trip": open_at_trip,
                "cancelled": cancelled}
    detail = (f"{len(halted)} trip(s); {decided} signal(s) decided while HALTED, "
              f"{reduce_only} reduce-only order(s) let out; {open_at_trip} order(s) open at "
              f"a trip, all ended; {len(orders)} orders in all")
    return result(name, problems, detail, examined=examined,
                   needs={"trips": 1, "decided_while_halted": 1}, p=p)


def _open_at_trip(ctx: CheckContext, orders: list[dict[str, Any]],
                  halted: list[tuple[int, int | None, str]], cancel_ns: int,
                  ) -> tuple[int, int, list[str]]:
    """Orders open at each trip (reduce-only ones may stay), orders cancelled, and the
    open ones not ended (cancelled or filled) within ``cancel_ns`` of their trip."""
    ended: dict[str, int] = {}
    for f in ctx.union("fills", "fill"):
        if f["order_status"] == "FILLED":
            ended.setdefault(f["order_id"], f["ts"])
    cancelled = 0
    for u in ctx.union("order_updates", "order_update"):
        if u["status"] in FINAL:
            ended.setdefault(u["order_id"], u["ts"])
            cancelled += u["status"] == "CANCELED"
    open_at_trip, problems = 0, []
    for start, _, reason in halted:
        for order in orders:
            done = ended.get(order["id"])
            # Ended at the trip's own instant (cancelled by it) still counts as open.
            if order["ts"] > start or order.get("reduce_only") or (
                    done is not None and done < start):
                continue
            open_at_trip += 1
            if done is None or done > start + cancel_ns:
                problems.append(
                    f"order {order['id']} open at the trip at t={ctx.t_of(start):.3f}s "
                    f"({reason}) was not cancelled within {cancel_ns / 1e9:g}s")
    return open_at_trip, cancelled, problems


@INVARIANTS.register("exposure_within_limit", summary="exposure never above the limit along "
                     "the order and fill timeline",
                     params={"limit": P.number("quote currency (default the pipeline's "
                                               "max_exposure)", exclusive_minimum=0),
                             "tolerance_pct": P.number("slack for slippage (default 1)",
                                                       minimum=0)})
def exposure_within_limit(ctx: CheckContext, p: Params) -> Assertion:
    name = "exposure_within_limit"
    limit_e8 = int(p.number("limit") * SCALE) if "limit" in p.raw else ctx.limits.max_exposure_e8
    bound = limit_e8 * (100 + p.number("tolerance_pct", 1.0)) / 100
    orders = ctx.union("orders", "order")
    fills = ctx.union("fills", "fill")
    updates = ctx.union("order_updates", "order_update")
    timeline: list[tuple[int, int, str, dict[str, Any]]] = (
        [(o["ts"], 0, "order", o) for o in orders] + [(f["ts"], 1, "fill", f) for f in fills]
        + [(u["ts"], 2, "update", u) for u in updates])
    timeline.sort(key=lambda x: (x[0], x[1]))
    position: dict[str, int] = defaultdict(int)
    open_qty: dict[str, tuple[str, str, int]] = {}  # order id -> (symbol, side, remaining)
    mark: dict[str, int] = {}
    worst = (0, 0)
    problems: list[str] = []
    for ts, _, kind, row in timeline:
        if kind == "order":
            open_qty[row["id"]] = (row["symbol"], row["side"], row["qty_e8"])
            mark[row["symbol"]] = row["ref_price_e8"] or mark.get(row["symbol"], 0)
        elif kind == "fill":
            sign = 1 if row["side"] == "BUY" else -1
            position[row["symbol"]] += sign * row["qty_e8"]
            mark[row["symbol"]] = row["price_e8"]
            if row["order_id"] in open_qty:
                sym, side, rem = open_qty[row["order_id"]]
                rem -= row["qty_e8"]
                if rem <= 0 or row["order_status"] == "FILLED":
                    del open_qty[row["order_id"]]
                else:
                    open_qty[row["order_id"]] = (sym, side, rem)
        elif row["status"] in ("CANCELED", "REJECTED", "EXPIRED", "FILLED"):
            open_qty.pop(row["order_id"], None)
        exposure = _exposure(position, open_qty, mark)
        if exposure > worst[0]:
            worst = (exposure, ts)
        if exposure > bound and len(problems) < MAX_EVIDENCE:
            problems.append(f"exposure {exposure / SCALE:,.2f} > limit {limit_e8 / SCALE:,.2f} "
                            f"at t={ctx.t_of(ts):.3f}s after {kind} {row['id']}")
    peak_pct = round(100 * worst[0] / limit_e8) if limit_e8 else 0
    detail = (f"max {worst[0] / SCALE:,.2f} of {limit_e8 / SCALE:,.2f} ({peak_pct}%)"
              + (f" at t={ctx.t_of(worst[1]):.3f}s" if worst[0] else "")
              + f" over {len(orders)} orders and {len(fills)} fills")
    return result(name, problems, detail, examined={"orders": len(orders), "fills": len(fills),
                                                     "peak_pct": peak_pct},
                   needs={"orders": 1, "fills": 1}, p=p)


def _exposure(position: dict[str, int], open_qty: dict[str, tuple[str, str, int]],
              mark: dict[str, int]) -> int:
    net = dict(position)
    for symbol, side, rem in open_qty.values():
        net[symbol] = net.get(symbol, 0) + (rem if side == "BUY" else -rem)
    return sum(abs(mul_e8(qty, mark.get(symbol, 0))) for symbol, qty in net.items())


@INVARIANTS.register("audit_chain_complete", summary="every order has its signal and every "
                     "fill its order in one correlation chain; every signal a decision; every "
                     "order a fill or an update",
                     params={"grace": P.duration("orders this close to the end may still be "
                                                 "open (default 2s)")})
def audit_chain_complete(ctx: CheckContext, p: Params) -> Assertion:
    name = "audit_chain_complete"
    if not ctx.finished or ctx.recording.db is None:
        return result(name, [], "", unknown="the run did not finish, so the database was not "
                                             "recorded")
    signals = {s["id"]: s for s in ctx.rows("signals")}
    orders = {o["id"]: o for o in ctx.rows("orders")}
    fills = ctx.rows("fills")
    decisions = ctx.rows("risk_decisions")
    problems = _broken_links(signals, orders, fills, decisions)
    decided = {o["causation_id"] for o in orders.values()} | {d["signal_id"] for d in decisions}
    # A signal parked as unprocessable is no_dead_letters' to report.
    parked = ctx.recording.dead_letter_ids
    problems += [f"signal {sid} has no decision (neither order nor rejection)"
                 for sid in signals if sid not in decided and sid not in parked]
    done = {f["order_id"] for f in fills} | {u["order_id"] for u in ctx.rows("order_updates")}
    last_ts = max((x["ts"] for x in (*orders.values(), *fills)), default=0)
    grace_ns = int(p.duration("grace", 2.0) * 1e9)
    problems += [f"order {o['id']} has neither a fill nor an update" for o in orders.values()
                 if o["id"] not in done and o["ts"] < last_ts - grace_ns]
    return result(name, problems, f"{len(signals)} signals, {len(orders)} orders, "
                                   f"{len(fills)} fills chained",
                   examined={"signals": len(signals), "orders": len(orders), "fills": len(fills)},
                   needs={"signals": 1, "orders": 1, "fills": 1}, p=p)


def _broken_links(signals: dict[str, dict[str, Any]], orders: dict[str, dict[str, Any]],
                  fills: list[dict[str, Any]], decisions: list[dict[str, Any]]) -> list[str]:
    problems = []
    for o in orders.values():
        s = signals.get(o["causation_id"])
        if s is None:
            problems.append(f"order {o['id']} has no signal {o['causation_id']}")
        elif s["correlation_id"] != o["correlation_id"]:
            problems.append(f"order {o['id']} is in chain {o['correlation_id']}, its signal in "
                            f"{s['correlation_id']}")
    for f in fills:
        parent = orders.get(f["order_id"])
        if parent is None:
            problems.append(f"fill {f['id']} has no order {f['order_id']}")
        elif f["correlation_id"] != parent["correlation_id"] or f["causation_id"] != parent["id"]:
            problems.append(f"fill {f['id']} is not chained to order {parent['id']}")
    problems += [f"decision {d['id']} has no signal {d['signal_id']}" for d in decisions
                 if d["signal_id"] not in signals]
    return problems


@INVARIANTS.register("lag_recovers", summary="consumer lag back to zero within a bound after "
                     "the last fault", params={"within": P.duration("the bound (default 10s)"),
                                               "after": {"type": ["string", "number"],
                                                         "description": "from when (default "
                                                         "the end of the last fault)"}})
def lag_recovers(ctx: CheckContext, p: Params) -> Assertion:
    """Examines the lag samples and the lag episodes (runs of samples with events
    waiting) from the first fault on; needs one episode: a lag that never built proves
    nothing about recovering from it."""
    name = "lag_recovers"
    within = p.duration("within", 10.0)
    after_ref = p.get("after")
    try:
        start = (resolve(after_ref, ctx.steps, ctx.ended) if after_ref is not None
                 else ctx.last_fault_end())
    except TimelineError as exc:
        return result(name, [], "", unknown=str(exc))
    if start is None:
        start = 0.0
    usable = [s for s in ctx.recording.samples.get("__lag__", [])
              if s.error is None and isinstance(s.value, dict)]
    first_fault = min((t for _, t, _ in ctx.fault_windows), default=start)
    episodes, behind, peak = 0, False, 0
    for s in usable:
        total = int(s.value.get("total") or 0)
        if s.t >= min(first_fault, start) and total > 0:
            episodes += not behind
            peak = max(peak, total)
        behind = total > 0
    samples = [s for s in usable if s.t >= start]
    examined = {"samples": len(samples), "lag_episodes": episodes, "peak_lag": peak}
    if not samples:
        return result(name, [], "", unknown=f"no lag samples after t={start:g}s",
                       examined=examined)
    zero = next((s for s in samples if s.value.get("total") == 0), None)
    if zero is None:
        last = samples[-1]
        return Assertion(name=name, category="invariant", status="fail",
                         detail=f"lag never back to 0 after t={start:g}s (last "
                                f"{last.value.get('total')} at t={last.t:g}s)", bound=within,
                         examined=examined)
    took = zero.t - start
    ok = took <= within
    detail = (f"lag 0 at t={zero.t:g}s, {took:.2f}s after t={start:g}s (bound {within:g}s); "
              f"{episodes} lag episode(s), peak {peak}")
    if not ok:
        return Assertion(name=name, category="invariant", status="fail", detail=detail,
                         measured=round(took, 3), bound=within, examined=examined)
    passed = result(name, [], detail, examined=examined, needs={"lag_episodes": 1}, p=p)
    return msgspec.structs.replace(passed, measured=round(took, 3), bound=within)
