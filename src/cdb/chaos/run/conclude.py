"""Concluding a run: fault effects, invariants, expectations and measurements as assertions.

What the run itself noted (a failed undo, a step cut short, something unavailable) is
kept; a run that was interrupted turns the misses that had no time to happen unknown.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from cdb.chaos.checks import measure
from cdb.chaos.checks.context import CheckContext, shortfall
from cdb.chaos.checks.verdict import Assertion
from cdb.chaos.history.recording import Recording
from cdb.chaos.run.plan import RunPlan
from cdb.chaos.scenario.params import Params
from cdb.chaos.scenario.registry import INVARIANTS
from cdb.chaos.targets.base import scenario_env
from cdb.config import load_settings


class Ran(msgspec.Struct, frozen=True, kw_only=True):
    """How the run went, as the checks need it."""

    applied: dict[str, float]
    ended: dict[str, float]
    finished: bool
    end_values: dict[str, tuple[Any, str | None]]


def assertions(planned: RunPlan, recording: Recording | None, noted: list[Assertion],
               ran: Ran, error: str | None, interrupted: bool) -> list[Assertion]:
    """Every assertion of the run: those it noted, why it is unknown, then the checks."""
    out = list(noted)
    for reason in dict.fromkeys(planned.unavailable):
        out.append(Assertion(name="unavailable", category="run", status="unknown",
                             detail=reason))
    if interrupted:
        out.append(Assertion(name="run", category="run", status="unknown",
                             detail="interrupted (Ctrl-C or SIGTERM)"))
    if error is not None:
        out.append(Assertion(name="run", category="run", status="unknown",
                             detail=f"the run failed: {error}"))
    if recording is not None:
        evaluated = _evaluate(planned, recording, ran)
        if interrupted:
            # Cut short, the consequences a scenario expects had no time to happen:
            # such a miss proves nothing (a broken invariant still fails the run).
            evaluated = [msgspec.structs.replace(
                a, status="unknown", detail=f"interrupted before the end: {a.detail}")
                if a.status == "fail" and a.category in ("expectation", "measurement")
                else a for a in evaluated]
        out += evaluated
    return out


def _check_context(planned: RunPlan, recording: Recording, ran: Ran) -> CheckContext:
    plan = planned.plan
    env = {**os.environ, **scenario_env(planned.scenario, planned.seed), **plan.env}
    limits = load_settings(environ=env).risk_limits()
    windows = [(k, t, ran.ended.get(k, planned.t_end)) for k, t in ran.applied.items()]
    return CheckContext(
        scenario=planned.scenario, plan=plan, recording=recording, steps=planned.steps,
        ended=ran.ended, t_end=planned.t_end, finished=ran.finished, limits=limits,
        fault_windows=windows)


def _activity_checks(planned: RunPlan, recording: Recording,
                     ctx: CheckContext) -> list[Assertion]:
    """One per fault that declares ``requires_activity``: whether that activity
    was there when it was applied (else it tested nothing: unknown)."""
    out: list[Assertion] = []
    for act in recording.activities:
        if act.kind != "fault" or act.phase in ("rollback", "undo"):
            continue
        use = next((u for u in planned.uses if u.key == act.key), None)
        needs = use.provider.params.get("requires_activity") if use else None
        if not needs:
            continue
        counts = {**ctx.activity_before(act.t_start),
                  **(act.effect.counts if act.effect is not None else {})}
        seen = {k: counts.get(k, 0) for k in needs}
        short = shortfall(seen, needs)
        shown = ", ".join(f"{n} {k}" for k, n in seen.items())
        out.append(Assertion(
            name=f"{act.key} had the activity it needs", category="fault-effect",
            status="unknown" if short else "pass", examined=seen,
            detail=(f"at t={act.t_start:g}s: {short}" if short else
                    f"at t={act.t_start:g}s: {shown}")))
    return out


def _evaluate(planned: RunPlan, recording: Recording, ran: Ran) -> list[Assertion]:
    scenario = planned.scenario
    out: list[Assertion] = []
    for act in recording.activities:
        if act.kind != "fault" or act.phase == "rollback":
            continue
        if act.status == "unavailable":
            continue  # reported as unavailable
        effect = act.effect
        if effect is None:
            status, detail = "unknown", act.error or "the fault was not checked"
        else:
            status = "pass" if effect.took_effect else "unknown"
            detail = effect.evidence
        out.append(Assertion(name=f"{act.key} took effect", category="fault-effect",
                             status=status, detail=detail))  # type: ignore[arg-type]
    ctx = _check_context(planned, recording, ran)
    out += _activity_checks(planned, recording, ctx)
    for spec in scenario.invariants:
        fn = INVARIANTS.get(spec.type).impl
        try:
            result = fn(ctx, Params(dict(spec.params)))
        except Exception as exc:
            result = Assertion(name=spec.type, category="invariant", status="unknown",
                               detail=f"the check failed: {exc!r}")
        out.append(msgspec.structs.replace(result, path=spec.path))
    for exp in scenario.expect:
        out.append(measure.expect(exp, ctx, ran.end_values.get(exp.name)))
    for m in scenario.measurements:
        out.append(measure.measure(m, ctx))
    return out
