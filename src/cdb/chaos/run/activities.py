"""Performing a run's activities: faults, actions and probes, recorded as they happen.

A fault registers its undo the moment it is applied; an undo that fails, an action
that fails and a probe outside its tolerance become assertions of the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

from cdb.chaos.checks import tolerance
from cdb.chaos.checks.verdict import Assertion
from cdb.chaos.faults.base import ScenarioFault
from cdb.chaos.history.clock import ClockClosed
from cdb.chaos.history.recording import ActivityRecord, Effect, now_iso
from cdb.chaos.run.plan import RunPlan, Use
from cdb.chaos.run.sampling import probe_value
from cdb.chaos.run.undo import Undo, UndoStack
from cdb.chaos.scenario.params import Params
from cdb.chaos.scenario.registry import Unavailable
from cdb.chaos.scenario.timeline import Step
from cdb.chaos.targets.base import Target


def _shown(value: Any) -> str:
    """A probe output for a one-line detail: a mapping by its status or state."""
    if isinstance(value, dict):
        for key in ("status", "state"):
            if key in value:
                return repr(value[key])
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."



class Activities:
    """Runs and records the activities of one run against its target (set once started).

    Args:
        log: where progress lines go.
        unavailable: the run's list of what could not run (appended to).
    """

    def __init__(self, log: Callable[[str], None], unavailable: list[str]) -> None:
        self._log = log
        self.unavailable = unavailable
        self.target: Target | None = None
        self.undo = UndoStack()
        self.assertions: list[Assertion] = []
        """What the activities themselves showed (expectations, failed undos, overruns)."""
        self.applied: dict[str, float] = {}
        """Step key -> scenario time its fault was applied."""
        self.ended: dict[str, float] = {}
        """Step key -> scenario time its fault was undone."""
        self.active: dict[str, str] = {}
        """Faults in force: step key -> type."""
        self.current = ""
        """The activity last started, for people."""

    async def step(self, planned: RunPlan, step: Step) -> None:
        """One step of the timeline, at its time."""
        use = planned.step_uses[step.key]
        await use.ctx.clock.sleep_until(step.at)
        await self.run(use, "timeline", step.name, step.duration, step.tolerance)

    async def method(self, planned: RunPlan, background: list[asyncio.Task[Any]]) -> None:
        """The method's activities in sequence, with their pauses; those run in the
        background are added to ``background``."""
        assert self.target is not None
        clock = self.target.clock
        for i, act in enumerate(planned.scenario.method):
            use = planned.find(f"{act.name}@{i}")
            await clock.sleep_until(clock.now() + act.pause_before)
            use.ctx.at = clock.now()
            run = self.run(use, "method", act.name, act.duration,
                           act.tolerance if act.has_tolerance else None)
            if act.background:
                background.append(clock.spawn(run, name=f"method.{act.name}"))
            else:
                await run
            await clock.sleep_until(clock.now() + act.pause_after)

    def open(self, use: Use, phase: str, name: str) -> ActivityRecord:
        assert self.target is not None
        return self.target.recording.add(ActivityRecord(
            key=use.key, name=name, phase=phase, kind=use.kind, type=use.provider.type,
            params=dict(use.provider.params), t_start=round(self.target.clock.now(), 6),
            started=now_iso()))

    def close(self, act: ActivityRecord) -> None:
        assert self.target is not None
        act.t_end = round(self.target.clock.now(), 6)
        act.ended = now_iso()

    async def run(self, use: Use, phase: str, name: str, duration: float | None,
                        tol: Any = None) -> None:
        """Run one fault, action or probe, record it, register undos."""
        assert self.target is not None
        clock = self.target.clock
        act = self.open(use, phase, name)
        self.current = f"{use.kind} {use.key} ({use.provider.type})"
        self._log(f"t={clock.now():7.2f}s {use.kind} {use.key}: {use.provider.type}")
        try:
            if isinstance(use.impl, ScenarioFault):
                await self._fault(use, act, phase, duration)
                return
            act.output = await use.impl(use.ctx, Params(dict(use.provider.params)))
            if use.kind == "probe" and tol is not None:
                act.tolerance_met = tolerance.met(tol, act.output)
                self.assertions.append(Assertion(
                    name=use.key, category="expectation",
                    status="pass" if act.tolerance_met else "fail",
                    detail=f"{_shown(act.output)} {tolerance.describe(tol)}",
                    path=use.provider.path))
        except Unavailable as exc:
            act.status, act.error = "unavailable", exc.reason
            self.unavailable.append(f"{use.key}: {exc.reason}")
        except (ClockClosed, asyncio.CancelledError):
            act.status, act.error = "failed", "interrupted"
            raise
        except Exception as exc:
            act.status, act.error = "failed", f"{type(exc).__name__}: {exc}"
            if use.kind == "probe" and tol is not None:
                self.assertions.append(Assertion(
                    name=use.key, category="expectation", status="unknown",
                    detail=f"the probe failed: {act.error}", path=use.provider.path))
            elif use.kind == "action":
                # What the scenario did is part of what it claims: an action that did
                # not do what it says (a reset refused, or never applied) fails it.
                self.assertions.append(Assertion(
                    name=use.key, category="expectation", status="fail",
                    detail=f"the action failed: {act.error}", path=use.provider.path))
        finally:
            if act.t_end is None:
                self.close(act)

    async def _fault(self, use: Use, act: ActivityRecord, phase: str,
                     duration: float | None) -> None:
        assert self.target is not None
        assert isinstance(use.impl, ScenarioFault)
        clock, fault = self.target.clock, use.impl
        start = clock.now()
        try:
            act.output = await fault.apply()
        except Exception as exc:
            if not isinstance(exc, Unavailable):
                act.effect = Effect(took_effect=False, evidence=f"apply failed: {exc!r}")
            raise
        self.applied[use.key] = start
        if phase == "rollback":
            return  # a rollback is an action: nothing to undo
        undo = self.undo.push(use.key, fault.undo)
        undo.on_done = self._undone
        self.active[use.key] = use.provider.type
        wait = duration if duration is not None else fault.effect_delay()
        await clock.sleep_until(start + wait)
        try:
            act.effect = await fault.effect()
        except Exception as exc:
            act.effect = Effect(took_effect=None, evidence=f"effect check failed: {exc!r}")
        self._log(f"t={clock.now():7.2f}s effect of {use.key}: "
                          f"{act.effect.took_effect} ({act.effect.evidence})")
        if duration is not None:
            await undo.run()

    def _undone(self, undo: Undo) -> None:
        assert self.target is not None
        t = round(self.target.clock.now(), 6)
        self.ended[undo.key] = t
        self.active.pop(undo.key, None)
        status: Literal["failed", "succeeded"] = (
            "failed" if undo.error is not None else "succeeded")
        self.target.recording.add(ActivityRecord(
            key=undo.key, name=f"undo {undo.key}", phase="undo", kind="undo", type="undo",
            params={}, t_start=t, t_end=t, started=now_iso(), ended=now_iso(), status=status,
            output=repr(undo.output) if undo.output is not None else None,
            error=repr(undo.error) if undo.error is not None else None))
        if undo.error is not None:
            self.assertions.append(Assertion(
                name=f"undo {undo.key}", category="run", status="unknown",
                detail=f"the undo failed, the pipeline may still be faulty: {undo.error!r}"))

    async def undo_all(self, why: str) -> None:
        pending = self.undo.pending
        if pending:
            self._log(f"undoing {len(pending)} fault(s) in reverse order ({why})")
            await self.undo.run_all()

    async def steady_state(self, planned: RunPlan, phase: str) -> bool:
        """Probe the steady-state hypothesis; whether every probe met its tolerance."""
        hypothesis = planned.scenario.steady_state
        if hypothesis is None:
            return True
        ok = True
        for activity in hypothesis.probes:
            use = planned.find(f"steady:{activity.name}")
            act = self.open(use, f"steady-state-{phase}", activity.name)
            value, error = await probe_value(use)
            self.close(act)
            act.output = value
            if error is not None:
                act.status, act.error = "failed", error
                status, detail = "unknown", f"the probe could not run: {error}"
                ok = False
            else:
                try:
                    met = tolerance.met(activity.tolerance, value)
                    detail = f"{_shown(value)} {tolerance.describe(activity.tolerance)}"
                except tolerance.ToleranceError as exc:
                    met, detail = False, str(exc)
                act.tolerance_met = met
                status = "pass" if met else "fail"
                ok = ok and met
            self.assertions.append(Assertion(
                name=f"{phase}: {activity.name}", category="steady-state", status=status,  # type: ignore[arg-type]
                detail=detail, path=activity.path))
        return ok
