"""The coordinator observed like every service: ``/health`` and ``/metrics``.

``cdb scenario run`` serves them while the run goes on (on a free port unless
``--http-port N``; the URL is in the progress and the outcome): health carries
the live state of the run (phase, scenario time, faults in force, last probe values),
metrics the scenario time, the faults in force and, at the end, the verdict and the
assertions by result. Labels ``service="coordinator"`` and ``instance`` (the run's
namespace), as on every cdb metric.
"""

from __future__ import annotations

from typing import Any, Final

from prometheus_client import Counter, Gauge

from cdb.observability import metrics
from cdb.observability.health import Health
from cdb.runtime.http import HttpServer, build_app

SERVICE: Final = "coordinator"
_L = ("service", "instance")

scenario_time = Gauge("cdb_chaos_scenario_seconds", "Scenario time of the run in progress",
                      _L, registry=metrics.REGISTRY)
faults_active = Gauge("cdb_chaos_faults_active", "Faults applied and not yet undone", _L,
                      registry=metrics.REGISTRY)
runs = Counter("cdb_chaos_runs", "Scenario runs finished, by verdict", (*_L, "verdict"),
               registry=metrics.REGISTRY)
assertions = Gauge("cdb_chaos_assertions", "Assertions of the last run, by result",
                   (*_L, "status"), registry=metrics.REGISTRY)


class CoordinatorApi:
    """The HTTP server of one run.

    Args:
        namespace: the run's namespace (its ``instance``).
        state: the live state of the run (``Runner.state``).
    """

    def __init__(self, namespace: str, state: Any, host: str, port: int) -> None:
        self.namespace = namespace
        health = Health(SERVICE, namespace, "chaos")
        health.details = state
        health.ready = True
        self._server = HttpServer(build_app(health), host, port)

    async def start(self) -> None:
        await self._server.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    async def stop(self) -> None:
        await self._server.stop()

    def update(self, state: dict[str, Any]) -> None:
        labels = (SERVICE, self.namespace)
        t = state.get("t", 0.0)
        scenario_time.labels(*labels).set(t if t != float("-inf") else 0.0)
        faults_active.labels(*labels).set(len(state.get("active") or {}))

    def conclude(self, verdict: str, by_status: dict[str, int]) -> None:
        labels = (SERVICE, self.namespace)
        runs.labels(*labels, verdict).inc()
        for status in ("pass", "fail", "unknown"):
            assertions.labels(*labels, status).set(by_status.get(status, 0))
