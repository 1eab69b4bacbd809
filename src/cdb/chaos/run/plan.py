"""Planning a run: every provider made for its place, the target's ``Plan``, the end of
the timeline.

Faults add to the plan as they are made (market shapes, proxied links); a provider the
mode does not allow is noted here, so the run can end unknown instead of testing nothing.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgspec

from cdb.chaos.faults.base import ScenarioFault, StepContext
from cdb.chaos.scenario.model import Provider, Scenario
from cdb.chaos.scenario.registry import ACTIONS, FAULTS, PROBES, Unavailable
from cdb.chaos.scenario.timeline import Step, end_of
from cdb.chaos.targets.base import Plan

_MARGIN_S = 60.0
"""Market seconds generated past the end of the timeline and the settle time."""


class Use(msgspec.Struct, kw_only=True):
    """A provider as used at one place, with what it needs."""

    key: str
    provider: Provider
    kind: str
    ctx: StepContext
    impl: Any


class RunPlan:
    """The plan of one run, made from the scenario before anything starts.

    Args:
        scenario: a validated scenario.
        steps: its expanded timeline.
        draft: the target's plan, without its market duration yet (faults add to it).
    """

    def __init__(self, scenario: Scenario, steps: list[Step], draft: Plan) -> None:
        self.scenario = scenario
        self.steps = steps
        self.plan = draft
        self.mode, self.seed = draft.mode, draft.seed
        self.uses: list[Use] = []
        self.step_uses: dict[str, Use] = {}
        self.unavailable: list[str] = []
        """Why some providers cannot run here (the run appends those found later)."""
        self._make()
        self.builtin = StepContext(key="__builtin__", at=0.0, duration=None,
                                   rng=random.Random(self.seed), plan=draft)
        """The context of the built-in samplers (health, lag)."""
        for use in self.uses:
            if isinstance(use.impl, ScenarioFault):
                try:
                    use.impl.plan(draft)
                except Unavailable as exc:
                    self.unavailable.append(f"{use.key}: {exc.reason}")
        delays = [s.at + (s.duration if s.duration is not None else
                          effect_delay(self.step_uses[s.key])) for s in steps]
        self.t_end: float = scenario.duration if scenario.duration is not None else max(
            [end_of(steps), *delays, 0.0])
        draft.market_duration = (scenario.pipeline.market.warmup + self.t_end + scenario.settle
                                 + _MARGIN_S)

    def _make(self) -> None:
        sc = self.scenario
        for step in self.steps:
            self.step_uses[step.key] = self._use(step.key, step.provider, step.kind, step.at,
                                                 step.duration)
        for i, act in enumerate((*sc.method, *sc.rollbacks)):
            self._use(f"{act.name}@{i}", act.provider, act.type, 0.0, act.duration)
        if sc.steady_state:
            for act in sc.steady_state.probes:
                self._use(f"steady:{act.name}", act.provider, "probe", 0.0, None)
        for probe in sc.probes:
            self._use(f"sampled:{probe.name}", probe.provider, "probe", 0.0, None)
        for exp in sc.expect:
            if exp.probe is not None:
                self._use(f"expect:{exp.name}", exp.probe, "probe", 0.0, None)

    def _use(self, key: str, provider: Provider, kind: str, at: float,
             duration: float | None) -> Use:
        registry = {"fault": FAULTS, "action": ACTIONS, "probe": PROBES}[kind]
        if kind == "action" and provider.type in FAULTS:
            registry, kind = FAULTS, "fault"
        entry = registry.get(provider.type)
        ctx = StepContext(key=key, at=at, duration=duration,
                          rng=random.Random(f"{self.seed}:{key}"), plan=self.plan)
        impl = entry.impl(ctx, dict(provider.params)) if kind == "fault" else entry.impl
        if self.mode not in entry.modes:
            self.unavailable.append(f"{key}: {entry.kind} {entry.name!r} needs "
                                    f"{' or '.join(entry.modes)} mode")
        use = Use(key=key, provider=provider, kind=kind, ctx=ctx, impl=impl)
        self.uses.append(use)
        return use

    def find(self, key: str) -> Use:
        return next(u for u in self.uses if u.key == key)

    def describe(self, namespace: str) -> list[str]:
        """The plan for people (``--dry-run``)."""
        sc, plan = self.scenario, self.plan
        lines = [f"scenario: {sc.title} ({sc.file})",
                 f"mode {self.mode}, seed {self.seed}, namespace {namespace}",
                 f"market: {', '.join(sc.pipeline.market.symbols)}, warm-up "
                 f"{plan.warmup:g}s, {plan.market_duration:g}s generated"]
        for shape in plan.shapes:
            lines.append(f"  shape {shape.kind} {shape.symbol} at market {shape.at_s:g}s "
                         f"over {shape.duration_s:g}s ({shape.magnitude_pct:g}%)")
        if plan.proxies:
            lines.append("proxied links: " + ", ".join(f"{s}->{d}" for s, d in
                                                       sorted(plan.proxies)))
        lines.append(f"timeline (ends t={self.t_end:g}s, then {sc.settle:g}s to settle):")
        for step in self.steps:
            held = f" for {step.duration:g}s" if step.duration is not None else ""
            lines.append(f"  t={step.at:>7.2f}s  {step.kind:<6} {step.key}: "
                         f"{step.provider.type}{held}")
        for act in sc.method:
            lines.append(f"  method: {act.type} {act.name}: {act.provider.type}")
        lines.append("invariants: " + (", ".join(i.type for i in sc.invariants) or "none"))
        lines.append(f"expectations: {len(sc.expect)}, measurements: {len(sc.measurements)}")
        for reason in self.unavailable:
            lines.append(f"unavailable: {reason}")
        return lines


def effect_delay(use: Use) -> float:
    """How long after applying a fault its effect is checked (0 for anything else)."""
    return use.impl.effect_delay() if isinstance(use.impl, ScenarioFault) else 0.0


def draft_plan(scenario: Scenario, mode: str, seed: int, namespace: str, report_dir: Path,
               redis_url: str | None, postgres_url: str | None,
               toxiproxy_url: str | None) -> Plan:
    """The target's plan before the faults add to it."""
    return Plan(scenario=scenario, mode=mode, seed=seed, namespace=namespace,
                report_dir=report_dir, market_duration=0.0, redis_url=redis_url,
                postgres_url=postgres_url, toxiproxy_url=toxiproxy_url)
