"""The runner: one scenario against one pipeline, from start to verdict.

The order of a run (Chaos Toolkit's, with a timeline):

1. plan: expand the timeline, make every fault (they add to the ``Plan``: market
   shapes, proxied links), check modes;
2. start the target and the samplers (health, lag, the ESS and the scenario's
   probes), warm up until t = 0;
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
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec
import structlog

from cdb.chaos.checks.verdict import Assertion, decide
from cdb.chaos.history.clock import ClockClosed
from cdb.chaos.history.recording import now_iso
from cdb.chaos.reports.record import Outcome, RunRecord
from cdb.chaos.run import conclude
from cdb.chaos.run.activities import Activities
from cdb.chaos.run.plan import RunPlan, draft_plan
from cdb.chaos.run.sampling import probe_value, start_samplers
from cdb.chaos.scenario.model import Scenario
from cdb.chaos.scenario.timeline import expand
from cdb.chaos.targets.base import Plan, Target, new_namespace
from cdb.errors import InputError

__all__ = ["Options", "Outcome", "ProgressSink", "Runner"]

_log = structlog.get_logger("cdb.chaos.run.runner")
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


class ProgressSink(Protocol):
    """Receives the live state of a run (the rich display implements it)."""

    def update(self, state: dict[str, Any]) -> None: ...

    def log(self, text: str) -> None: ...


class _Quiet:
    def update(self, state: dict[str, Any]) -> None:
        pass

    def log(self, text: str) -> None:
        pass


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
        self.end_values: dict[str, tuple[Any, str | None]] = {}
        self._phase = "planning"
        self.phases: dict[str, float] = {}
        self._phase_since = time.monotonic()
        self.finished = False
        self.outcome: Outcome | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.http_url: str | None = None
        self._api: Any = None
        self.left_behind: list[str] = []
        """Tasks that did not end when cancelled (named in the journal)."""
        self.planned = RunPlan(scenario, self.steps, draft_plan(
            scenario, self.mode, self.seed, self.namespace, self.report_dir, options.redis_url,
            options.postgres_url, options.toxiproxy_url))
        self.plan = self.planned.plan
        self.t_end = self.planned.t_end
        self.acts = Activities(lambda text: self.progress.log(text), self.planned.unavailable)

    @property
    def applied(self) -> dict[str, float]:
        """Step key -> scenario time its fault was applied."""
        return self.acts.applied

    @property
    def ended(self) -> dict[str, float]:
        """Step key -> scenario time its fault was undone."""
        return self.acts.ended

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

    def describe_plan(self) -> list[str]:
        """The plan for people (``--dry-run``)."""
        return self.planned.describe(self.namespace)

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
        target = self.target = self.acts.target = self._make_target()
        for use in self.planned.uses:
            use.ctx.bind(target)
        self.planned.builtin.bind(target)
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
            samplers = start_samplers(target, self.planned)
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
            await self.acts.undo_all("cleanup")
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
        steady = await self.acts.steady_state(self.planned, "before")
        if steady:
            self.phase = "timeline"
            for step in self.steps:
                tasks.append(clock.spawn(self.acts.step(self.planned, step),
                                         name=f"step.{step.key}"))
            if self.scenario.method:
                tasks.append(clock.spawn(self.acts.method(self.planned, self._tasks),
                                         name="method"))
            self._tasks += tasks  # so that a cancelled run can cancel them too
            await self._until_end(tasks)
        else:
            self.progress.log("steady state not met before the faults: none injected")
        self.phase = "undo"
        await self.acts.undo_all("end of timeline")
        self.phase = "rollbacks"
        for i, act in enumerate(self.scenario.rollbacks):
            key = f"{act.name}@{len(self.scenario.method) + i}"
            await self.acts.run(self.planned.find(key), "rollback", act.name, None)
        self.phase = "settle"
        await clock.sleep_until(clock.now() + self.scenario.settle)
        self.phase = "steady-state after"
        if steady:
            await self.acts.steady_state(self.planned, "after")
        self.phase = "final probes"
        for exp in self.scenario.expect:
            if exp.probe is not None:
                use = self.planned.find(f"expect:{exp.name}")
                self.end_values[exp.name] = await probe_value(use)
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
                    self.acts.assertions.append(Assertion(
                        name=task.get_name(), category="run", status="unknown",
                        detail=f"still running {_OVERRUN_S:g}s after the end of the timeline "
                               f"(t={self.t_end:g}s): cancelled ({self.acts.current})"))
                await asyncio.gather(*late, return_exceptions=True)
                for task in done:
                    task.result()
        finally:
            sleeper.cancel()
        clock.join()

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
            "warmup": self.plan.warmup, "current": self.acts.current,
            "active": dict(self.acts.active), "samples": samples,
            "counts": {k: len(v) for k, v in rec.events.items()} if rec else {},
            "trades": rec.trades if rec else 0,
        }

    # -- concluding --------------------------------------------------------------------

    def _conclude(self, started: str, wall0: float, error: str | None,
                  interrupted: bool) -> Outcome:
        target = self.target
        ran = conclude.Ran(applied=self.applied, ended=self.ended, finished=self.finished,
                           end_values=self.end_values)
        assertions = conclude.assertions(
            self.planned, target.recording if target is not None else None, self.acts.assertions,
            ran, error, interrupted)
        verdict = decide(assertions)
        outcome = Outcome(
            verdict=verdict, assertions=assertions, seed=self.seed, mode=self.mode,
            namespace=self.namespace, report_dir=str(self.report_dir), interrupted=interrupted,
            error=error, started=started, ended=now_iso(),
            duration_s=round(time.monotonic() - wall0, 3), http_url=self.http_url)
        if not self.options.dry_run:
            from cdb.chaos.reports import outcome as reports

            try:
                outcome.reports = reports.write_all(self.record(), outcome)
            except Exception as exc:  # a report must never cost the verdict
                _log.error("reports not written", error=repr(exc), tb=traceback.format_exc())
                outcome.error = (outcome.error or "") + f" (reports not written: {exc!r})"
        return outcome

    def record(self) -> RunRecord:
        """The run as it stands, fixed for its reports."""
        target = self.target
        return RunRecord(
            scenario=self.scenario, plan=self.plan, steps=tuple(self.steps), t_end=self.t_end,
            report_dir=Path(self.report_dir), phases=dict(self.phases),
            left_behind=tuple(self.left_behind), applied=dict(self.applied),
            undone=dict(self.ended), summary=dict(target.summary) if target is not None else {},
            recording=target.recording if target is not None else None)
