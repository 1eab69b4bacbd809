"""Health: one JSON shape for every service, built from dependency checks.

``status`` is ``healthy`` when every dependency is up, ``degraded`` when one is down
but the service copes (events buffered, batches held), ``unhealthy`` when a dependency
critical to it is down: it cannot do its job. ``degraded`` answers 200, ``unhealthy``
503. Which dependencies are critical is declared per service in ``CRITICAL`` (the
README's table). Secrets never appear: errors and details are masked before they are
reported.

Probes run on a schedule (the ``Monitor``, every ``CDB_MONITOR_INTERVAL_S``), not per
request: ``/health`` serves the last results (``cached``) with the age of each, so an
orchestrator or a coordinator polling every second costs nothing, and above all no
request to the exchange (a Binance ping costs request weight and, during a 418 ban,
extends it). A dependency may be probed less often than the schedule (``every``).

Each check also updates the health metrics (``cdb_health_status``,
``cdb_dependency_up``, ``cdb_redis_up``, ``cdb_dependency_reconnects_total``) and tells
its listeners (the gRPC health service), so every view of health agrees with
``/health``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final, Literal

import msgspec
import structlog

from cdb import __version__
from cdb.observability import metrics
from cdb.observability.logging import mask_text, mask_value

Status = Literal["healthy", "degraded", "unhealthy"]
DepStatus = Literal["up", "down", "unknown"]
Probe = Callable[[], Awaitable[None]]
Listener = Callable[["HealthReport"], Awaitable[None] | None]

STATUS_VALUE: dict[Status, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}
"""``cdb_health_status`` of each status."""

CRITICAL: Final[dict[str, frozenset[str]]] = {
    # A producer: while Redis is down its trades go to the durable disk buffer, and the
    # exchange stream reconnects by itself (a silent market is not a broken service).
    "ws": frozenset(),
    # Consumers: without Redis no event reaches them, so they cannot do their job.
    "signal": frozenset({"redis"}),
    # PostgreSQL only records the ESS beside Redis (and is read at start).
    "risk": frozenset({"redis"}),
    # The exchange is not critical: an outage or a ban is a market event, met by bounded
    # retries, alerts and the ESS; restarting execution would forget a ban and ping
    # into it. PostgreSQL is only read at start (reconciliation).
    "execution": frozenset({"redis"}),
    # Persisting is its only job: it holds its batch and retries, but cannot do it.
    "db_writer": frozenset({"redis", "postgres"}),
}
"""The dependencies each service cannot work without: one of them down makes it
``unhealthy`` (503, not ready). Services not listed treat every dependency as critical."""

PROBE_EVERY: Final[dict[tuple[str, str], float]] = {
    # A ping costs request weight, and one that lands during a 418 ban extends it; the
    # venue's own requests show an outage long before (alerts, the ESS's error burst).
    ("execution", "exchange"): 30.0,
}
"""Seconds between two probes of a dependency of a service, when not every health
check (``CDB_MONITOR_INTERVAL_S``)."""

_log = structlog.get_logger("cdb.observability.health")


def is_critical(service: str, dependency: str) -> bool:
    """Whether ``service`` cannot do its job while ``dependency`` is down (``CRITICAL``)."""
    declared = CRITICAL.get(service)
    return True if declared is None else dependency in declared


class Dependency(msgspec.Struct, kw_only=True):
    """Last known state of one dependency."""

    status: DepStatus = "unknown"
    latency_ms: float | None = None
    last_error: str | None = None
    checked_at: str | None = None
    critical: bool = True
    """When down: unhealthy if critical, degraded otherwise."""
    age_s: float | None = None
    """Seconds since the last probe (the state shown is that old)."""


class HealthReport(msgspec.Struct, kw_only=True):
    """The ``/health`` body (same shape for every service)."""

    service: str
    instance: str
    version: str
    environment: str
    status: Status
    uptime_s: float
    timestamp: str
    dependencies: dict[str, Dependency]
    details: dict[str, object]


class Health:
    """Runs dependency probes and assembles the report.

    Args:
        service: service kind; instance: its name; environment: deployment name.
        probe_timeout: a probe that takes longer counts as down (s).
        max_age: ``cached`` probes again when the last check is older than this (s):
            only when no schedule keeps it fresh (the ``Monitor`` raises it to cover
            its interval).
    """

    def __init__(self, service: str, instance: str, environment: str, *,
                 probe_timeout: float = 5.0, max_age: float = 5.0) -> None:
        self.service = service
        self.instance = instance
        self.environment = environment
        self.started = time.monotonic()
        self.ready = False
        self.probe_timeout = probe_timeout
        self.max_age = max_age
        self._probes: dict[str, _Probe] = {}
        self.dependencies: dict[str, Dependency] = {}
        self.details: Callable[[], dict[str, object]] = dict
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._checked_at = float("-inf")
        self._status_gauge = metrics.health_status.labels(service, instance)
        metrics.build_info.labels(service, instance).info(metrics.build_labels())

    def add(self, name: str, probe: Probe, *, critical: bool | None = None,
            every: float | None = None) -> None:
        """Check ``name`` with ``probe`` (raises when down).

        Args:
            critical: whether the service cannot work without it; by default as the
                service declares in ``CRITICAL``.
            every: probe it at most once per this many seconds, however often health
                is checked; by default as declared in ``PROBE_EVERY``, else at every
                check.
        """
        if critical is None:
            critical = is_critical(self.service, name)
        if every is None:
            every = PROBE_EVERY.get((self.service, name), 0.0)
        self._probes[name] = _Probe(probe, critical, every)
        self.dependencies[name] = Dependency(critical=critical)

    def listen(self, listener: Listener) -> None:
        """Call ``listener(report)`` after every check (sync or async)."""
        self._listeners.append(listener)

    async def check(self, max_age: float = 0.0) -> HealthReport:
        """Probe the dependencies now (each not probed within its ``every``) and build
        the report; what the schedule calls.

        Args:
            max_age: reuse the probes of a check younger than this (s) instead of
                probing again.
        """
        async with self._lock:
            if time.monotonic() - self._checked_at > max_age:
                for name, probe in self._probes.items():
                    if time.monotonic() - probe.probed_at >= probe.every:
                        await self._probe(name, probe)
                self._checked_at = time.monotonic()
                report = self.report()
                self._export(report)
                for listener in self._listeners:
                    await self._notify(listener, report)
                return report
        return self.report()

    async def cached(self, max_age: float | None = None) -> HealthReport:
        """The report of the last check; a new check only when there was none or it is
        older than ``max_age`` (default ``self.max_age``): what ``/health`` answers.

        A fresh report is returned at once, even while a scheduled check is probing (a
        probe of a blackholed Redis takes ``probe_timeout``): an orchestrator's probe
        must not time out waiting for it.
        """
        limit = self.max_age if max_age is None else max_age
        if time.monotonic() - self._checked_at <= limit:
            return self.report()
        return await self.check(max_age=limit)

    async def _probe(self, name: str, entry: _Probe) -> None:
        probe, critical = entry.probe, entry.critical
        entry.probed_at = time.monotonic()
        dep = self.dependencies[name]
        was = dep.status
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.probe_timeout):
                await probe()
        except Exception as exc:
            dep.status = "down"
            text = str(exc) or f"no answer within {self.probe_timeout} s"
            dep.last_error = mask_text(f"{type(exc).__name__}: {text}")[:300]
            dep.latency_ms = None
        else:
            dep.status = "up"
            dep.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        dep.checked_at = _now_iso()
        dep.critical = critical
        labels = (self.service, self.instance, name)
        up = dep.status == "up"
        metrics.dependency_up.labels(*labels).set(1 if up else 0)
        if dep.latency_ms is not None:
            metrics.dependency_latency.labels(*labels).set(dep.latency_ms / 1000)
        reconnects = metrics.dependency_reconnects.labels(*labels)  # exists at 0 from now
        if name == "redis":
            metrics.redis_up.labels(self.service, self.instance).set(1 if up else 0)
        if was != dep.status and was != "unknown":
            if up:
                reconnects.inc()
                _log.info("dependency up again", dependency=name)
            else:
                _log.warning("dependency down", dependency=name, error=dep.last_error)

    def _export(self, report: HealthReport) -> None:
        self._status_gauge.set(STATUS_VALUE[report.status])

    async def _notify(self, listener: Listener, report: HealthReport) -> None:
        try:
            result = listener(report)
            if inspect.isawaitable(result):
                await result
        except Exception:
            _log.exception("health listener failed")

    def report(self) -> HealthReport:
        """The report from the last probes (no probing)."""
        down = [d for d in self.dependencies.values() if d.status == "down"]
        status: Status = "healthy"
        if any(d.critical for d in down):
            status = "unhealthy"
        elif down:
            status = "degraded"
        details = mask_value(self.details(), keep_objects=True)
        now = time.monotonic()
        dependencies = {
            name: msgspec.structs.replace(dep, age_s=_age(now, self._probes[name].probed_at))
            for name, dep in self.dependencies.items()
        }
        return HealthReport(
            service=self.service, instance=self.instance, version=__version__,
            environment=self.environment, status=status,
            uptime_s=round(now - self.started, 3), timestamp=_now_iso(),
            dependencies=dependencies,
            details=details if isinstance(details, dict) else {},
        )

    def not_ready_because(self, report: HealthReport) -> list[str]:
        """Why the service cannot do its job now (empty when it can)."""
        why = [] if self.ready else ["not started, or stopping"]
        why += [f"{name} down" for name, dep in report.dependencies.items()
                if dep.critical and dep.status == "down"]
        return why


class _Probe:
    """A dependency's probe, whether it is critical, and when it last ran."""

    __slots__ = ("critical", "every", "probe", "probed_at")

    def __init__(self, probe: Probe, critical: bool, every: float) -> None:
        self.probe = probe
        self.critical = critical
        self.every = every
        self.probed_at = float("-inf")


def _age(now: float, then: float) -> float | None:
    return None if then == float("-inf") else round(now - then, 3)


def _now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds")
