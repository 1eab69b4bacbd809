"""Health: the status follows the dependencies, every check updates the metrics and the
listeners, and no secret reaches the report."""

from __future__ import annotations

import asyncio

import pytest

from cdb.observability import metrics
from cdb.observability.health import Health, HealthReport

_n = 0


def fresh(service: str = "risk") -> Health:
    """A Health with its own instance name, so metric values do not mix across tests."""
    global _n
    _n += 1
    return Health(service, f"{service}-h{_n}", "test", probe_timeout=0.2)


class Switch:
    """A probe that fails with ``error`` while set."""

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error


def value(name: str, labels: dict[str, str]) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


async def test_status_is_healthy_degraded_or_unhealthy_by_what_is_down() -> None:
    health = fresh()
    redis, postgres = Switch(), Switch()
    health.add("redis", redis, critical=False)
    health.add("postgres", postgres)
    assert (await health.check()).status == "healthy"
    redis.error = ConnectionError("refused")
    report = await health.check()
    assert report.status == "degraded"
    assert report.dependencies["redis"].status == "down"
    assert report.dependencies["redis"].last_error == "ConnectionError: refused"
    assert report.dependencies["redis"].latency_ms is None
    postgres.error = OSError("gone")
    assert (await health.check()).status == "unhealthy"


async def test_each_check_updates_the_health_and_dependency_metrics() -> None:
    health = fresh()
    redis = Switch()
    health.add("redis", redis, critical=False)
    labels = {"service": health.service, "instance": health.instance}
    dep = {**labels, "dependency": "redis"}
    await health.check()
    assert value("cdb_redis_up", labels) == 1
    assert value("cdb_dependency_up", dep) == 1
    assert value("cdb_health_status", labels) == 0
    assert value("cdb_dependency_reconnects_total", dep) == 0  # exists before the first
    redis.error = ConnectionError("refused")
    await health.check()
    assert value("cdb_redis_up", labels) == 0
    assert value("cdb_health_status", labels) == 1
    redis.error = None
    await health.check()
    assert value("cdb_redis_up", labels) == 1
    assert value("cdb_dependency_reconnects_total", dep) == 1


async def test_a_probe_that_hangs_counts_as_down() -> None:
    health = fresh()

    async def hangs() -> None:
        await asyncio.sleep(10)

    health.add("redis", hangs)
    report = await health.check()
    assert report.status == "unhealthy"
    assert "no answer within 0.2 s" in (report.dependencies["redis"].last_error or "")


async def test_listeners_hear_every_check_and_a_failing_one_does_no_harm() -> None:
    health = fresh()
    heard: list[str] = []

    async def listener(report: HealthReport) -> None:
        heard.append(report.status)

    def broken(report: HealthReport) -> None:
        raise RuntimeError("listener bug")

    health.listen(broken)
    health.listen(listener)
    await health.check()
    await health.check()
    assert heard == ["healthy", "healthy"]


async def test_max_age_reuses_a_recent_check() -> None:
    health = fresh()
    probe = Switch()
    health.add("redis", probe)
    await health.check()
    await health.check(max_age=60)
    assert probe.calls == 1
    await health.check()
    assert probe.calls == 2


async def test_errors_and_details_are_masked() -> None:
    health = fresh()
    probe = Switch()
    probe.error = ConnectionError("redis://:pw-123456@host:6379 refused")
    health.add("redis", probe)
    health.details = lambda: {"url": "postgresql://u:pw-654321@h/db", "api_token": "t0k3n"}
    report = await health.check()
    text = repr(report)
    for secret in ("pw-123456", "pw-654321", "t0k3n"):
        assert secret not in text


@pytest.mark.parametrize("critical", [True, False])
async def test_report_without_probing_keeps_the_last_results(critical: bool) -> None:
    health = fresh()
    probe = Switch()
    probe.error = OSError("x")
    health.add("redis", probe, critical=critical)
    await health.check()
    assert health.report().status == ("unhealthy" if critical else "degraded")
    assert probe.calls == 1
