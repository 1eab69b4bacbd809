"""What invariants, expectations and measurements are computed from: the recording,
the plan and the timeline as it actually ran."""

from __future__ import annotations

from typing import Any

import msgspec

from cdb.chaos.journal import Recording
from cdb.chaos.model import Scenario
from cdb.chaos.targets.base import Plan
from cdb.chaos.timeline import Step
from cdb.risk.limits import RiskLimits


class CheckContext:
    """Everything a check may look at.

    Args:
        ended: actual end (undo) time of each step by key.
        t_end: scenario time when the timeline (and its undos) ended.
        finished: whether the run reached its end (the database was recorded).
        limits: the risk limits the pipeline ran with.
        missing: capabilities the run lacked (names).
    """

    def __init__(
        self, *, scenario: Scenario, plan: Plan, recording: Recording, steps: list[Step],
        ended: dict[str, float], t_end: float, finished: bool, limits: RiskLimits,
        missing: list[str], fault_windows: list[tuple[str, float, float]],
    ) -> None:
        self.scenario = scenario
        self.plan = plan
        self.recording = recording
        self.steps = steps
        self.ended = ended
        self.t_end = t_end
        self.finished = finished
        self.limits = limits
        self.missing = missing
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
