"""The runner: one scenario against one pipeline, from start to verdict.

The order of a run (Chaos Toolkit's, with a timeline):

1. plan: expand the timeline, make every fault (they add to the ``Plan``: market
   shapes, proxied links), check modes and required capabilities;
2. start the target and the samplers (health and lag always, the ESS when present,
   the scenario's probes), warm up until t = 0;
3. steady state before; if it does not hold, the faults are not injected;
4. the timeline and the method run concurrently; each fault registers its undo the
   moment it is applied and is undone when its duration ends;
5. everything still registered is undone in reverse order, then the rollbacks run;
   the pipeline is given ``settle`` seconds; steady state after;
6. the target finishes (market ends, pipeline drains, database recorded);
7. invariants, expectations, measurements and fault effects become assertions, and
   the verdict follows from them (``verdict``).

Undos run on every way out: a failing step, an exception, Ctrl-C (the run is then
``unknown`` and still reported). Whatever happens, ``outcome`` holds what is known.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec
import structlog

from cdb.chaos.checks import measure, tolerance
from cdb.chaos.checks.context import CheckContext, shortfall
from cdb.chaos.checks.verdict import Assertion, Verdict, decide
from cdb.chaos.faults.base import Fault, Params, StepContext
from cdb.chaos.run.clock import ClockClosed
from cdb.chaos.run.recording import Activity, Effect, now_iso
from cdb.chaos.run.undo import Undo, UndoStack
from cdb.chaos.scenario.model import Provider, Scenario
from cdb.chaos.scenario.registry import (
    ACTIONS,
    CAPABILITIES,
    FAULTS,
    INVARIANTS,
    PROBES,
    Unavailable,
)
from cdb.chaos.scenario.timeline import Step, end_of, expand
from cdb.chaos.targets.base import Plan, Target, new_namespace, scenario_env
from cdb.config import load_settings
from cdb.errors import InputError

_log = structlog.get_logger("cdb.chaos.run.runner")
_MARGIN_S = 60.0
_PROBE_TIMEOUT_S = 30.0
_CANCEL_S = 5.0
"""How long cancelled samplers and steps get to end."""
_OVERRUN_S = 30.0
"""A step still running this long after the end of the timeline is cancelled: one hung
fault must not hold the run (and its reports) forever."""


class Options(msgspec.Struct, frozen=True, kw_only=True):
    """How to run a scenario (the command line's flags)."""

    mode: str | None = None
    seed: int | None = None
    dry_run: bool = False
    report_dir: Path | None = None
    http_port: int | None = None
    """Serve the coordinator's /health and /metrics on this port while running."""
    redis_url: str | None = None
    """Distributed mode: use this Redis instead of starting one (shared, namespaced)."""
    postgres_url: str | None = None
    """Distributed mode: use this PostgreSQL instead of starting one (own schema)."""
    toxiproxy_url: str | None = None
    """Distributed mode: make the network faults' proxies on this Toxiproxy API."""
    allow_exec: bool = False
    """Run the file's process/python/http providers and env reads (``Scenario.executes``)."""
    run_anyway: bool = False
    """Run even when a required capability is missing (the verdict stays unknown at best);
    by default such a run ends unknown at once, without starting anything."""


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


class ProgressSink(Protocol):
    """Receives the live state of a run (the rich display implements it)."""

    def update(self, state: dict[str, Any]) -> None: ...

    def log(self, text: str) -> None: ...


class _Quiet:
    def update(self, state: dict[str, Any]) -> None:
        pass

    def log(self, text: str) -> None:
        pass


def _shown(value: Any) -> str:
    """A probe output for a one-line detail: a mapping by its status or state."""
    if isinstance(value, dict):
        for key in ("status", "state"):
            if key in value:
                return repr(value[key])
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


class _Use(msgspec.Struct, kw_only=True):
    """A provider as used at one place, with what it needs."""

    key: str
    provider: Provider
    kind: str
    ctx: StepContext
    impl: Any


class Runner:
    """Runs one scenario.

    Args:
        scenario: a validated scenario.
        options: mode, seed, report directory, dry run.
        progress: where live state goes.
        target_factory: builds the target (tests swap it); default by mode.
    """

    def __init__(self, scenario: Scenario, options: Options,
                 progress: ProgressSink | None = None,
                 target_factory: Callable[[Plan], Target] | None = None) -> None:
        self.scenario = scenario
        self.options = options
        self.progress: ProgressSink = progress or _Quiet()
        self.mode = options.mode or scenario.pipeline.mode
        if self.mode not in scenario.pipeline.modes:
            raise InputError(f"{scenario.file}: runs in {', '.join(scenario.pipeline.modes)} "
                             f"mode, not {self.mode} (pipeline.modes)")
        if scenario.executes and not (options.allow_exec or options.dry_run):
            raise InputError(f"{scenario.file}: {scenario.executes[0].what} "
                             f"({scenario.executes[0].path}); a scenario file is code: "
                             "read it, then run it with --allow-exec")
        self.seed = scenario.seed if options.seed is None else options.seed
        self.namespace = new_namespace()
        self.report_dir = options.report_dir or Path("cdb-reports") / Path(
            scenario.file).stem / self.namespace
        self.steps = expand(scenario.timeline)
        self._target_factory = target_factory
        self.target: Target | None = None
        self.undo = UndoStack()
        self.assertions: list[Assertion] = []
        self.unavailable: list[str] = []
        self.ended: dict[str, float] = {}
        self.applied: dict[str, float] = {}
        self.active: dict[str, str] = {}
        self.end_values: dict[str, tuple[Any, str | None]] = {}
        self._phase = "planning"
        self.phases: dict[str, float] = {}
        self._phase_since = time.monotonic()
        self.current = ""
        self.t_end = 0.0
        self.finished = False
        self.outcome: Outcome | None = None
        self._uses: list[_Use] = []
        self._step_uses: dict[str, _Use] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self.http_url: str | None = None
        self._api: Any = None
        self.left_behind: list[str] = []
        """Tasks that did not end when cancelled (named in the journal)."""
        self.plan = self._plan()

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, value: str) -> None:
        self._mark(value)

    def _mark(self, next_phase: str) -> None:
        """Close the current phase (its wall seconds go into ``phases``)."""
        now = time.monotonic()
        self.phases[self._phase] = round(self.phases.get(self._phase, 0.0) + now -
                                         self._phase_since, 3)
        self._phase, self._phase_since = next_phase, now

    # -- planning ----------------------------------------------------------------------

    def _use(self, key: str, provider: Provider, kind: str, at: float,
             duration: float | None) -> _Use:
        registry = {"fault": FAULTS, "action": ACTIONS, "probe": PROBES}[kind]
        if kind == "action" and provider.type in FAULTS:
            registry, kind = FAULTS, "fault"
        entry = registry.get(provider.type)
        ctx = StepContext(key=key, at=at, duration=duration,
                          rng=random.Random(f"{self.seed}:{key}"), plan=self._draft)
        impl = entry.impl(ctx, dict(provider.params)) if kind == "fault" else entry.impl
        if self.mode not in entry.modes:
            self.unavailable.append(f"{key}: {entry.kind} {entry.name!r} needs "
                                    f"{' or '.join(entry.modes)} mode")
        self.missing.update(r for r in entry.requires)
        use = _Use(key=key, provider=provider, kind=kind, ctx=ctx, impl=impl)
        self._uses.append(use)
        return use

    def _plan(self) -> Plan:
        sc = self.scenario
        self.missing: set[str] = set(sc.pipeline.requires)
        self._draft = Plan(scenario=sc, mode=self.mode, seed=self.seed, namespace=self.namespace,
                           report_dir=self.report_dir, market_duration=0.0,
                           redis_url=self.options.redis_url,
                           postgres_url=self.options.postgres_url,
                           toxiproxy_url=self.options.toxiproxy_url)
        for step in self.steps:
            self._step_uses[step.key] = self._use(step.key, step.provider, step.kind, step.at,
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
        self._builtin = StepContext(key="__builtin__", at=0.0, duration=None,
                                    rng=random.Random(self.seed), plan=self._draft)
        for use in self._uses:
            if isinstance(use.impl, Fault):
                try:
                    use.impl.plan(self._draft)
                except Unavailable as exc:
                    self.unavailable.append(f"{use.key}: {exc.reason}")
        delays = [s.at + (s.duration if s.duration is not None else
                          self._effect_delay(self._step_uses[s.key])) for s in self.steps]
        self.t_end = sc.duration if sc.duration is not None else max(
            [end_of(self.steps), *delays, 0.0])
        self._draft.market_duration = (sc.pipeline.market.warmup + self.t_end + sc.settle
                                       + _MARGIN_S)
        self.missing_reasons = CAPABILITIES.missing(sorted(self.missing))
        return self._draft

    def _find(self, key: str) -> _Use:
        return next(u for u in self._uses if u.key == key)

    @staticmethod
    def _effect_delay(use: _Use) -> float:
        return use.impl.effect_delay() if isinstance(use.impl, Fault) else 0.0

    def describe_plan(self) -> list[str]:
        """The plan for people (``--dry-run``)."""
        sc, plan = self.scenario, self.plan
        lines = [f"scenario: {sc.title} ({sc.file})",
                 f"mode {self.mode}, seed {self.seed}, namespace {self.namespace}",
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
        for reason in self.unavailable + self.missing_reasons:
            lines.append(f"unavailable: {reason}")
        return lines

    # -- running -----------------------------------------------------------------------

    def _make_target(self) -> Target:
        if self._target_factory is not None:
            return self._target_factory(self.plan)
        if self.mode == "embedded":
            from cdb.chaos.targets.embedded import EmbeddedTarget

            return EmbeddedTarget(self.plan)
        from cdb.chaos.targets.distributed import DistributedTarget

        return DistributedTarget(self.plan)

    async def run(self) -> Outcome:
        """Run the scenario; the outcome is also kept in ``outcome`` (for Ctrl-C)."""
        started, wall0 = now_iso(), time.monotonic()
        error: str | None = None
        interrupted = False
        tasks: list[asyncio.Task[Any]] = []
        ticker: asyncio.Task[None] | None = None
        if self.missing_reasons and not self.options.run_anyway:
            self.outcome = self._conclude(started, wall0, None, False, skipped=True)
            return self.outcome
        target = self.target = self._make_target()
        for use in self._uses:
            use.ctx.bind(target)
        self._builtin.bind(target)
        api = None
        if self.options.http_port is not None:
            from cdb.chaos.run.observe import CoordinatorApi

            api = self._api = CoordinatorApi(self.namespace, self.state, "127.0.0.1",
                                             self.options.http_port)
            await api.start()
            self.http_url = api.url
            self.progress.log(f"coordinator /health and /metrics on {api.url}")
        try:
            ticker = asyncio.create_task(self._tick(), name="chaos.progress")
            target.clock.join()
            self.phase = "starting"
            await target.start()
            samplers = self._start_samplers(target)
            tasks += samplers
            self.phase = "warm-up"
            await target.clock.sleep_until(0.0)
            tasks += await self._experiment(target)
            # Closed first: a sampler slow to notice its cancellation must not record
            # the pipeline being stopped as part of the run.
            target.recording.close_sampling()
            await self._cancel(samplers)
            self.phase = "finishing"
            target.clock.leave()
            await target.finish()
            self.finished = True
            self._mark("finished")
        except asyncio.CancelledError:
            interrupted = True
            raise
        except ClockClosed as exc:
            error = f"the market ended before the scenario: {exc}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            _log.error("scenario run failed", error=error, tb=traceback.format_exc())
        finally:
            target.recording.close_sampling()
            await self._cancel([*tasks, *self._tasks])
            await self._undo_all("cleanup")
            await asyncio.shield(target.stop())
            if ticker is not None:
                ticker.cancel()
            self.outcome = self._conclude(started, wall0, error, interrupted)
            if api is not None:
                counts: dict[str, int] = {}
                for a in self.outcome.assertions:
                    counts[a.status] = counts.get(a.status, 0) + 1
                api.conclude(self.outcome.verdict.status, counts)
                await api.stop()
        return self.outcome

    async def _cancel(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Cancel ``tasks`` and wait for them, a bounded time: a probe stuck in a
        client's cleanup (a connection that hangs) must not hold the run."""
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, stuck = await asyncio.wait(tasks, timeout=_CANCEL_S)
        if stuck:
            names = sorted(t.get_name() for t in stuck)
            _log.warning("tasks did not end when cancelled; left behind", tasks=names)
            self.left_behind += names

    async def _experiment(self, target: Target) -> list[asyncio.Task[Any]]:
        clock = target.clock
        tasks: list[asyncio.Task[Any]] = []
        self.phase = "steady-state before"
        steady = await self._steady_state("before")
        if steady:
            self.phase = "timeline"
            for step in self.steps:
                tasks.append(clock.spawn(self._step(step), name=f"step.{step.key}"))
            if self.scenario.method:
                tasks.append(clock.spawn(self._method(), name="method"))
            self._tasks += tasks  # so that a cancelled run can cancel them too
            await self._until_end(tasks)
        else:
            self.progress.log("steady state not met before the faults: none injected")
        self.phase = "undo"
        await self._undo_all("end of timeline")
        self.phase = "rollbacks"
        for i, act in enumerate(self.scenario.rollbacks):
            key = f"{act.name}@{len(self.scenario.method) + i}"
            await self._activity(self._find(key), "rollback", act.name, None)
        self.phase = "settle"
        await clock.sleep_until(clock.now() + self.scenario.settle)
        self.phase = "steady-state after"
        if steady:
            await self._steady_state("after")
        self.phase = "final probes"
        for exp in self.scenario.expect:
            if exp.probe is not None:
                use = self._find(f"expect:{exp.name}")
                self.end_values[exp.name] = await self._probe_value(use)
        return tasks

    async def _until_end(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Wait for the end of the timeline; a step that fails unexpectedly (the market
        ran out) ends the wait at once and is raised."""
        assert self.target is not None
        clock = self.target.clock
        main = asyncio.current_task()

        async def end() -> None:
            await clock.sleep_until(self.t_end)
            if main is not None:
                clock.join(main)  # back in lockstep before the market can move on

        # Not a participant while waiting: the steps need the market to move.
        clock.leave()
        sleeper = clock.spawn(end(), name="timeline.end")
        pending: set[asyncio.Task[Any]] = {sleeper, *tasks}
        try:
            while sleeper in pending:
                done, pending = await asyncio.wait(pending,
                                                   return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is not sleeper and not task.cancelled() and task.exception():
                        raise task.exception()  # type: ignore[misc]
            sleeper.result()
            if pending:
                clock.leave()
                done, late = await asyncio.wait(pending, timeout=_OVERRUN_S)
                for task in late:
                    task.cancel()
                    self.assertions.append(Assertion(
                        name=task.get_name(), category="run", status="unknown",
                        detail=f"still running {_OVERRUN_S:g}s after the end of the timeline "
                               f"(t={self.t_end:g}s): cancelled ({self.current})"))
                await asyncio.gather(*late, return_exceptions=True)
                for task in done:
                    task.result()
        finally:
            sleeper.cancel()
        clock.join()

    # -- steps -------------------------------------------------------------------------

    async def _step(self, step: Step) -> None:
        use = self._step_uses[step.key]
        await use.ctx.clock.sleep_until(step.at)
        await self._activity(use, "timeline", step.name, step.duration, step.tolerance)

    async def _method(self) -> None:
        clock = self.target.clock if self.target else None
        assert clock is not None
        for i, act in enumerate(self.scenario.method):
            use = self._find(f"{act.name}@{i}")
            await clock.sleep_until(clock.now() + act.pause_before)
            use.ctx.at = clock.now()
            run = self._activity(use, "method", act.name, act.duration,
                                 act.tolerance if act.has_tolerance else None)
            if act.background:
                self._tasks.append(clock.spawn(run, name=f"method.{act.name}"))
            else:
                await run
            await clock.sleep_until(clock.now() + act.pause_after)

    def _record(self, use: _Use, phase: str, name: str) -> Activity:
        assert self.target is not None
        return self.target.recording.add(Activity(
            key=use.key, name=name, phase=phase, kind=use.kind, type=use.provider.type,
            params=dict(use.provider.params), t_start=round(self.target.clock.now(), 6),
            started=now_iso()))

    def _close(self, act: Activity) -> None:
        assert self.target is not None
        act.t_end = round(self.target.clock.now(), 6)
        act.ended = now_iso()

    async def _activity(self, use: _Use, phase: str, name: str, duration: float | None,
                        tol: Any = None) -> None:
        """Run one fault, action or probe, record it, register undos."""
        assert self.target is not None
        clock = self.target.clock
        act = self._record(use, phase, name)
        self.current = f"{use.kind} {use.key} ({use.provider.type})"
        self.progress.log(f"t={clock.now():7.2f}s {use.kind} {use.key}: {use.provider.type}")
        try:
            if isinstance(use.impl, Fault):
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
                self._close(act)

    async def _fault(self, use: _Use, act: Activity, phase: str, duration: float | None) -> None:
        assert self.target is not None
        assert isinstance(use.impl, Fault)
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
        self.progress.log(f"t={clock.now():7.2f}s effect of {use.key}: "
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
        self.target.recording.add(Activity(
            key=undo.key, name=f"undo {undo.key}", phase="undo", kind="undo", type="undo",
            params={}, t_start=t, t_end=t, started=now_iso(), ended=now_iso(), status=status,
            output=repr(undo.output) if undo.output is not None else None,
            error=repr(undo.error) if undo.error is not None else None))
        if undo.error is not None:
            self.assertions.append(Assertion(
                name=f"undo {undo.key}", category="run", status="unknown",
                detail=f"the undo failed, the pipeline may still be faulty: {undo.error!r}"))

    async def _undo_all(self, why: str) -> None:
        pending = self.undo.pending
        if pending:
            self.progress.log(f"undoing {len(pending)} fault(s) in reverse order ({why})")
            await self.undo.run_all()

    # -- probes ------------------------------------------------------------------------

    async def _probe_value(self, use: _Use) -> tuple[Any, str | None]:
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                value = await use.impl(use.ctx, Params(dict(use.provider.params)))
        except Unavailable as exc:
            return None, f"unavailable: {exc.reason}"
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return value, None

    async def _steady_state(self, phase: str) -> bool:
        hypothesis = self.scenario.steady_state
        if hypothesis is None:
            return True
        ok = True
        for activity in hypothesis.probes:
            use = self._find(f"steady:{activity.name}")
            act = self._record(use, f"steady-state-{phase}", activity.name)
            value, error = await self._probe_value(use)
            self._close(act)
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

    def _start_samplers(self, target: Target) -> list[asyncio.Task[Any]]:
        every = self.scenario.sample_every
        tasks = [target.clock.spawn(self._sample_builtin(target, every), name="sample.builtin")]
        if CAPABILITIES.present("ess"):
            tasks.append(target.clock.spawn(self._sample(target, measure.ESS, every,
                                                         target.ess), name="sample.ess"))
        for probe in self.scenario.probes:
            use = self._find(f"sampled:{probe.name}")

            def call(use: _Use = use) -> Any:
                return use.impl(use.ctx, Params(dict(use.provider.params)))

            tasks.append(target.clock.spawn(self._sample(target, probe.name, probe.every or every,
                                                         call), name=f"sample.{probe.name}"))
        return tasks

    async def _sample_builtin(self, target: Target, every: float) -> None:
        from cdb.chaos.checks.probes import health

        use = _Use(key="__health__", provider=Provider(type="health", params={}), kind="probe",
                   ctx=self._builtin, impl=health)

        async def both() -> None:
            # Each reading is stamped when its answer came: a request sent just before a
            # fault that the fault then held up (a frozen service answering nothing)
            # tells of the fault, not of the time before it.
            value, error = await self._probe_value(use)
            target.recording.sample(measure.HEALTH, round(target.clock.now(), 6), value, error)
            try:
                async with asyncio.timeout(_PROBE_TIMEOUT_S):
                    lag = await target.lag()
                total = sum(n for groups in lag.values() for n in groups.values())
                target.recording.sample(measure.LAG, round(target.clock.now(), 6),
                                        {"total": total, "by_stream": lag})
            except Exception as exc:
                target.recording.sample(measure.LAG, round(target.clock.now(), 6),
                                        error=f"{type(exc).__name__}: {exc}")
            try:
                async with asyncio.timeout(_PROBE_TIMEOUT_S):
                    await target.observe()
            except Exception as exc:
                _log.debug("observation failed", error=repr(exc))

        await self._every(target, every, both)

    async def _sample(self, target: Target, name: str, every: float,
                      call: Callable[[], Any]) -> None:
        async def one() -> None:
            t = round(target.clock.now(), 6)
            try:
                async with asyncio.timeout(_PROBE_TIMEOUT_S):
                    value = await call()
            except Unavailable as exc:
                target.recording.sample(name, t, error=f"unavailable: {exc.reason}")
                raise
            except Exception as exc:
                target.recording.sample(name, t, error=f"{type(exc).__name__}: {exc}")
            else:
                target.recording.sample(name, t, value)

        await self._every(target, every, one)

    @staticmethod
    async def _every(target: Target, every: float, fn: Callable[[], Any]) -> None:
        clock = target.clock
        t = clock.now()
        try:
            while not target.recording.sampling_closed:
                await fn()
                t = max(t + every, clock.now())
                await clock.sleep_until(t)
        except (ClockClosed, Unavailable):
            return

    async def _tick(self) -> None:
        while True:
            state = self.state()
            self.progress.update(state)
            if self._api is not None:
                self._api.update(state)
            await asyncio.sleep(0.2)

    def state(self) -> dict[str, Any]:
        """The live state for the progress display."""
        target = self.target
        rec = target.recording if target else None
        samples: dict[str, Any] = {}
        if rec is not None:
            for name, values in rec.samples.items():
                if values:
                    last = values[-1]
                    samples[name] = last.value if last.error is None else f"! {last.error}"
        return {
            "title": self.scenario.title, "phase": self.phase, "mode": self.mode,
            "t": target.clock.now() if target else 0.0, "t_end": self.t_end,
            "t_total": self.t_end + self.scenario.settle, "namespace": self.namespace,
            "warmup": self.plan.warmup, "current": self.current,
            "active": dict(self.active), "samples": samples,
            "counts": {k: len(v) for k, v in rec.events.items()} if rec else {},
            "trades": rec.trades if rec else 0,
        }

    # -- concluding --------------------------------------------------------------------

    def _check_context(self) -> CheckContext:
        assert self.target is not None
        env = {**os.environ, **scenario_env(self.scenario, self.seed), **self.plan.env}
        limits = load_settings(environ=env).risk_limits()
        windows = [(k, t, self.ended.get(k, self.t_end)) for k, t in self.applied.items()]
        return CheckContext(
            scenario=self.scenario, plan=self.plan, recording=self.target.recording,
            steps=self.steps, ended=self.ended, t_end=self.t_end, finished=self.finished,
            limits=limits, missing=sorted(m for m in self.missing
                                          if not CAPABILITIES.present(m)),
            fault_windows=windows)

    def _conclude(self, started: str, wall0: float, error: str | None, interrupted: bool,
                  skipped: bool = False) -> Outcome:
        assertions = list(self.assertions)
        for reason in self.missing_reasons:
            assertions.append(Assertion(name="requires", category="run", status="unknown",
                                        detail=reason))
        for reason in dict.fromkeys(self.unavailable):
            assertions.append(Assertion(name="unavailable", category="run", status="unknown",
                                        detail=reason))
        if skipped:
            assertions.append(Assertion(
                name="run", category="run", status="unknown",
                detail="not run: a required feature is missing (--run-anyway runs it anyway)"))
        if interrupted:
            assertions.append(Assertion(name="run", category="run", status="unknown",
                                        detail="interrupted (Ctrl-C or SIGTERM)"))
        if error is not None:
            assertions.append(Assertion(name="run", category="run", status="unknown",
                                        detail=f"the run failed: {error}"))
        if self.target is not None and not skipped:
            evaluated = self._evaluate()
            if interrupted:
                # Cut short, the consequences a scenario expects had no time to happen:
                # such a miss proves nothing (a broken invariant still fails the run).
                evaluated = [msgspec.structs.replace(
                    a, status="unknown", detail=f"interrupted before the end: {a.detail}")
                    if a.status == "fail" and a.category in ("expectation", "measurement")
                    else a for a in evaluated]
            assertions += evaluated
        verdict = decide(assertions)
        outcome = Outcome(
            verdict=verdict, assertions=assertions, seed=self.seed, mode=self.mode,
            namespace=self.namespace, report_dir=str(self.report_dir), interrupted=interrupted,
            error=error, started=started, ended=now_iso(),
            duration_s=round(time.monotonic() - wall0, 3), http_url=self.http_url)
        if not self.options.dry_run:
            from cdb.chaos.reports import outcome as reports

            try:
                outcome.reports = reports.write_all(self, outcome)
            except Exception as exc:  # a report must never cost the verdict
                _log.error("reports not written", error=repr(exc), tb=traceback.format_exc())
                outcome.error = (outcome.error or "") + f" (reports not written: {exc!r})"
        return outcome

    def _activity_checks(self, ctx: CheckContext) -> list[Assertion]:
        """One per fault that declares ``requires_activity``: whether that activity
        was there when it was applied (else it tested nothing: unknown)."""
        assert self.target is not None
        out: list[Assertion] = []
        for act in self.target.recording.activities:
            if act.kind != "fault" or act.phase in ("rollback", "undo"):
                continue
            use = next((u for u in self._uses if u.key == act.key), None)
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

    def _evaluate(self) -> list[Assertion]:
        assert self.target is not None
        out: list[Assertion] = []
        for act in self.target.recording.activities:
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
        ctx = self._check_context()
        out += self._activity_checks(ctx)
        for spec in self.scenario.invariants:
            fn = INVARIANTS.get(spec.type).impl
            try:
                result = fn(ctx, Params(dict(spec.params)))
            except Exception as exc:
                result = Assertion(name=spec.type, category="invariant", status="unknown",
                                   detail=f"the check failed: {exc!r}")
            out.append(msgspec.structs.replace(result, path=spec.path))
        for exp in self.scenario.expect:
            out.append(measure.expect(exp, ctx, self.end_values.get(exp.name)))
        for m in self.scenario.measurements:
            out.append(measure.measure(m, ctx))
        return out
