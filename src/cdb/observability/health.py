"""Health: one JSON shape for every service, built from dependency checks.

``status`` is ``healthy`` when every dependency is up, ``degraded`` when one is down
but the service copes (events buffered, batches held), ``unhealthy`` when it cannot
work. ``degraded`` answers 200, ``unhealthy`` 503. Secrets never appear: errors are
masked before they are stored.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal

import msgspec

from cdb import __version__
from cdb.observability.logging import mask_text

Status = Literal["healthy", "degraded", "unhealthy"]
DepStatus = Literal["up", "down", "unknown"]
Probe = Callable[[], Awaitable[None]]


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
    """

    def __init__(self, service: str, instance: str, environment: str) -> None:
        self.service = service
        self.instance = instance
        self.environment = environment
        self.started = time.monotonic()
        self.ready = False
        self._probes: dict[str, tuple[Probe, bool]] = {}
        self.dependencies: dict[str, Dependency] = {}
        self.details: Callable[[], dict[str, object]] = dict

    def add(self, name: str, probe: Probe, *, critical: bool = True) -> None:
        """Check ``name`` with ``probe`` (raises when down)."""
        self._probes[name] = (probe, critical)
        self.dependencies[name] = Dependency(critical=critical)

    async def check(self) -> HealthReport:
        """Probe every dependency now and build the report."""
        for name, (probe, critical) in self._probes.items():
            dep = self.dependencies[name]
            started = time.perf_counter()
            try:
                await probe()
            except Exception as exc:
                dep.status = "down"
                dep.last_error = mask_text(f"{type(exc).__name__}: {exc}")[:300]
                dep.latency_ms = None
            else:
                dep.status = "up"
                dep.latency_ms = round((time.perf_counter() - started) * 1000, 3)
            dep.checked_at = _now_iso()
            dep.critical = critical
        return self.report()

    def report(self) -> HealthReport:
        down = [d for d in self.dependencies.values() if d.status == "down"]
        status: Status = "healthy"
        if any(d.critical for d in down):
            status = "unhealthy"
        elif down:
            status = "degraded"
        return HealthReport(
            service=self.service, instance=self.instance, version=__version__,
            environment=self.environment, status=status,
            uptime_s=round(time.monotonic() - self.started, 3), timestamp=_now_iso(),
            dependencies=self.dependencies, details=self.details(),
        )


def _now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds")
