"""Assertions and the verdict rules: pass, fail or unknown.

Every check of a run is an ``Assertion`` with a category. The rules:

1. An invariant or a steady-state check that fails makes the run **fail**: those
   must hold whatever the faults did, so a violation is the pipeline's, never the
   coordinator's.
2. Otherwise, a fault that demonstrably did not take effect (or whose effect could
   not be checked) makes the run **unknown**: the scenario's expectations are about
   consequences of that fault and prove nothing without it.
3. Otherwise an expectation or measurement that fails makes it **fail**.
4. Otherwise anything unknown (a feature not available, a probe that could not run,
   an interrupted run, a check that had nothing to examine) makes it **unknown**; a
   run that checked nothing is unknown.

Vacuity is a verdict: every invariant and measurement says what it examined
(``examined``: orders, fills, trips, lag episodes...), and one that examined nothing,
or less than the scenario declares it needs, is ``unknown`` with that reason, never
``pass``.
5. Otherwise it **passes**.

Exit codes: 0 pass, 1 fail, 2 unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

import msgspec

Status = Literal["pass", "fail", "unknown"]
Category = Literal[
    "steady-state", "invariant", "fault-effect", "expectation", "measurement", "run"
]
HARD: Final = frozenset({"steady-state", "invariant"})
EXIT_CODES: Final[dict[Status, int]] = {"pass": 0, "fail": 1, "unknown": 2}


class Assertion(msgspec.Struct, frozen=True, kw_only=True):
    """One check of a run and its outcome."""

    name: str
    category: Category
    status: Status
    detail: str = ""
    measured: float | None = None
    """Seconds, for measurements."""
    bound: float | None = None
    path: str = ""
    evidence: tuple[str, ...] = ()
    examined: dict[str, int] = msgspec.field(default_factory=dict)
    """What the check looked at, by what it counts (``orders``, ``trips``...)."""


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    status: Status
    reasons: tuple[str, ...]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]


def _label(a: Assertion) -> str:
    return f"{a.category} {a.name!r}" + (f": {a.detail}" if a.detail else "")


def decide(assertions: Iterable[Assertion]) -> Verdict:
    """Apply the rules of the module docstring."""
    items = list(assertions)
    hard_fails = [a for a in items if a.category in HARD and a.status == "fail"]
    if hard_fails:
        return Verdict(status="fail", reasons=tuple(_label(a) for a in hard_fails))
    ineffective = [a for a in items if a.category == "fault-effect" and a.status != "pass"]
    if ineffective:
        reasons = [f"fault did not demonstrably take effect: {_label(a)}" for a in ineffective]
        reasons += [_label(a) for a in items if a.category == "run" and a.status == "unknown"]
        soft = [a for a in items if a.status == "fail"]
        if soft:
            reasons.append(f"{len(soft)} expectation(s) failed but prove nothing without "
                           "their fault: " + ", ".join(repr(a.name) for a in soft))
        return Verdict(status="unknown", reasons=tuple(reasons))
    fails = [a for a in items if a.status == "fail"]
    if fails:
        return Verdict(status="fail", reasons=tuple(_label(a) for a in fails))
    unknown = [a for a in items if a.status == "unknown"]
    if unknown:
        return Verdict(status="unknown", reasons=tuple(_label(a) for a in unknown))
    if not items:
        return Verdict(status="unknown", reasons=("the scenario checked nothing",))
    return Verdict(status="pass", reasons=())
