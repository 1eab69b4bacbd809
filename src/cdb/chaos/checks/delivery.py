"""Delivery invariants: nothing the pipeline handled was lost on the way, nothing was
parked as unprocessable, and nothing was decided, ordered or filled twice.

- ``no_lost_events``: everything the coordinator saw on the bus for the database is in
  it (or dead-lettered), every venue execution is a fill in the database, no trade is
  missing from the market data, and every consumer group acknowledged everything;
- ``no_dead_letters``: no event parked as unprocessable;
- ``no_duplicates``: one order per signal, one decision per signal, unique client order
  ids and venue fill ids, never more filled than ordered, and no fill in the database
  the venue did not make.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from cdb.bus.keys import MARKET_DATA
from cdb.chaos.checks.context import CheckContext
from cdb.chaos.checks.verdict import Assertion
from cdb.chaos.checks.violations import MAX_EVIDENCE, result
from cdb.chaos.scenario.params import Params
from cdb.chaos.scenario.registry import INVARIANTS, P
from cdb.events import SCALE

_DB_TOPICS = {"signal": "signals", "order": "orders", "fill": "fills",
              "risk_decision": "risk_decisions", "order_update": "order_updates",
              "alert": "alerts", "ess_change": "ess_changes"}


@INVARIANTS.register("no_lost_events", summary="everything seen on the bus is in the database "
                     "(or dead-lettered), every venue execution is a fill in it, every stream "
                     "holds all its producer published and every consumer group acknowledged "
                     "everything", params={"kinds": P.strings(
                         "event kinds to check (default all persisted kinds and the "
                         "trades' ids)")})
def no_lost_events(ctx: CheckContext, p: Params) -> Assertion:
    """Examines the recorded events, the trades, the venue's executions and the
    streams; needs events, trades and executions (a ledger that could not be observed
    examined none)."""
    name = "no_lost_events"
    if not ctx.finished or ctx.recording.db is None:
        return result(name, [], "", unknown="the run did not finish, so the database was not "
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
    for x in ledger or []:
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
        if not trades_checked and stream == MARKET_DATA:
            continue
        balances, lost = _conservation(stream, info)
        conserved += balances
        problems += lost
    trades = sum(len(ids) for ids in ctx.recording.trade_ids.values()) if trades_checked else 0
    executions = len(ledger) if ledger is not None else 0
    examined = {"events": checked, "trades": trades, "executions": executions,
                "stream_balances": conserved}
    needs = {"events": 1, "stream_balances": 1}
    if trades_checked:
        needs["trades"] = 1
    if "fill" in kinds:
        needs["executions"] = 1
    detail = (f"{checked} recorded events in the database, {trades} trades"
              + f", {conserved} stream/group balance(s) conserved"
              + (f", {executions} venue executions matched"
                 + (f" ({ctx.recording.ledger_source})" if ctx.recording.ledger_source else "")
                 if ledger is not None else
                 f", venue ledger not observable ({ctx.recording.ledger_source or 'none'})")
              + (f", {sum(ctx.recording.dead_letters.values())} dead-lettered"
                 if ctx.recording.dead_letters else ""))
    return result(name, problems, detail, examined=examined, needs=needs, p=p)


def _conservation(stream: str, info: dict[str, Any]) -> tuple[int, list[str]]:
    """Stream conservation. The producer's own count of what it published (when known)
    equals the entries the stream got, so the last events lost on the way are found
    too; and per consumer group, from the bus's counters, every entry added was read
    by the group (``entries-read``) and every read entry acknowledged (a dead-lettered
    entry is acknowledged once parked), so added = acknowledged + pending + never
    delivered, with the last two zero."""
    added = int(info.get("entries_added", 0) or 0)
    balances, problems = 0, []
    producer = info.get("producer")
    if producer is not None:
        sent = int(producer.get("published", 0) or 0)
        if sent > added:
            last = producer.get("last_id")
            problems.append(f"{stream}: {producer.get('service', 'its producer')} published "
                            f"{sent}, the stream got {added}: {sent - added} lost on the way"
                            + (f" (the last one published was {last})" if last else ""))
        else:
            balances += 1
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
    """Examines every stream entry the coordinator saw; needs some."""
    counts = ctx.recording.dead_letters
    problems = [f"{n} event(s) of {stream} dead-lettered" for stream, n in sorted(counts.items())]
    alerts = [r.event for r in ctx.recording.of("alert")
              if getattr(r.event, "code", "") == "event_parked"]
    problems += [f"{getattr(a, 'message', '')}" for a in alerts[:MAX_EVIDENCE]]
    seen = sum(ctx.recording.published.values())
    return result("no_dead_letters", problems, f"nothing dead-lettered of {seen} stream "
                   "entries", examined={"entries": seen}, needs={"entries": 1}, p=p)


@INVARIANTS.register("no_duplicates", summary="one decision (order or rejection) per signal, "
                     "one order per client order id, one fill per venue fill id, never more "
                     "filled than ordered, no fill the venue did not make, nothing the venue "
                     "executed beyond an order's quantity")
def no_duplicates(ctx: CheckContext, p: Params) -> Assertion:
    """Counted where duplicates occur: on the bus as recorded (every entry, before any
    database collapsed a repeated id) and in the database, per signal, client order id
    and venue fill id; an event delivered again with its own id is a redelivery, which
    consumers absorb (counted, not a violation)."""
    name = "no_duplicates"
    if not ctx.finished or ctx.recording.db is None:
        return result(name, [], "", unknown="the run did not finish, so the database was not "
                                             "recorded")
    orders = ctx.union("orders", "order")
    fills = ctx.union("fills", "fill")
    rejections = ctx.union("risk_decisions", "risk_decision")
    decisions: dict[str, list[str]] = defaultdict(list)
    for o in orders:
        decisions[o["causation_id"]].append(f"order {o['id']}")
    for d in rejections:
        decisions[d["signal_id"]].append(f"rejection {d['id']} ({d['reason']})")
    problems = [f"signal {sid} decided {len(what)} times: {', '.join(what[:4])}"
                for sid, what in decisions.items() if len(what) > 1]
    problems += _repeated(orders, fills) + _overfilled(orders, fills)
    if ctx.recording.ledger is not None:
        problems += _against_ledger(ctx, ctx.recording.ledger, orders, fills)
    redelivered = sum(n - 1 for ids in ctx.recording.ids.values() for n in ids.values()
                      if n > 1)
    examined = {"signals": len(decisions), "orders": len(orders), "fills": len(fills),
                "redelivered": redelivered}
    detail = (f"{len(decisions)} signals decided once each, {len(orders)} orders, "
              f"{len(fills)} fills unique on the bus and in the database"
              + (f"; {redelivered} redelivered entries absorbed" if redelivered else ""))
    return result(name, problems, detail, examined=examined,
                   needs={"signals": 1, "orders": 1, "fills": 1}, p=p)


def _repeated(orders: list[dict[str, Any]], fills: list[dict[str, Any]]) -> list[str]:
    problems = [f"{n} orders with client id {value}" for value, n in
                Counter(o["client_order_id"] for o in orders).items() if n > 1]
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


def _against_ledger(ctx: CheckContext, ledger: list[dict[str, Any]],
                    orders: list[dict[str, Any]], fills: list[dict[str, Any]]) -> list[str]:
    made = {x["venue_fill_id"] for x in ledger}
    blind = ctx.recording.ledger_blind
    # A fill made while the ledger could not be read (a killed execution's last
    # moments) cannot be told from a made-up one: it is not judged.
    problems = [f"fill {f['id']} ({f['venue_fill_id']}) was never made by the venue"
                for f in fills if f["venue_fill_id"] not in made
                and not any(a <= f["ts"] <= b for a, b in blind)]
    by_client: dict[str, int] = defaultdict(int)
    for x in ledger:
        by_client[x["client_order_id"]] += x["qty_e8"]
    qty_of = {o["client_order_id"]: o["qty_e8"] for o in orders}
    problems += [f"the venue filled {client} beyond its quantity (sent twice?)"
                 for client, qty in by_client.items() if client in qty_of and qty > qty_of[client]]
    return problems
