"""Fixtures of the coordinator's unit tests: a fake target on the wall clock (no
pipeline), test-only faults that log what they do, and a scenario factory."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cdb.chaos.faults.base import ScenarioFault, StepContext
from cdb.chaos.history.clock import ClockClosed, WallScenarioClock
from cdb.chaos.history.recording import Effect
from cdb.chaos.run.runner import Options, Outcome, Runner
from cdb.chaos.scenario import validate
from cdb.chaos.scenario.model import Scenario
from cdb.chaos.scenario.params import Params
from cdb.chaos.scenario.registry import FAULTS, PROBES, P, Unavailable
from cdb.chaos.targets.base import Plan, Target
from cdb.events import AnyEvent

LOG: list[str] = []
"""What the test faults did, in order (cleared by the ``log`` fixture)."""


@FAULTS.register("test_switch", summary="a fault for the runner's tests",
                 params={"name": P.string(), "fail": P.boolean(), "effect": P.anything(),
                         "undo_fails": P.boolean(), "missing": P.boolean(),
                         "ends_market": P.boolean(), "hangs": P.boolean()},
                 required=("name",))
class SwitchFault(ScenarioFault):
    async def apply(self) -> Any:
        name = self.p.text("name")
        if self.p.flag("missing"):
            raise Unavailable(f"{name} needs a feature that is not there")
        if self.p.flag("fail"):
            raise RuntimeError(f"{name} could not be applied")
        if self.p.flag("ends_market"):
            raise ClockClosed("the market ran out")
        LOG.append(f"apply {name}")
        if self.p.flag("hangs"):
            await asyncio.Event().wait()  # a fault stuck for good (a hung connection)
        return f"{name} on"

    async def undo(self) -> Any:
        name = self.p.text("name")
        LOG.append(f"undo {name}")
        if self.p.flag("undo_fails"):
            raise RuntimeError(f"{name} would not go back")
        return f"{name} off"

    async def effect(self) -> Effect:
        took = self.p.get("effect", True)
        return Effect(took_effect=took, evidence=f"{self.p.text('name')} effect {took}")


@PROBES.register("test_value", summary="a probe for the runner's tests",
                 params={"value": P.anything(), "boom": P.boolean(),
                         "stubborn": P.boolean()})
async def value_probe(ctx: StepContext, p: Params) -> Any:
    if p.flag("boom"):
        raise RuntimeError("probe exploded")
    if p.flag("stubborn"):
        # A client that turns a cancellation into an answer (seen with HTTP clients).
        try:
            await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            return "late"
    return p.get("value", "ok")


validate._validator.cache_clear()  # the schema now knows the test providers


class FakeTarget(Target):
    """A target without a pipeline: wall clock, healthy services, empty database."""

    mode: ClassVar[str] = "embedded"

    def __init__(self, plan: Plan, hang_at_start: float = 0.0) -> None:
        super().__init__(plan)
        self.clock = WallScenarioClock()
        self.hang_at_start = hang_at_start
        self.stopped = False
        self.published: list[tuple[str, AnyEvent]] = []

    async def start(self) -> None:
        LOG.append("start")
        self.clock.set_origin(time.monotonic() + self.plan.warmup)

    async def finish(self) -> None:
        LOG.append("finish")
        self.recording.db = {t: [] for t in ("signals", "orders", "fills", "risk_decisions",
                                             "order_updates", "alerts", "ess_changes")}
        self.recording.ledger = []

    async def stop(self) -> None:
        LOG.append("stop")
        self.stopped = True

    async def health(self, service: str) -> dict[str, Any]:
        return {"service": service, "status": "healthy"}

    async def metrics_text(self, service: str) -> str:
        return ""

    async def sql(self, query: str) -> list[dict[str, Any]]:
        return [{"n": 0}]

    async def lag(self) -> dict[str, dict[str, int]]:
        return {"stream.signals": {"risk": 0}}

    async def stream_info(self, stream: str) -> dict[str, Any]:
        return {"stream": stream, "length": 0}

    async def publish(self, topic: str, events: list[AnyEvent]) -> None:
        self.published += [(topic, e) for e in events]

    def now_ns(self) -> int:
        return time.time_ns()


@pytest.fixture
def log() -> list[str]:
    LOG.clear()
    return LOG


@pytest.fixture
def scenario() -> Callable[[str], Scenario]:
    """A validated scenario from YAML text (fails the test on any problem)."""

    def make(text: str) -> Scenario:
        result = validate.validate_text(textwrap.dedent(text), "test.yaml")
        errors = [p.render("test.yaml") for p in result.problems if p.severity == "error"]
        assert not errors, errors
        assert result.scenario is not None
        return result.scenario

    return make


RunFactory = Callable[..., Runner]


@pytest.fixture
def runner(tmp_path: Path) -> RunFactory:
    """A Runner of a scenario against a ``FakeTarget``, reports in ``tmp_path``."""

    def make(sc: Scenario, **options: Any) -> Runner:
        return Runner(sc, Options(report_dir=tmp_path / "reports", **options),
                      target_factory=lambda plan: FakeTarget(plan))

    return make


async def run(r: Runner) -> Outcome:
    return await r.run()
