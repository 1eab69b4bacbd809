"""The HTTP API every service serves: health, liveness, readiness, metrics.

- ``/health``: the one JSON shape, from the state the health schedule last found
  (``Health.cached``, each dependency with its age); 200 while healthy or degraded,
  503 while a dependency critical to the service is down (unhealthy).
- ``/health/ready``: 503 while the service cannot do its job (not started, stopping,
  or unhealthy), with why; what a load balancer or compose's healthcheck asks.
- ``/health/live``: 200 while the process answers at all; what a restart policy asks,
  so an outage of Redis never gets a healthy process killed.
- ``/metrics``: the Prometheus text of the process's registry, with the process and
  Python runtime collectors and ``cdb_build_info``.

Every request carries an id: the ``X-Request-ID`` the NGINX gateway sets (or the
client's), else a new one. It is bound to the log context while the request is
handled, so every line it causes names it, and it is echoed in the response.

Services' control operations (risk's ``/ess``) become routes here (``service_routers``)
and join through ``extra``. Served by uvicorn inside the service's event loop, so probes
see the live state.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import structlog
import uvicorn
from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cdb.observability import metrics
from cdb.observability.health import Health

_requests = Counter(
    "cdb_http_requests", "HTTP requests served", ("service", "instance", "path", "code"),
    registry=metrics.REGISTRY,
)
_latency = Histogram(
    "cdb_http_request_seconds", "HTTP request duration", ("service", "instance", "path"),
    registry=metrics.REGISTRY,
)
_KNOWN_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/metrics"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
"""An id taken as given (nginx's ``$request_id`` is 32 hex digits, a UUID fits); any
other value is replaced, so a header never forges log fields or grows without bound."""
_QUIET_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_log = structlog.get_logger("cdb.runtime.http")


def request_id_of(given: str | None) -> str:
    """The id of a request: the one it carries when well-formed, else a new one."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


class RequestContext:
    """ASGI middleware: the request id (bound to the logs, echoed), and the request
    count and duration by route.

    Requests that change something (not GET, HEAD or OPTIONS) are logged at INFO with
    their status, the others at DEBUG: the probes and scrapes every few seconds would
    drown everything else.
    """

    def __init__(self, app: ASGIApp, service: str, instance: str) -> None:
        self.app = app
        self.labels = (service, instance)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                given = value.decode("latin-1")
                break
        rid = request_id_of(given)
        echoed = (b"x-request-id", rid.encode("latin-1"))
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [h for h in message.get("headers", ()) if h[0] != b"x-request-id"]
                message = {**message, "headers": [*headers, echoed]}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=rid):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                raw_path = str(scope.get("path", ""))
                route = scope.get("route")
                path = getattr(route, "path", None) or (
                    raw_path if raw_path in _KNOWN_PATHS else "other"
                )
                _requests.labels(*self.labels, path, str(status)).inc()
                _latency.labels(*self.labels, path).observe(elapsed)
                method = str(scope.get("method", ""))
                level = "debug" if method in _QUIET_METHODS else "info"
                getattr(_log, level)("http request", method=method, path=raw_path,
                                     status=status, duration_ms=round(elapsed * 1000, 3))


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    """``body`` encoded by msgspec as a JSON response."""
    return Response(msgspec.json.encode(body), status, headers=headers,
                    media_type="application/json")


def build_app(health: Health, extra: list[APIRouter] | None = None) -> FastAPI:
    """The FastAPI app of one service."""
    app = FastAPI(title=f"cdb {health.service}", version=health.report().version)
    # The process metrics carry the identity of the service this process serves.
    metrics.claim_process(health.service, health.instance)
    app.add_middleware(RequestContext, service=health.service, instance=health.instance)

    @app.get("/health")
    async def get_health() -> Response:
        report = await health.cached()
        return json_response(report, 503 if report.status == "unhealthy" else 200)

    @app.get("/health/live")
    async def live() -> Response:
        uptime = round(time.monotonic() - health.started, 3)
        return json_response({"status": "alive", "uptime_s": uptime})

    @app.get("/health/ready")
    async def ready() -> Response:
        report = await health.cached()
        why = health.not_ready_because(report)
        body: dict[str, object] = {"ready": not why, "status": report.status}
        if why:
            body["why"] = why
        return json_response(body, 503 if why else 200)

    @app.get("/metrics")
    async def get_metrics() -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    for router in extra or []:
        app.include_router(router)
    return app


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the entry point alone owns OS signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """uvicorn serving ``app`` on ``host:port`` as a task of the current loop."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        # log_config=None: uvicorn's loggers propagate to the root logger, which
        # observability.logging.configure renders as JSON like every other line.
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                lifespan="off", log_config=None)
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(), name="http")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError("HTTP server exited at start")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        """The port it listens on (the one the OS chose when asked for port 0)."""
        for server in getattr(self._server, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self._server.config.port)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.wait([self._task], timeout=5)
