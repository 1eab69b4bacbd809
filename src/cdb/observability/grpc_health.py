"""The standard gRPC health service (``grpc.health.v1.Health``) of one service.

Serving status follows ``/health``: ``SERVING`` while the service is healthy or
degraded, ``NOT_SERVING`` while it is unhealthy, and once it stops. Three names are
answered:

- ``""``: the whole server, as ``/health`` (what ``grpc_health_probe`` and Kubernetes
  ask by default);
- the service kind (``ws``, ``signal``, ...), the same;
- ``ready``: as ``/health/ready`` (``NOT_SERVING`` until the service has started).

``Check`` answers from the same cached state as ``/health`` (probing only when it is
older than ``max_age``); ``Watch`` streams every change the periodic health checks
find. Needs ``grpcio`` and ``grpcio-health-checking`` (the ``grpc`` extra).
"""

from __future__ import annotations

from typing import Any

import structlog

from cdb.errors import ConfigError
from cdb.lifecycle import State, starting
from cdb.observability.health import Health, HealthReport

READY = "ready"
"""The service name whose status follows ``/health/ready``."""

_log = structlog.get_logger("cdb.observability.grpc_health")


def _modules() -> tuple[Any, Any, Any, Any]:
    try:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        from grpc_health.v1.health import aio as health_aio
    except ImportError as exc:
        raise ConfigError([
            f"CDB_GRPC_PORT: the gRPC health service needs grpcio and grpcio-health-checking "
            f"({exc.name} is missing): pip install 'cdb[grpc]', or unset CDB_GRPC_PORT"
        ]) from None
    return grpc, health_pb2, health_pb2_grpc, health_aio


class GrpcHealthServer:
    """A gRPC server on ``host:port`` with the health service of ``health``.

    Args:
        health: the service's health (the same object ``/health`` reports).
        host, port: where to listen; port 0 picks a free one (see ``port`` after start).
        max_age: ``Check`` reuses a health check younger than this (s); by default
            the health's own (``Health.max_age``), as ``/health`` does.
    """

    def __init__(self, health: Health, host: str, port: int, *,
                 max_age: float | None = None) -> None:
        self.health = health
        self.host = host
        self.port = port
        self.max_age = max_age
        self.state = State.CREATED
        self._server: Any = None
        self._servicer: Any = None
        self._pb2: Any = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def __aenter__(self) -> GrpcHealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen and serve; statuses are set from a first health check.

        Raises:
            ConfigError: grpcio is not installed.
            OSError: the port cannot be bound.
        """
        grpc, pb2, pb2_grpc, health_aio = _modules()
        self.state = starting("gRPC health server", self.state)
        self._pb2 = pb2
        health, max_age = self.health, self.max_age

        base = health_aio.HealthServicer

        async def check(servicer: Any, request: Any, context: Any) -> Any:
            await health.cached(max_age)  # a new check's listener sets the statuses
            return await base.Check(servicer, request, context)

        self._servicer = type("CdbHealthServicer", (base,), {"Check": check})()
        # No SO_REUSEPORT: a second process on the same port must fail, not share it.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        pb2_grpc.add_HealthServicer_to_server(self._servicer, server)
        try:
            bound = server.add_insecure_port(self.address)
        except RuntimeError as exc:
            bound, error = 0, f": {exc}"
        else:
            error = ""
        if not bound:
            self.state = State.STOPPED
            await server.stop(None)
            raise OSError(f"gRPC health: cannot listen on {self.address}{error}")
        self.port = bound
        self._server = server
        self.health.listen(self._on_report)
        await self._on_report(self.health.report())
        await server.start()
        _log.info("gRPC health serving", address=self.address)

    async def _on_report(self, report: HealthReport) -> None:
        if self.state is not State.RUNNING:
            return
        status = self._pb2.HealthCheckResponse
        serving = status.SERVING if report.status != "unhealthy" else status.NOT_SERVING
        ready = serving if self.health.ready else status.NOT_SERVING
        for name in ("", self.health.service):
            await self._servicer.set(name, serving)
        await self._servicer.set(READY, ready)

    async def stop(self, grace: float = 1.0) -> None:
        """Answer ``NOT_SERVING`` to everyone, then stop within ``grace`` s."""
        if self.state is not State.RUNNING:
            self.state = State.STOPPED
            return
        self.state = State.STOPPING
        try:
            await self._servicer.enter_graceful_shutdown()
            await self._server.stop(grace)
        finally:
            self.state = State.STOPPED
