"""The HTTP API of a service: /health in one shape (200 unless unhealthy) served from the
last scheduled check, liveness and readiness apart, /metrics in the Prometheus text
format with the process and runtime collectors, and the request id of the gateway in
the logs and the response."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import pytest
import structlog
from fastapi import APIRouter
from prometheus_client.parser import text_string_to_metric_families

from cdb import __version__
from cdb.observability import logging as cdb_logging
from cdb.observability import metrics
from cdb.observability.health import Health
from cdb.runtime.http import build_app, request_id_of


class Probe:
    def __init__(self) -> None:
        self.error: Exception | None = None
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error


def client(health: Health, extra: list[APIRouter] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(health, extra)),
                             base_url="http://svc")


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    cdb_logging.configure("DEBUG", stream=buffer)
    cdb_logging.bind_process(service="risk", instance="risk-rid")
    try:
        yield buffer
    finally:
        cdb_logging.reset()


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


async def test_health_has_one_shape_and_answers_by_status() -> None:
    health = Health("signal", "signal-http", "test")
    redis, exchange = Probe(), Probe()
    health.add("redis", redis)  # critical to signal (a consumer)
    health.add("exchange", exchange, critical=False)
    async with client(health) as http:
        response = await http.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"service", "instance", "version", "environment", "status",
                             "uptime_s", "timestamp", "dependencies", "details"}
        assert body["status"] == "healthy"
        assert set(body["dependencies"]["redis"]) == {"status", "latency_ms", "last_error",
                                                     "checked_at", "critical", "age_s"}
        assert body["dependencies"]["redis"]["critical"] is True
        exchange.error = ConnectionError("https://u:s3cr3t-pw@x refused")
        await health.check()  # the schedule's round
        response = await http.get("/health")
        assert (response.status_code, response.json()["status"]) == (200, "degraded")
        assert "s3cr3t-pw" not in response.text
        assert "refused" in response.json()["dependencies"]["exchange"]["last_error"]
        redis.error = OSError("down")
        await health.check()
        response = await http.get("/health")
        assert (response.status_code, response.json()["status"]) == (503, "unhealthy")


async def test_health_requests_never_probe_between_scheduled_checks() -> None:
    health = Health("execution", "exec-cached", "test", max_age=60)
    exchange = Probe()
    health.add("exchange", exchange)
    async with client(health) as http:
        for _ in range(20):
            assert (await http.get("/health")).status_code == 200
            await http.get("/health/ready")
        assert exchange.calls == 1  # the first read, when nothing was known yet
        age = (await http.get("/health")).json()["dependencies"]["exchange"]["age_s"]
        assert age >= 0


async def test_liveness_and_readiness_are_separate() -> None:
    health = Health("signal", "signal-ready", "test")
    probe = Probe()
    health.add("redis", probe)
    async with client(health) as http:
        assert (await http.get("/health/live")).status_code == 200
        response = await http.get("/health/ready")
        assert response.status_code == 503  # not started yet
        assert response.json()["why"] == ["not started, or stopping"]
        health.ready = True
        assert (await http.get("/health/ready")).json() == {"ready": True, "status": "healthy"}
        probe.error = OSError("down")
        await health.check()
        response = await http.get("/health/ready")
        assert response.status_code == 503
        assert response.json() == {"ready": False, "status": "unhealthy", "why": ["redis down"]}
        live = await http.get("/health/live")
        assert live.status_code == 200
        assert live.json()["status"] == "alive"


async def test_a_degraded_producer_stays_ready() -> None:
    """ws buffers to disk while Redis is down: degraded, 200, and still ready."""
    health = Health("ws", "ws-ready", "test")
    probe = Probe()
    health.add("redis", probe)
    health.ready = True
    probe.error = OSError("down; 12 events buffered on disk")
    async with client(health) as http:
        await health.check()
        response = await http.get("/health")
        assert (response.status_code, response.json()["status"]) == (200, "degraded")
        assert (await http.get("/health/ready")).status_code == 200


async def test_metrics_count_the_requests_of_the_api() -> None:
    health = Health("execution", "exec-http", "test")
    async with client(health) as http:
        await http.get("/health")
        await http.get("/nowhere")
        response = await http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert ('cdb_http_requests_total{code="200",instance="exec-http",path="/health",'
            'service="execution"} 1.0') in text
    assert 'path="other"' in text
    assert 'cdb_health_status{instance="exec-http",service="execution"} 0.0' in text


async def test_metrics_have_the_process_and_runtime_collectors_and_the_version() -> None:
    health = Health("signal", "signal-proc", "test")
    async with client(health) as http:
        text = (await http.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    identity = metrics.process_identity()
    assert identity, "build_app claims the process"
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds",
                 "process_max_fds", "python_gc_collections", "python_info"):
        assert name in families, name
        for sample in families[name].samples:
            assert {"service", "instance"} <= sample.labels.keys(), name
            assert sample.labels["service"] == identity["service"]
    build = [s for s in families["cdb_build_info"].samples
             if s.labels["instance"] == "signal-proc"]
    assert [s.labels["version"] for s in build] == [__version__]


def test_the_first_claim_labels_the_process() -> None:
    before = metrics.process_identity()
    try:
        metrics.claim_process("ws", "ws-claim", replace=True)
        assert not metrics.claim_process("risk", "risk-claim")
        assert metrics.process_identity() == {"service": "ws", "instance": "ws-claim"}
    finally:
        if before:
            metrics.claim_process(before["service"], before["instance"], replace=True)


@pytest.mark.parametrize(("given", "kept"), [
    ("0123456789abcdef0123456789abcdef", True),  # nginx's $request_id
    ("3f2b8c1e-9d4a-4b7e-8f00-123456789abc", True),
    ("", False),
    ("bad id\nwith=lines", False),
    ("x" * 129, False),
])
def test_a_well_formed_request_id_is_kept_and_any_other_replaced(given: str, kept: bool) -> None:
    rid = request_id_of(given or None)
    assert (rid == given) is kept
    assert 1 <= len(rid) <= 128


async def test_the_request_id_is_echoed_and_on_every_log_line_of_the_request(
    logs: io.StringIO,
) -> None:
    router = APIRouter()

    @router.post("/ess/trip")
    async def trip() -> dict[str, str]:
        structlog.get_logger("risk").warning("tripped by hand")
        return {"state": "HALTED"}

    health = Health("risk", "risk-rid", "test")
    async with client(health, [router]) as http:
        response = await http.post("/ess/trip", headers={"X-Request-ID": "gw-5f1c9a0b"})
        assert response.headers["X-Request-ID"] == "gw-5f1c9a0b"
        made = await http.get("/health/live")
        generated = made.headers["X-Request-ID"]
        assert len(generated) == 32
    found = lines(logs)
    tripped = [line for line in found if line["event"] == "tripped by hand"]
    assert [line["request_id"] for line in tripped] == ["gw-5f1c9a0b"]
    access = {line["path"]: line for line in found if line["event"] == "http request"}
    assert access["/ess/trip"]["request_id"] == "gw-5f1c9a0b"
    assert access["/ess/trip"]["level"] == "info"  # a change is logged at INFO
    assert (access["/ess/trip"]["status"], access["/ess/trip"]["method"]) == (200, "POST")
    assert access["/health/live"]["request_id"] == generated
    assert access["/health/live"]["level"] == "debug"  # probes stay quiet at INFO
    after = [line for line in found if line["event"] not in ("http request", "tripped by hand")]
    assert all("request_id" not in line for line in after), "unbound after the request"
