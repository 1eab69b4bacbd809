"""Sampling during a run: the built-in health and lag, the ESS and the
scenario's probes.

Each sampler records into the target's recording on scenario time until sampling is
closed; a probe call is bounded, so a hung client costs one reading, not the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from cdb.chaos.checks import measure
from cdb.chaos.faults.base import StepContext
from cdb.chaos.history.clock import ClockClosed
from cdb.chaos.run.plan import RunPlan, Use
from cdb.chaos.scenario.model import Provider
from cdb.chaos.scenario.params import Params
from cdb.chaos.scenario.registry import Unavailable
from cdb.chaos.targets.base import Target

_log = structlog.get_logger("cdb.chaos.run.runner")
_PROBE_TIMEOUT_S = 30.0


async def probe_value(use: Use) -> tuple[Any, str | None]:
    """Call a probe once, bounded: its value, or None and why it has none."""
    try:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            value = await use.impl(use.ctx, Params(dict(use.provider.params)))
    except Unavailable as exc:
        return None, f"unavailable: {exc.reason}"
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return value, None


def start_samplers(target: Target, planned: RunPlan) -> list[asyncio.Task[Any]]:
    """Start every sampler of the run on the target's clock."""
    scenario = planned.scenario
    every = scenario.sample_every
    tasks = [target.clock.spawn(_sample_builtin(target, every, planned.builtin),
                                name="sample.builtin")]
    tasks.append(target.clock.spawn(_sample(target, measure.ESS, every, target.ess),
                                    name="sample.ess"))
    for probe in scenario.probes:
        use = planned.find(f"sampled:{probe.name}")

        def call(use: Use = use) -> Any:
            return use.impl(use.ctx, Params(dict(use.provider.params)))

        tasks.append(target.clock.spawn(_sample(target, probe.name, probe.every or every, call),
                                        name=f"sample.{probe.name}"))
    return tasks


async def _sample_builtin(target: Target, every: float, builtin: StepContext) -> None:
    from cdb.chaos.faults.probes import health

    use = Use(key="__health__", provider=Provider(type="health", params={}), kind="probe",
              ctx=builtin, impl=health)

    async def both() -> None:
        # Each reading is stamped when its answer came: a request sent just before a
        # fault that the fault then held up (a frozen service answering nothing)
        # tells of the fault, not of the time before it.
        value, error = await probe_value(use)
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

    await _every(target, every, both)


async def _sample(target: Target, name: str, every: float, call: Callable[[], Any]) -> None:
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

    await _every(target, every, one)


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
