"""What invariants, expectations and measurements are computed from: the recording,
the plan and the timeline as it actually ran."""

from __future__ import annotations

from typing import Any

import msgspec

from cdb.chaos.history.recording import Recording
from cdb.chaos.scenario.model import Scenario
from cdb.chaos.scenario.timeline import Step
from cdb.chaos.targets.base import Plan
from cdb.risk.limits import RiskLimits


class CheckContext:
    """Everything a check may look at.

    Args:
        ended: actual end (undo) time of each step by key.
        t_end: scenario time when the timeline (and its undos) ended.
        finished: whether the run reached its end (the database was recorded).
        limits: the risk limits the pipeline ran with.
    """

    def __init__(
        self, *, scenario: Scenario, plan: Plan, recording: Recording, steps: list[Step],
        ended: dict[str, float], t_end: float, finished: bool, limits: RiskLimits,
        fault_windows: list[tuple[str, float, float]],
    ) -> None:
        self.scenario = scenario
        self.plan = plan
        self.recording = recording
        self.steps = steps
        self.ended = ended
        self.t_end = t_end
        self.finished = finished
        self.limits = limits
        self.fault_windows = fault_windows
        """(key, start, end) of every fault that was applied."""

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Rows of a table from the database snapshot (empty without one)."""
        return (self.recording.db or {}).get(table, [])

    def events(self, kind: str) -> list[dict[str, Any]]:
        """Events of ``kind`` the coordinator recorded on the bus, as dicts with ``t``."""
        return [{"t": r.t, **msgspec.structs.asdict(r.event)} for r in self.recording.of(kind)]

    def union(self, table: str, kind: str) -> list[dict[str, Any]]:
        """Database rows and recorded events of one kind, one per id (database first)."""
        out = {row["id"]: row for row in self.rows(table)}
        for event in self.events(kind):
            out.setdefault(event["id"], event)
        return sorted(out.values(), key=lambda r: (r["ts"], r["id"]))

    def t_of(self, ts: int) -> float:
        return self.recording.t_of(ts)

    def last_fault_end(self) -> float | None:
        return max((end for _, _, end in self.fault_windows), default=None)

    def activity_before(self, t: float) -> dict[str, int]:
        """What had happened by scenario time ``t``: trades, signals, orders, fills and
        rejections so far, and the orders resting (neither filled nor ended) at ``t``."""
        before = [p for points in self.recording.prices.values() for p in points if p.t < t]
        orders = [o for o in self.union("orders", "order") if self.t_of(o["ts"]) < t]
        fills = [f for f in self.union("fills", "fill") if self.t_of(f["ts"]) < t]
        ended = {f["order_id"] for f in fills if f["order_status"] == "FILLED"}
        ended |= {u["order_id"] for u in self.union("order_updates", "order_update")
                  if self.t_of(u["ts"]) < t and u["status"] in FINAL}
        decisions = self.union("risk_decisions", "risk_decision")
        return {
            "trades": sum(p.trades for p in before),
            "signals": sum(1 for s in self.union("signals", "signal") if self.t_of(s["ts"]) < t),
            "orders": len(orders), "fills": len(fills),
            "rejections": sum(1 for d in decisions if self.t_of(d["ts"]) < t),
            "open_orders": sum(1 for o in orders if o["id"] not in ended),
        }


FINAL = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})


def shortfall(examined: dict[str, int], needs: dict[str, int]) -> str:
    """Why ``examined`` does not meet ``needs`` (each a minimum count), or ``""``."""
    short = [f"{examined.get(k, 0)} {k} (needs {n})" for k, n in needs.items()
             if examined.get(k, 0) < n]
    return ("examined too little to prove anything: " + ", ".join(short)) if short else ""
