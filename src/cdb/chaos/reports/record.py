"""What a run leaves: its ``Outcome``, and the frozen ``RunRecord`` its reports are made from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from cdb.chaos.checks.verdict import Assertion, Verdict
from cdb.chaos.history.recording import Recording
from cdb.chaos.scenario.model import Scenario
from cdb.chaos.scenario.timeline import Step
from cdb.chaos.targets.base import Plan


class Outcome(msgspec.Struct, kw_only=True):
    """What a run concluded, and where its reports are."""

    verdict: Verdict
    assertions: list[Assertion]
    seed: int
    mode: str
    namespace: str
    report_dir: str
    reports: dict[str, str] = msgspec.field(default_factory=dict)
    interrupted: bool = False
    error: str | None = None
    started: str = ""
    ended: str = ""
    duration_s: float = 0.0
    http_url: str | None = None
    """Where the coordinator served /health and /metrics during the run."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunRecord:
    """What the reports of a run are written from, fixed once the run has concluded."""

    scenario: Scenario
    plan: Plan
    steps: tuple[Step, ...]
    t_end: float
    report_dir: Path
    phases: dict[str, float]
    """Wall seconds spent in each phase."""
    left_behind: tuple[str, ...]
    """Tasks that did not end when cancelled."""
    applied: dict[str, float]
    """Step key -> scenario time its fault was applied."""
    undone: dict[str, float]
    """Step key -> scenario time its fault was undone."""
    summary: dict[str, Any]
    """The target's own summary (``Target.summary``)."""
    recording: Recording | None
    """None when no target was started."""
