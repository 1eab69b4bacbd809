"""Health: the status follows the dependencies and what each service declares critical,
every check updates the metrics and the listeners, reads between checks are served from
the last one (with its age), and no secret reaches the report."""

from __future__ import annotations

import asyncio

import pytest

from cdb.observability import metrics
from cdb.observability.health import CRITICAL, Health, HealthReport, is_critical
from cdb.observability.monitor import Monitor

_n = 0


def fresh(service: str = "svc") -> Health:
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


@pytest.mark.parametrize(("service", "redis", "postgres", "exchange"), [
    ("ws", "degraded", None, "degraded"),
    ("signal", "unhealthy", None, None),
    ("risk", "unhealthy", "degraded", None),
    ("execution", "unhealthy", "degraded", "degraded"),
    ("db_writer", "unhealthy", "unhealthy", None),
])
async def test_each_service_declares_what_it_cannot_work_without(
    service: str, redis: str, postgres: str | None, exchange: str | None,
) -> None:
    """The README's table: one dependency down at a time gives this status."""
    expected = {"redis": redis, "postgres": postgres, "exchange": exchange}
    for name, status in expected.items():
        if status is None:
            continue
        health = fresh(service)
        probe = Switch()
        health.add(name, probe)
        probe.error = ConnectionError("down")
        assert (await health.check()).status == status, (service, name)
        assert is_critical(service, name) is (status == "unhealthy")


def test_the_table_covers_the_five_services_and_others_are_strict() -> None:
    assert set(CRITICAL) == {"ws", "signal", "risk", "execution", "db_writer"}
    assert is_critical("embedded", "database")
    assert is_critical("anything", "redis")


async def test_an_explicit_critical_overrides_the_declaration() -> None:
    health = fresh("signal")
    probe = Switch()
    probe.error = OSError("down")
    health.add("redis", probe, critical=False)
    assert (await health.check()).status == "degraded"


async def test_reads_between_checks_serve_the_last_state_with_its_age() -> None:
    """/health reads ``cached``: within ``max_age`` no probe runs, however many reads."""
    health = Health("svc", "svc-cached", "test", max_age=60)
    probe = Switch()
    health.add("redis", probe)
    first = await health.cached()  # nothing known yet: one check
    assert probe.calls == 1
    assert first.dependencies["redis"].age_s is not None
    probe.error = OSError("down")
    for _ in range(50):
        report = await health.cached()
    assert probe.calls == 1
    assert report.status == "healthy", "the state of the last check, not a new probe"
    await asyncio.sleep(0.05)
    aged = health.report().dependencies["redis"].age_s
    assert aged is not None
    assert aged >= 0.05
    assert (await health.check()).status == "unhealthy"  # the schedule's next round
    assert probe.calls == 2
    assert (await health.cached()).status == "unhealthy"


async def test_a_stale_state_is_probed_again_when_no_schedule_keeps_it_fresh() -> None:
    health = Health("svc", "svc-stale", "test", max_age=0.05)
    probe = Switch()
    health.add("redis", probe)
    await health.cached()
    await asyncio.sleep(0.06)
    await health.cached()
    assert probe.calls == 2


async def test_a_dependency_probed_every_n_seconds_is_not_probed_by_every_check() -> None:
    """The exchange ping costs request weight: at most once per ``every``."""
    health = fresh()
    exchange, redis = Switch(), Switch()
    health.add("exchange", exchange, critical=False, every=60)
    health.add("redis", redis)
    for _ in range(5):
        await health.check()
    assert (exchange.calls, redis.calls) == (1, 5)
    assert health.report().dependencies["exchange"].status == "up"


async def test_the_monitor_keeps_reads_from_probing_between_its_rounds() -> None:
    health = Health("svc", "svc-mon", "test", max_age=0.01, probe_timeout=0.2)
    probe = Switch()
    health.add("redis", probe)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.Event().wait()

    monitor = Monitor(health, interval=5.0, sleep=sleep)
    await monitor.start()
    try:
        assert health.max_age >= 10.0, "covers a round's interval and its probes"
        await asyncio.sleep(0.05)
        for _ in range(10):
            await health.cached()
        assert probe.calls == 1  # the monitor's first round only
    finally:
        await monitor.stop()


async def test_a_read_does_not_wait_for_a_check_that_is_probing() -> None:
    """A blackholed Redis holds a scheduled check for the probe timeout; /health still
    answers at once with the last state."""
    health = Health("svc", "svc-busy", "test", max_age=60, probe_timeout=5)
    release = asyncio.Event()
    slow = False

    async def probe() -> None:
        if slow:
            await release.wait()

    health.add("redis", probe)
    await health.check()
    slow = True
    probing = asyncio.create_task(health.check())
    await asyncio.sleep(0.01)
    async with asyncio.timeout(0.5):
        assert (await health.cached()).status == "healthy"
    release.set()
    await probing
