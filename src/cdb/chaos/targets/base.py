"""The system under test, as the runner, faults and probes see it.

A ``Target`` starts a pipeline from a ``Plan`` (what the scenario and its faults need
before anything starts: market shapes, proxies, settings), records what flows on its
bus into a ``Recording``, answers probes (health, metrics, SQL, stream lag, ESS) and
offers the controls faults use. What a mode cannot do raises ``Unavailable``, which
ends the run ``unknown`` instead of pretending.
"""

from __future__ import annotations

import abc
import os
import uuid
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from cdb.chaos.history.clock import ScenarioClock
from cdb.chaos.history.recording import Recording
from cdb.chaos.scenario.model import Scenario
from cdb.chaos.scenario.registry import Unavailable
from cdb.events import AnyEvent
from cdb.marketdata.shapes import Shape
from cdb.services.db_writer import DbWriterService
from cdb.services.execution import ExecutionService
from cdb.services.risk import RiskService
from cdb.services.signal import SignalService

GROUPS_OF: dict[str, tuple[str, ...]] = {
    svc.name: svc.inputs
    for svc in (SignalService, RiskService, ExecutionService, DbWriterService)
}
"""Consumer group (service name) → the topics it reads."""


def new_namespace(prefix: str = "test-coordinator") -> str:
    """A namespace no other run uses (``SERVICE_INSTANCE_NAME``)."""
    base = os.environ.get("SERVICE_INSTANCE_NAME") or prefix
    return f"{base}-{uuid.uuid4().hex[:8]}"


class Plan(msgspec.Struct, kw_only=True):
    """What the target must know before it starts; faults add to it (``ScenarioFault.plan``)."""

    scenario: Scenario
    mode: str
    seed: int
    namespace: str
    report_dir: Path
    market_duration: float
    """Market seconds to generate (warm-up, timeline, settle and a margin)."""
    shapes: list[Shape] = msgspec.field(default_factory=list)
    proxies: set[tuple[str, str]] = msgspec.field(default_factory=set)
    """(service or ``*``, ``redis``/``postgres``) links to route through the proxy."""
    env: dict[str, str] = msgspec.field(default_factory=dict)
    redis_url: str | None = None
    """An existing Redis to use (distributed mode) instead of a throwaway one."""
    postgres_url: str | None = None
    """An existing PostgreSQL to use (distributed mode) instead of a throwaway one."""
    toxiproxy_url: str | None = None
    """A Toxiproxy server's API (distributed mode) for the network faults, instead of
    cdb's own proxy."""

    @property
    def warmup(self) -> float:
        return self.scenario.pipeline.market.warmup


def scenario_env(scenario: Scenario, seed: int) -> dict[str, str]:
    """Settings of the services from the scenario's pipeline (same in both modes)."""
    pipe = scenario.pipeline
    env: dict[str, str] = {"SIGNAL_STRATEGY_ID": pipe.strategy.id, "WS_SEED": str(seed),
                           "WS_SYMBOLS": ",".join(pipe.market.symbols)}
    strategy = pipe.strategy
    if strategy.threshold_pct is not None:
        env["SIGNAL_THRESHOLD_PCT"] = str(strategy.threshold_pct)
    if strategy.min_volume is not None:
        env["SIGNAL_MIN_VOLUME"] = str(strategy.min_volume)
    if strategy.lookback is not None:
        env["SIGNAL_LOOKBACK_S"] = str(strategy.lookback)
    names = {
        "order_notional": "RISK_ORDER_NOTIONAL", "max_order_notional": "RISK_MAX_ORDER_NOTIONAL",
        "max_position": "RISK_MAX_POSITION", "max_exposure": "RISK_MAX_EXPOSURE",
        "max_open_orders": "RISK_MAX_OPEN_ORDERS",
        "max_orders_per_window": "RISK_MAX_ORDERS_PER_WINDOW",
        "rate_window": "RISK_RATE_WINDOW_S", "initial_cash": "RISK_INITIAL_CASH",
    }
    for key, value in pipe.limits.items():
        text = str(int(value)) if key in ("max_open_orders", "max_orders_per_window") else str(
            value)
        env[names[key]] = text
    for key, value in pipe.ess.items():
        env[f"ESS_{key.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    env.update(pipe.settings)
    return env


class Target(abc.ABC):
    """A running pipeline under test."""

    mode: ClassVar[str]

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.namespace = plan.namespace
        self.services = plan.scenario.pipeline.services
        self.recording = Recording()
        self.clock: ScenarioClock
        self.summary: dict[str, Any] = {}

    def instance_of(self, service: str) -> str:
        """The instance name of a service (its metrics' ``instance`` label)."""
        return f"{self.namespace}.{service}"

    # -- lifecycle ---------------------------------------------------------------------

    @abc.abstractmethod
    async def start(self) -> None:
        """Start everything and return once the pipeline is ready (warm-up may run)."""

    @abc.abstractmethod
    async def finish(self) -> None:
        """End the market, let the pipeline drain, and record the database, ledger and
        streams into the recording."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop whatever still runs; idempotent, called on every path."""

    # -- observation -------------------------------------------------------------------

    @abc.abstractmethod
    async def health(self, service: str) -> dict[str, Any]:
        """The service's ``/health`` body (``status`` is ``unreachable`` when it does
        not answer)."""

    @abc.abstractmethod
    async def metrics_text(self, service: str) -> str:
        """The service's ``/metrics`` in Prometheus text format."""

    @abc.abstractmethod
    async def sql(self, query: str) -> list[dict[str, Any]]:
        """Rows of ``query`` on the pipeline's database (its namespace)."""

    @abc.abstractmethod
    async def lag(self) -> dict[str, dict[str, int]]:
        """Events not yet acknowledged, by stream then consumer group."""

    @abc.abstractmethod
    async def stream_info(self, stream: str) -> dict[str, Any]:
        """Length, entries added and groups of one stream."""

    @abc.abstractmethod
    async def publish(self, topic: str, events: list[AnyEvent]) -> None:
        """Put events on the pipeline's bus as if a service had."""

    @abc.abstractmethod
    def now_ns(self) -> int:
        """The pipeline's event time now."""

    # -- ESS ------------------------------------------------------------------------

    async def ess(self) -> dict[str, Any]:
        """The emergency stop's state (``state``, ``reason``...)."""
        raise Unavailable("the ESS API is not available")

    async def ess_command(self, command: str, reason: str, actor: str) -> dict[str, Any]:
        """``trip`` or ``reset`` the ESS."""
        raise Unavailable("the ESS API is not available")

    # -- controls faults use -----------------------------------------------------------

    async def pause_service(self, service: str) -> str:
        """Freeze a service (SIGSTOP, or stop its consumption); returns evidence."""
        raise Unavailable(f"{self.mode} mode cannot pause a service")

    async def resume_service(self, service: str) -> str:
        raise Unavailable(f"{self.mode} mode cannot resume a service")

    async def signal_service(self, service: str, signame: str) -> str:
        """Send an OS signal to a service process; returns evidence."""
        raise Unavailable(f"{self.mode} mode has no service processes (use distributed)")

    async def wait_service_back(self, service: str, since_pid: int | None,
                                timeout: float) -> str:
        raise Unavailable(f"{self.mode} mode has no service processes (use distributed)")

    def service_pid(self, service: str) -> int | None:
        return None

    def infra(self, name: str) -> Any:
        """The throwaway ``redis`` or ``postgres`` server."""
        raise Unavailable(f"{self.mode} mode has no {name} server (use distributed)")

    def proxy_url(self) -> str:
        """Base URL of the Toxiproxy-compatible API of the fault proxy."""
        raise Unavailable(f"{self.mode} mode has no network between services (use "
                          "distributed)")

    def proxy_name(self, service: str, dependency: str) -> str:
        raise Unavailable(f"{self.mode} mode has no network between services")

    def exchange_url(self) -> str:
        """Base URL of the fake exchange the pipeline trades on (and its control API)."""
        raise Unavailable("this pipeline does not trade on the fake exchange")

    def sabotage(self) -> Any:
        """The fault-injection switches of the pipeline (drop/duplicate events)."""
        raise Unavailable(f"{self.mode} mode has no fault-injection switches")

    async def redis_memory(self) -> int | None:
        """Bytes the pipeline's Redis uses (None: no Redis, or it did not answer)."""
        return None

    def ledger(self) -> list[dict[str, Any]] | None:
        """The venue's own record of executions, when observable."""
        return None

    async def observe(self) -> None:
        """Read, at every sample, what can only be read while the pipeline runs (the
        venue ledger of a process that may be killed)."""
        return None
