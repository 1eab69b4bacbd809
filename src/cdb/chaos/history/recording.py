"""What a run observed: events on the bus, prices, probe samples, activities, and the
database, ledger and streams at the end.

Everything is on one time axis, scenario seconds (``t``; negative during warm-up),
mapped from event time by the target (``t_of``). Invariants and measurements are
computed from this recording alone, so the JSON journal that holds it lets anyone
check a verdict after the fact.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

from cdb.bus.keys import DEAD_LETTER_SUFFIX
from cdb.events import (
    Alert,
    AnyEvent,
    EssChange,
    Fill,
    Order,
    OrderUpdate,
    RiskDecision,
    Signal,
    Trade,
)

KIND_OF: Final[dict[type[Any], str]] = {
    Signal: "signal", Order: "order", Fill: "fill", RiskDecision: "risk_decision",
    OrderUpdate: "order_update", Alert: "alert", EssChange: "ess_change",
}
PRICE_BUCKET_S: Final = 0.5
Status = Literal["succeeded", "failed", "unavailable", "skipped"]


def _tag(event: AnyEvent) -> str:
    """The wire tag of an event type this module does not know yet (``cancel_orders``)."""
    tag = type(event).__struct_config__.tag
    return str(tag) if tag is not None else type(event).__name__.lower()


def now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds")


class Effect(msgspec.Struct, frozen=True, kw_only=True):
    """Whether a fault demonstrably took effect (None: could not tell)."""

    took_effect: bool | None
    evidence: str
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    """What the fault met, by name (``in_flight``: events a killed service held or was
    owed), for the scenario's ``requires_activity``."""


class Sample(msgspec.Struct, frozen=True, kw_only=True):
    t: float
    value: Any = None
    error: str | None = None


class ActivityRecord(msgspec.Struct, kw_only=True):
    """One thing the runner did (a fault applied or undone, an action, a probe)."""

    key: str
    name: str
    phase: str
    """timeline, method, steady-state-before, steady-state-after, undo, rollback."""
    kind: str
    type: str
    params: dict[str, Any]
    t_start: float
    t_end: float | None = None
    started: str = ""
    ended: str = ""
    status: Status = "succeeded"
    output: Any = None
    error: str | None = None
    effect: Effect | None = None
    tolerance_met: bool | None = None


class PricePoint(msgspec.Struct, array_like=True):
    """Trades of one symbol within one bucket of ``PRICE_BUCKET_S`` seconds (e8)."""

    t: float
    open: int
    low: int
    high: int
    close: int
    trades: int


class Recorded(msgspec.Struct, frozen=True):
    """An event as the coordinator saw it on the bus, at scenario time ``t``."""

    t: float
    topic: str
    event: AnyEvent


class Recording:
    """Everything observed during one run.

    Args:
        t_of: maps an event time (ns) to scenario seconds.
    """

    def __init__(self, t_of: Callable[[int], float] | None = None) -> None:
        self.t_of: Callable[[int], float] = t_of or (lambda ts: ts / 1e9)
        self.sampling_closed = False
        self.events: dict[str, list[Recorded]] = {k: [] for k in KIND_OF.values()}
        self.prices: dict[str, list[PricePoint]] = {}
        self.last_trade: dict[str, Trade] = {}
        self.trades = 0
        self.published: Counter[str] = Counter()
        """Entries seen per stream (duplicates included)."""
        self.ids: dict[str, Counter[str]] = {}
        self.dead_letters: Counter[str] = Counter()
        self.dead_letter_ids: set[str] = set()
        self.trade_ids: dict[str, set[int]] = {}
        """Exchange trade ids seen per symbol: a gap is a lost trade."""
        self.samples: dict[str, list[Sample]] = {}
        self.activities: list[ActivityRecord] = []
        self.notes: list[str] = []
        self.db: dict[str, list[dict[str, Any]]] | None = None
        self.ledger: list[dict[str, Any]] | None = None
        self.ledger_source = ""
        self.ledger_blind: list[tuple[int, int]] = []
        """Event-time spans (ns) whose executions the ledger may lack (an execution
        process killed before its ledger was last read)."""
        self.streams: dict[str, Any] | None = None
        self.env: dict[str, str] = {}
        self.started_wall = time.monotonic()

    # -- events ------------------------------------------------------------------------

    def on_events(self, topic: str, events: Iterable[AnyEvent]) -> None:
        """Record events read from ``topic`` (dead-letter topics are counted)."""
        if topic.endswith(DEAD_LETTER_SUFFIX):
            base = topic[: -len(DEAD_LETTER_SUFFIX)]
            for event in events:
                self.dead_letters[base] += 1
                self.dead_letter_ids.add(event.id)
            return
        ids = self.ids.setdefault(topic, Counter())
        for event in events:
            self.published[topic] += 1
            ids[event.id] += 1
            if isinstance(event, Trade):
                self._trade(event)
                continue
            kind = KIND_OF.get(type(event)) or _tag(event)
            self.events.setdefault(kind, []).append(Recorded(self.t_of(event.ts), topic, event))

    def _trade(self, trade: Trade) -> None:
        self.trades += 1
        self.trade_ids.setdefault(trade.symbol, set()).add(trade.trade_id)
        self.last_trade[trade.symbol] = trade
        t = self.t_of(trade.ts)
        bucket = (t // PRICE_BUCKET_S) * PRICE_BUCKET_S
        points = self.prices.setdefault(trade.symbol, [])
        price = trade.price_e8
        if points and points[-1].t == bucket:
            p = points[-1]
            p.low = min(p.low, price)
            p.high = max(p.high, price)
            p.close = price
            p.trades += 1
        else:
            points.append(PricePoint(bucket, price, price, price, price, 1))

    def missing_trades(self) -> dict[str, int]:
        """Per symbol, trade ids missing between the first and the last seen."""
        return {s: max(ids) - min(ids) + 1 - len(ids) for s, ids in self.trade_ids.items()
                if ids and max(ids) - min(ids) + 1 > len(ids)}

    def of(self, kind: str) -> list[Recorded]:
        return self.events.get(kind, [])

    # -- samples and activities --------------------------------------------------------

    def sample(self, name: str, t: float, value: Any = None, error: str | None = None) -> None:
        if self.sampling_closed:
            return  # a late answer (the pipeline is being stopped) says nothing of the run
        self.samples.setdefault(name, []).append(Sample(t=round(t, 6), value=value, error=error))

    def close_sampling(self) -> None:
        """No sample is recorded from now on: the observation window has ended."""
        self.sampling_closed = True

    def add(self, activity: ActivityRecord) -> ActivityRecord:
        self.activities.append(activity)
        return activity

    def note(self, text: str) -> None:
        self.notes.append(text)

    # -- output ------------------------------------------------------------------------

    def to_builtins(self, max_events: int = 20_000) -> dict[str, Any]:
        """The recording as JSON-ready data (events capped per kind)."""
        events = {
            kind: [
                {"t": round(r.t, 6), "topic": r.topic, **msgspec.to_builtins(r.event)}
                for r in recs[:max_events]
            ]
            for kind, recs in self.events.items()
        }
        return {
            "trades": self.trades,
            "events": events,
            "events_truncated": {k: len(v) for k, v in self.events.items() if len(v) > max_events},
            "stream_entries_seen": dict(self.published),
            "duplicate_ids_on_bus": {
                topic: sum(n - 1 for n in c.values() if n > 1) for topic, c in self.ids.items()
            },
            "dead_letters": dict(self.dead_letters),
            "trade_ids": {s: {"first": min(i), "last": max(i), "seen": len(i)}
                          for s, i in self.trade_ids.items() if i},
            "missing_trades": self.missing_trades(),
            "prices": {s: msgspec.to_builtins(p) for s, p in self.prices.items()},
            "samples": {k: msgspec.to_builtins(v) for k, v in self.samples.items()},
            "db": self.db,
            "ledger": self.ledger,
            "ledger_source": self.ledger_source,
            "ledger_blind": self.ledger_blind,
            "streams": self.streams,
            "notes": self.notes,
        }
