"""Health: one JSON shape for every service, built from dependency checks.

``status`` is ``healthy`` when every dependency is up, ``degraded`` when one is down
but the service copes (events buffered, batches held), ``unhealthy`` when it cannot
work. ``degraded`` answers 200, ``unhealthy`` 503. Secrets never appear: errors and
details are masked before they are reported.

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
from typing import Literal

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

_log = structlog.get_logger("cdb.observability.health")


class Dependency(msgspec.Struct, kw_only=True):
    """Last known state of one dependency."""

    status: DepStatus = "unknown"
    latency_ms: float | None = None
    last_error: str | None = None
    checked_at: str | None = None
    critical: bool = True
    """When down: unhealthy if critical, degraded otherwise."""


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
    """

    def __init__(self, service: str, instance: str, environment: str, *,
                 probe_timeout: float = 5.0) -> None:
        self.service = service
        self.instance = instance
        self.environment = environment
        self.started = time.monotonic()
        self.ready = False
        self.probe_timeout = probe_timeout
        self._probes: dict[str, tuple[Probe, bool]] = {}
        self.dependencies: dict[str, Dependency] = {}
        self.details: Callable[[], dict[str, object]] = dict
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._checked_at = float("-inf")
        self._status_gauge = metrics.health_status.labels(service, instance)

    def add(self, name: str, probe: Probe, *, critical: bool = True) -> None:
        """Check ``name`` with ``probe`` (raises when down)."""
        self._probes[name] = (probe, critical)
        self.dependencies[name] = Dependency(critical=critical)

    def listen(self, listener: Listener) -> None:
        """Call ``listener(report)`` after every check (sync or async)."""
        self._listeners.append(listener)

    async def check(self, max_age: float = 0.0) -> HealthReport:
        """Probe every dependency now and build the report.

        Args:
            max_age: reuse the probes of a check younger than this (s) instead of
                probing again (the gRPC service answers often and cheaply with it).
        """
        async with self._lock:
            if time.monotonic() - self._checked_at > max_age:
                for name, (probe, critical) in self._probes.items():
                    await self._probe(name, probe, critical)
                self._checked_at = time.monotonic()
                report = self.report()
                self._export(report)
                for listener in self._listeners:
                    await self._notify(listener, report)
                return report
        return self.report()

    async def _probe(self, name: str, probe: Probe, critical: bool) -> None:
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
        return HealthReport(
            service=self.service, instance=self.instance, version=__version__,
            environment=self.environment, status=status,
            uptime_s=round(time.monotonic() - self.started, 3), timestamp=_now_iso(),
            dependencies=self.dependencies,
            details=details if isinstance(details, dict) else {},
        )


def _now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds")
