"""The audit trace of one chain of events, for people: a ``TraceStep`` per event, cause
before effect, with a one-line summary of each."""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from cdb.events import (
    Alert,
    CancelOrders,
    EssChange,
    Event,
    Fill,
    Order,
    OrderUpdate,
    RiskDecision,
    Signal,
    fmt_e8,
)

StepKind = Literal[
    "trade", "signal", "risk_decision", "order", "fill", "order_update", "alert", "ess_change",
    "cancel_orders",
]


class TraceStep(msgspec.Struct, frozen=True, kw_only=True):
    """One event of an audit chain, for people.

    The latency from the previous step is ``step.ts - previous.ts``.
    """

    kind: StepKind
    """``trade``, or the event's tag."""
    id: str
    ts: int
    causation_id: str
    """Empty for the trade, which starts the chain."""
    source: str
    """The service instance that published the event; empty for the trade."""
    summary: str


_KIND: Final[dict[type[Event], StepKind]] = {
    Signal: "signal",
    RiskDecision: "risk_decision",
    Order: "order",
    Fill: "fill",
    OrderUpdate: "order_update",
    Alert: "alert",
    EssChange: "ess_change",
    CancelOrders: "cancel_orders",
}

# Within one ts, cause before effect.
_RANK: Final[dict[StepKind, int]] = {
    "trade": 0,
    "signal": 1,
    "risk_decision": 2,
    "order": 3,
    "fill": 4,
    "order_update": 5,
    "alert": 6,
    "ess_change": 7,
    "cancel_orders": 8,
}


def steps_of(correlation_id: str, events: list[Event]) -> list[TraceStep]:
    """The chain of ``correlation_id`` from its stored ``events``, ordered by ts then
    cause before effect; the trade that started it is added from what its effects
    recorded when it is not stored itself."""
    steps = [_step(event) for event in events]
    if all(event.id != correlation_id for event in events):
        steps.append(_trade_step(correlation_id, events))
    steps.sort(key=lambda s: (s.ts, _RANK[s.kind], s.id))
    return steps


def _trade_step(trade_id: str, events: list[Event]) -> TraceStep:
    """The trade that started a chain, known only from what its effects recorded."""
    caused = [e for e in events if e.causation_id == trade_id] or events
    signal = next((e for e in caused if isinstance(e, Signal)), None)
    if signal is not None:
        ts = signal.ts
        summary = f"{signal.symbol} at {fmt_e8(signal.price_e8)} (as signal {signal.id} saw it)"
    else:
        first = min(caused, key=lambda e: e.ts)
        ts = first.ts
        summary = f"not stored; started {first.id}"
    return TraceStep(kind="trade", id=trade_id, ts=ts, causation_id="", source="", summary=summary)


def _step(event: Event) -> TraceStep:
    return TraceStep(
        kind=_KIND[type(event)],
        id=event.id,
        ts=event.ts,
        causation_id=event.causation_id,
        source=event.source,
        summary=_summary(event),
    )


def _summary(event: Event) -> str:
    match event:
        case Signal():
            return (
                f"{event.strategy_id}: {event.side} {event.symbol} at {fmt_e8(event.price_e8)}"
                f", move {event.move_bp} bp, volume {fmt_e8(event.volume_e8)}"
            )
        case RiskDecision():
            verdict = "approved" if event.approved else "rejected"
            detail = f" ({event.detail})" if event.detail else ""
            return f"{verdict} {event.side} {event.symbol}: {event.reason}{detail}"
        case Order():
            price = f" at {fmt_e8(event.price_e8)}" if event.price_e8 else ""
            reduce = " reduce-only" if event.reduce_only else ""
            return (
                f"{event.order_type} {event.side} {fmt_e8(event.qty_e8)} {event.symbol}{price}"
                f" (ref {fmt_e8(event.ref_price_e8)}){reduce}, client id {event.client_order_id}"
            )
        case Fill():
            return (
                f"{event.side} {fmt_e8(event.qty_e8)} {event.symbol} at {fmt_e8(event.price_e8)}"
                f" fee {fmt_e8(event.fee_e8)} on {event.venue}, order {event.order_status}"
                f" (cum {fmt_e8(event.cum_qty_e8)})"
            )
        case OrderUpdate():
            reason = f": {event.reason}" if event.reason else ""
            return f"{event.status} {event.symbol}, filled {fmt_e8(event.filled_qty_e8)}{reason}"
        case Alert():
            return f"{event.level} {event.code}: {event.message}"
        case EssChange():
            detail = f" ({event.detail})" if event.detail else ""
            return f"{event.state} by {event.actor}: {event.reason}{detail}"
        case CancelOrders():
            scope = event.symbol or "every symbol"
            return f"cancel open orders of {scope}: {event.reason}"
    return type(event).__name__
