"""The HTTP API of a service: /health in one shape (200 unless unhealthy), liveness and
readiness apart, /metrics in the Prometheus text format."""

from __future__ import annotations

import httpx

from cdb.observability.health import Health
from cdb.runtime.http import build_app


class Probe:
    def __init__(self) -> None:
        self.error: Exception | None = None

    async def __call__(self) -> None:
        if self.error is not None:
            raise self.error


def client(health: Health) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(health)),
                             base_url="http://svc")


async def test_health_has_one_shape_and_answers_by_status() -> None:
    health = Health("signal", "signal-http", "test")
    redis, postgres = Probe(), Probe()
    health.add("redis", redis, critical=False)
    health.add("postgres", postgres)
    async with client(health) as http:
        response = await http.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"service", "instance", "version", "environment", "status",
                             "uptime_s", "timestamp", "dependencies", "details"}
        assert body["status"] == "healthy"
        assert set(body["dependencies"]["redis"]) == {"status", "latency_ms", "last_error",
                                                     "checked_at", "critical"}
        redis.error = ConnectionError("redis://:s3cr3t-pw@r:6379 refused")
        response = await http.get("/health")
        assert (response.status_code, response.json()["status"]) == (200, "degraded")
        assert "s3cr3t-pw" not in response.text
        assert "refused" in response.json()["dependencies"]["redis"]["last_error"]
        postgres.error = OSError("down")
        response = await http.get("/health")
        assert (response.status_code, response.json()["status"]) == (503, "unhealthy")


async def test_liveness_and_readiness_are_separate() -> None:
    health = Health("risk", "risk-http", "test")
    probe = Probe()
    health.add("postgres", probe)
    async with client(health) as http:
        assert (await http.get("/health/live")).status_code == 200
        assert (await http.get("/health/ready")).status_code == 503  # not started yet
        health.ready = True
        assert (await http.get("/health/ready")).json() == {"ready": True, "status": "healthy"}
        probe.error = OSError("down")
        assert (await http.get("/health/ready")).status_code == 503
        assert (await http.get("/health/live")).status_code == 200


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
