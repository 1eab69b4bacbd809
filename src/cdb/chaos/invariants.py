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
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from cdb.chaos.checks import CheckContext
from cdb.chaos.faults.base import Params
from cdb.chaos.registry import INVARIANTS, P
from cdb.chaos.timeline import TimelineError, resolve
from cdb.chaos.verdict import Assertion
from cdb.events import SCALE, mul_e8

_MAX_EVIDENCE = 10


def _result(name: str, problems: list[str], ok_detail: str, *, unknown: str = "") -> Assertion:
    if problems:
        head = f"{len(problems)} violation(s): " + "; ".join(problems[:3])
        return Assertion(name=name, category="invariant", status="fail", detail=head,
                         evidence=tuple(problems[:_MAX_EVIDENCE]))
    if unknown:
        return Assertion(name=name, category="invariant", status="unknown", detail=unknown)
    return Assertion(name=name, category="invariant", status="pass", detail=ok_detail)


@INVARIANTS.register("no_order_after_ess_trip", summary="no new order between an ESS trip "
                     "and its reset (reduce-only orders excepted)",
                     params={"grace": P.duration("event-time slack after the trip")})
def no_order_after_ess_trip(ctx: CheckContext, p: Params) -> Assertion:
    name = "no_order_after_ess_trip"
    grace_ns = int(p.duration("grace", 0.0) * 1e9)
    changes = ctx.union("ess_changes", "ess_change")
    halted: list[tuple[int, int | None, str]] = []
    for change in changes:
        if change["state"] == "HALTED" and (not halted or halted[-1][1] is not None):
            halted.append((change["ts"], None, change.get("reason", "")))
        elif change["state"] == "ACTIVE" and halted and halted[-1][1] is None:
            start, _, reason = halted[-1]
            halted[-1] = (start, change["ts"], reason)
    orders = ctx.union("orders", "order")
    problems = []
    for order in orders:
        if order.get("reduce_only"):
            continue
        for start, end, reason in halted:
            if start + grace_ns < order["ts"] and (end is None or order["ts"] < end):
                problems.append(
                    f"order {order['id']} at t={ctx.t_of(order['ts']):.3f}s while HALTED since "
                    f"t={ctx.t_of(start):.3f}s ({reason})")
    if not halted:
        note = "no ESS trip recorded" + (" (the ESS is not available)" if "ess" in ctx.missing
                                         else "")
        return _result(name, problems, f"{note}; {len(orders)} orders")
    return _result(name, problems, f"{len(halted)} trip(s); {len(orders)} orders, none while "
                                   "HALTED")


_DB_TOPICS = {"signal": "signals", "order": "orders", "fill": "fills",
              "risk_decision": "risk_decisions", "order_update": "order_updates",
              "alert": "alerts", "ess_change": "ess_changes"}


@INVARIANTS.register("no_lost_events", summary="everything seen on the bus is in the database "
                     "(or dead-lettered), every venue execution is a fill in it, every consumer "
                     "group acknowledged everything", params={"kinds": P.strings(
                         "event kinds to check (default all persisted kinds and the "
                         "trades' ids)")})
def no_lost_events(ctx: CheckContext, p: Params) -> Assertion:
    name = "no_lost_events"
    if not ctx.finished or ctx.recording.db is None:
        return _result(name, [], "", unknown="the run did not finish, so the database was not "
                                             "recorded")
    kinds = list(p.get("kinds") or _DB_TOPICS)
    problems: list[str] = []
    dead = ctx.recording.dead_letter_ids
    checked = 0
    for kind in (k for k in kinds if k in _DB_TOPICS):
        stored = {row["id"] for row in ctx.rows(_DB_TOPICS[kind])}
        for rec in ctx.recording.of(kind):
            checked += 1
            if rec.event.id not in stored and rec.event.id not in dead:
                problems.append(f"{kind} {rec.event.id} (t={rec.t:.3f}s) is not in the "
                                "database")
    ledger = ctx.recording.ledger
    fills = {row["venue_fill_id"] for row in ctx.rows("fills")}
    if ledger is not None:
        for x in ledger:
            if x["venue_fill_id"] not in fills:
                problems.append(f"venue execution {x['venue_fill_id']} of order "
                                f"{x['order_id']} is not a fill in the database")
    # A scenario that loses market data on purpose (a dropped live stream) leaves
    # "trade" out of its kinds and checks that the gap was reported instead.
    trades_checked = not p.get("kinds") or "trade" in kinds
    for symbol, missing in (ctx.recording.missing_trades() if trades_checked else {}).items():
        problems.append(f"{missing} {symbol} trade(s) never reached the bus (gaps in the "
                        "exchange trade ids)")
    conserved = 0
    for stream, info in (ctx.recording.streams or {}).items():
        balances, lost = _conservation(stream, info)
        conserved += balances
        problems += lost
    detail = (f"{checked} recorded events in the database"
              + (f", {conserved} stream/group balance(s) conserved" if conserved else "")
              + (f", {len(ledger)} venue executions matched" if ledger is not None else
                 ", venue ledger not observable")
              + (f", {sum(ctx.recording.dead_letters.values())} dead-lettered"
                 if ctx.recording.dead_letters else ""))
    return _result(name, problems, detail)


def _conservation(stream: str, info: dict[str, Any]) -> tuple[int, list[str]]:
    """Stream conservation per consumer group, from Redis's own counters: every entry
    added was read by the group (``entries-read``) and every read entry acknowledged
    (a dead-lettered entry is acknowledged once parked), so
    added = acknowledged + pending + never delivered, with the last two zero."""
    added = int(info.get("entries_added", 0) or 0)
    balances, problems = 0, []
    for group, g in (info.get("groups") or {}).items():
        pending = int(g.get("pending", 0) or 0)
        read = g.get("entries_read")
        if read is None:
            # Redis could not count (deleted entries in between): fall back on its lag.
            undelivered = int(g.get("lag", 0) or 0)
            acked = added - undelivered - pending
        else:
            undelivered = max(0, added - int(read))
            acked = int(read) - pending
        if pending or undelivered:
            problems.append(f"{stream}/{group}: {added} added = {acked} acknowledged + "
                            f"{pending} pending + {undelivered} never delivered")
        else:
            balances += 1
    return balances, problems


@INVARIANTS.register("no_dead_letters", summary="no event was parked as unprocessable (a "
                     "dead letter is not lost, but something could not handle it)")
def no_dead_letters(ctx: CheckContext, p: Params) -> Assertion:
    counts = ctx.recording.dead_letters
    problems = [f"{n} event(s) of {stream} dead-lettered" for stream, n in sorted(counts.items())]
    alerts = [r.event for r in ctx.recording.of("alert")
              if getattr(r.event, "code", "") == "event_parked"]
    problems += [f"{getattr(a, 'message', '')}" for a in alerts[:_MAX_EVIDENCE]]
    return _result("no_dead_letters", problems, "nothing dead-lettered")


@INVARIANTS.register("no_duplicates", summary="one order and one decision per signal, "
                     "unique client order ids and fills, never more filled than ordered, no "
                     "fill the venue did not make")
def no_duplicates(ctx: CheckContext, p: Params) -> Assertion:
    name = "no_duplicates"
    if not ctx.finished or ctx.recording.db is None:
        return _result(name, [], "", unknown="the run did not finish, so the database was not "
                                             "recorded")
    orders = ctx.rows("orders")
    fills = ctx.rows("fills")
    decisions = ctx.rows("risk_decisions")
    problems = _repeated(orders, fills) + _overfilled(orders, fills)
    rejected = {d["signal_id"] for d in decisions if not d["approved"]}
    problems += [f"signal {o['causation_id']} was both approved and rejected"
                 for o in orders if o["causation_id"] in rejected]
    if ctx.recording.ledger is not None:
        problems += _against_ledger(ctx.recording.ledger, orders, fills)
    return _result(name, problems, f"{len(orders)} orders, {len(fills)} fills, "
                                   f"{len(decisions)} rejections unique")


def _repeated(orders: list[dict[str, Any]], fills: list[dict[str, Any]]) -> list[str]:
    problems = []
    for key, what in (("causation_id", "orders for signal"),
                      ("client_order_id", "orders with client id")):
        problems += [f"{n} {what} {value}" for value, n in
                     Counter(o[key] for o in orders).items() if n > 1]
    problems += [f"{n} fills with venue fill id {value}" for value, n in
                 Counter(f["venue_fill_id"] for f in fills).items() if n > 1]
    return problems


def _overfilled(orders: list[dict[str, Any]], fills: list[dict[str, Any]]) -> list[str]:
    ordered = {o["id"]: o for o in orders}
    filled: dict[str, int] = defaultdict(int)
    for f in fills:
        filled[f["order_id"]] += f["qty_e8"]
    return [f"order {order_id} filled {qty / SCALE:g} of {ordered[order_id]['qty_e8'] / SCALE:g}"
            for order_id, qty in filled.items()
            if order_id in ordered and qty > ordered[order_id]["qty_e8"]]


def _against_ledger(ledger: list[dict[str, Any]], orders: list[dict[str, Any]],
                    fills: list[dict[str, Any]]) -> list[str]:
    made = {x["venue_fill_id"] for x in ledger}
    problems = [f"fill {f['id']} ({f['venue_fill_id']}) was never made by the venue"
                for f in fills if f["venue_fill_id"] not in made]
    by_client: dict[str, int] = defaultdict(int)
    for x in ledger:
        by_client[x["client_order_id"]] += x["qty_e8"]
    qty_of = {o["client_order_id"]: o["qty_e8"] for o in orders}
    problems += [f"the venue filled {client} beyond its quantity (sent twice?)"
                 for client, qty in by_client.items() if client in qty_of and qty > qty_of[client]]
    return problems


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
        if exposure > bound and len(problems) < _MAX_EVIDENCE:
            problems.append(f"exposure {exposure / SCALE:,.2f} > limit {limit_e8 / SCALE:,.2f} "
                            f"at t={ctx.t_of(ts):.3f}s after {kind} {row['id']}")
    detail = (f"max {worst[0] / SCALE:,.2f} of {limit_e8 / SCALE:,.2f}"
              + (f" at t={ctx.t_of(worst[1]):.3f}s" if worst[0] else "")
              + f" over {len(orders)} orders and {len(fills)} fills")
    return _result(name, problems, detail)


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
        return _result(name, [], "", unknown="the run did not finish, so the database was not "
                                             "recorded")
    signals = {s["id"]: s for s in ctx.rows("signals")}
    orders = {o["id"]: o for o in ctx.rows("orders")}
    fills = ctx.rows("fills")
    decisions = ctx.rows("risk_decisions")
    problems = _broken_links(signals, orders, fills, decisions)
    decided = {o["causation_id"] for o in orders.values()} | {d["signal_id"] for d in decisions}
    problems += [f"signal {sid} has no decision (neither order nor rejection)"
                 for sid in signals if sid not in decided]
    done = {f["order_id"] for f in fills} | {u["order_id"] for u in ctx.rows("order_updates")}
    last_ts = max((x["ts"] for x in (*orders.values(), *fills)), default=0)
    grace_ns = int(p.duration("grace", 2.0) * 1e9)
    problems += [f"order {o['id']} has neither a fill nor an update" for o in orders.values()
                 if o["id"] not in done and o["ts"] < last_ts - grace_ns]
    return _result(name, problems, f"{len(signals)} signals, {len(orders)} orders, "
                                   f"{len(fills)} fills chained")


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
    name = "lag_recovers"
    within = p.duration("within", 10.0)
    after_ref = p.get("after")
    try:
        start = (resolve(after_ref, ctx.steps, ctx.ended) if after_ref is not None
                 else ctx.last_fault_end())
    except TimelineError as exc:
        return _result(name, [], "", unknown=str(exc))
    if start is None:
        start = 0.0
    samples = [s for s in ctx.recording.samples.get("__lag__", []) if s.t >= start
               and s.error is None and isinstance(s.value, dict)]
    if not samples:
        return _result(name, [], "", unknown=f"no lag samples after t={start:g}s")
    zero = next((s for s in samples if s.value.get("total") == 0), None)
    if zero is None:
        last = samples[-1]
        return Assertion(name=name, category="invariant", status="fail",
                         detail=f"lag never back to 0 after t={start:g}s (last "
                                f"{last.value.get('total')} at t={last.t:g}s)", bound=within)
    took = zero.t - start
    ok = took <= within
    return Assertion(name=name, category="invariant", status="pass" if ok else "fail",
                     detail=f"lag 0 at t={zero.t:g}s, {took:.2f}s after t={start:g}s "
                            f"(bound {within:g}s)", measured=round(took, 3), bound=within)
