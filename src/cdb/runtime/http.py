"""The HTTP API every service serves: health, liveness, readiness, metrics.

Services add their own routes (risk's ``/ess``) through ``extra`` routers. Served by
uvicorn inside the service's event loop, so probes see the live state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import msgspec
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

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


def build_app(health: Health, extra: list[APIRouter] | None = None) -> FastAPI:
    """The FastAPI app of one service."""
    app = FastAPI(title=f"cdb {health.service}", version=health.report().version)
    labels = (health.service, health.instance)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        response: Response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", None) or (
            request.url.path if request.url.path in _KNOWN_PATHS else "other"
        )
        _requests.labels(*labels, path, str(response.status_code)).inc()
        _latency.labels(*labels, path).observe(time.perf_counter() - started)
        return response

    @app.get("/health")
    async def get_health() -> Response:
        report = await health.check()
        code = 503 if report.status == "unhealthy" else 200
        return Response(msgspec.json.encode(report), code, media_type="application/json")

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health/ready")
    async def ready() -> Response:
        report = await health.check()
        ok = health.ready and report.status != "unhealthy"
        body = {"ready": ok, "status": report.status}
        return Response(msgspec.json.encode(body), 200 if ok else 503,
                        media_type="application/json")

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
