"""What a fault, an action and a probe look like to the runner.

A ``ScenarioFault`` is made for each use in the scenario before anything starts, so it can
add to the ``Plan`` (a market shape is baked into the market; a network fault needs
its link routed through the proxy). At its time it is ``apply``-ed; its ``undo`` is
registered at once and runs when its duration ends or at the end of the run, always.
``effect`` then says whether it demonstrably took effect: a fault that did not makes
the verdict ``unknown``, whatever else happened.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from cdb.chaos.history.clock import ScenarioClock
from cdb.chaos.history.recording import Effect, Recording
from cdb.chaos.scenario.params import Params
from cdb.chaos.targets.base import Plan, Target


class StepContext:
    """What one fault, action or probe can use.

    Args:
        key: the step's unique key (``crash``, ``kill#2``).
        at: when it runs (scenario seconds; the start for method activities).
        duration: how long a fault is held, if given.
    """

    def __init__(self, *, key: str, at: float, duration: float | None, rng: random.Random,
                 plan: Plan) -> None:
        self.key = key
        self.at = at
        self.duration = duration
        self.rng = rng
        self.plan = plan
        self._target: Target | None = None
        self.applied_at: float | None = None

    def bind(self, target: Target) -> None:
        self._target = target

    @property
    def target(self) -> Target:
        if self._target is None:
            raise RuntimeError(f"{self.key}: the pipeline has not started")
        return self._target

    @property
    def clock(self) -> ScenarioClock:
        return self.target.clock

    @property
    def recording(self) -> Recording:
        return self.target.recording

    @property
    def mode(self) -> str:
        return self.plan.mode


class ScenarioFault:
    """Base of faults. Subclasses implement ``apply`` and usually ``undo``/``effect``.

    ``effect_after``: seconds after ``apply`` at which ``effect`` is judged when the
    step has no duration (a market shape is visible only once it has played out).
    """

    effect_after: ClassVar[float] = 0.0

    def __init__(self, ctx: StepContext, params: dict[str, Any]) -> None:
        self.ctx = ctx
        self.p = Params(params)
        self.evidence: list[str] = []

    def plan(self, plan: Plan) -> None:
        """Add what the pipeline needs before it starts (default: nothing)."""

    def effect_delay(self) -> float:
        return self.effect_after

    async def apply(self) -> Any:
        raise NotImplementedError

    async def undo(self) -> Any:
        return None

    async def effect(self) -> Effect:
        """Whether the fault took effect; the default trusts a clean ``apply``."""
        return Effect(took_effect=True, evidence="; ".join(self.evidence) or "applied")

