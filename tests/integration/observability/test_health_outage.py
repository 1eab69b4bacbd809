"""Health as orchestrators see it, per service, over real HTTP and a real Redis that is
stopped and started: a consumer is unhealthy (503) and not ready while Redis is down,
the producer (ws, which buffers on disk) degraded (200) and still ready, liveness 200
throughout; all healthy again once Redis is back. And the cached health never sends a
request to the exchange per call.

Each service's health is put together as ``cdb service NAME`` does: the bus and its
Redis probe from ``cdb.bus.redis``, the criticality the service declares
(``observability.health.CRITICAL``), the ``Monitor`` as the schedule, the HTTP app.
The breaker opens for 1 s here instead of 60 s: these tests are about what health
reports; recovering on the default settings is the resilience suite's (issue 12, 1).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cdb.bus.buffered import BufferedBus
from cdb.bus.redis import make_bus, make_redis, redis_probe
from cdb.bus.redis_streams import RedisStreamsBus
from cdb.config import load_settings
from cdb.observability.health import Health
from cdb.observability.monitor import Monitor
from cdb.runtime.http import HttpServer, build_app
from cdb.testing.fake_binance import FakeBinance
from cdb.testing.ports import free_port
from cdb.testing.redis import RedisServer
from cdb.testing.waiting import eventually_async

pytestmark = pytest.mark.integration

SERVICES = ("ws", "signal", "risk", "execution", "db_writer")
CONSUMERS = frozenset(SERVICES) - {"ws"}


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this module alone: its tests stop it."""
    with RedisServer() as server:
        yield server


class Served:
    """One service's health behind its HTTP API."""

    def __init__(self, health: Health, url: str) -> None:
        self.health = health
        self.http = httpx.AsyncClient(base_url=url, timeout=5)

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(path)


Serve = Callable[[str], Awaitable[Served]]


@pytest.fixture
async def serve(own_redis: RedisServer, tmp_path: Path) -> AsyncIterator[Serve]:
    """``await serve(name)``: the service's health served; all stopped at teardown."""
    stack: list[tuple[Monitor, HttpServer, BufferedBus[RedisStreamsBus], httpx.AsyncClient]] = []
    namespace = f"h{uuid.uuid4().hex[:10]}"

    async def make(name: str) -> Served:
        settings = load_settings(environ={
            "REDIS_HOST": own_redis.host, "REDIS_PORT": str(own_redis.port),
            "REDIS_PASSWORD": "", "SERVICE_INSTANCE_NAME": namespace,
            "CDB_SECRETS_DIR": str(tmp_path / "no-secrets"),
            "CDB_BUFFER_DIR": str(tmp_path / "buffers" / name),
            "CDB_BREAKER_OPEN_S": "1", "REDIS_SOCKET_TIMEOUT_S": "1", "REDIS_RETRIES": "0",
        })
        client = make_redis(settings)
        bus = make_bus(settings, client, service=name, instance=f"{name}-h")
        await bus.start()
        health = Health(name, f"{name}-h", "test", probe_timeout=2.0)
        health.add("redis", redis_probe(bus, client))  # criticality as declared
        http = HttpServer(build_app(health), "127.0.0.1", free_port())
        await http.start()
        health.ready = True
        monitor = Monitor(health, interval=0.2)
        await monitor.start()
        served = Served(health, f"http://127.0.0.1:{http.port}")
        stack.append((monitor, http, bus, served.http))
        return served

    yield make
    for monitor, http, bus, client in reversed(stack):
        await monitor.stop()
        await http.stop()
        await client.aclose()
        await bus.close()


@pytest.mark.parametrize("name", SERVICES)
async def test_health_while_redis_is_down_then_back(
    name: str, serve: Serve, own_redis: RedisServer,
) -> None:
    svc = await serve(name)
    assert (await svc.get("/health")).status_code == 200
    assert (await svc.get("/health/ready")).status_code == 200
    await asyncio.to_thread(own_redis.stop)
    try:
        async def redis_down() -> bool:
            body = (await svc.get("/health")).json()
            return bool(body["dependencies"]["redis"]["status"] == "down")

        await eventually_async(redis_down, 10, f"{name} sees Redis down")
        health = await svc.get("/health")
        ready = await svc.get("/health/ready")
        live = await svc.get("/health/live")
        body = health.json()
        assert body["dependencies"]["redis"]["last_error"]
        assert body["dependencies"]["redis"]["age_s"] < 5
        if name in CONSUMERS:
            assert (health.status_code, body["status"]) == (503, "unhealthy"), name
            assert ready.status_code == 503
            assert ready.json()["why"] == ["redis down"]
        else:  # the producer buffers on disk
            assert (health.status_code, body["status"]) == (200, "degraded"), name
            assert ready.status_code == 200
        assert live.status_code == 200
    finally:
        await asyncio.to_thread(own_redis.start)

    async def healthy() -> bool:
        response = await svc.get("/health")
        return response.status_code == 200 and response.json()["status"] == "healthy"

    await eventually_async(healthy, 15, f"{name} healthy again")
    assert (await svc.get("/health/ready")).status_code == 200


async def test_health_never_calls_the_exchange_per_request() -> None:
    """Execution on Binance: however often /health and /health/ready are asked, the
    exchange sees the scheduled pings only (at most one per PROBE_EVERY, 30 s)."""
    from cdb.venues.binance import BinanceVenue, BinanceVenueConfig

    async with FakeBinance(symbols=["BTCUSDT"]) as fake:
        venue = BinanceVenue(BinanceVenueConfig(rest_url=fake.url, timeout_s=1.0),
                             api_key=fake.api_key, api_secret=fake.api_secret)
        await venue.start()
        health = Health("execution", "exec-fake", "test")
        health.add("exchange", venue.ping)  # criticality and cadence as declared
        health.ready = True
        monitor = Monitor(health, interval=0.1)
        http = HttpServer(build_app(health), "127.0.0.1", free_port())
        await http.start()
        try:
            before = fake.stats.requests
            await monitor.start()  # its first round pings once
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}") as client:
                for _ in range(50):
                    body = (await client.get("/health")).json()
                    assert (await client.get("/health/ready")).status_code == 200
                    await asyncio.sleep(0.01)
            assert body["dependencies"]["exchange"]["status"] == "up"
            assert body["dependencies"]["exchange"]["age_s"] >= 0.4
            assert monitor.rounds >= 4, "the schedule ran meanwhile"
            assert fake.stats.requests - before == 1, "one ping, not one per request"
        finally:
            await monitor.stop()
            await http.stop()
            await venue.aclose()
