"""The standard gRPC health service, asked by a real gRPC client: SERVING while the
service is healthy or degraded, NOT_SERVING while unhealthy and once it stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cdb.errors import LifecycleError
from cdb.observability.grpc_health import READY, GrpcHealthServer
from cdb.observability.health import Health

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Probe:
    def __init__(self) -> None:
        self.error: Exception | None = None

    async def __call__(self) -> None:
        if self.error is not None:
            raise self.error


class Served:
    def __init__(self, server: GrpcHealthServer, redis: Probe, postgres: Probe,
                 stub: Any) -> None:
        self.server, self.redis, self.postgres, self.stub = server, redis, postgres, stub

    async def check(self, service: str = "") -> int:
        response = await self.stub.Check(health_pb2.HealthCheckRequest(service=service),
                                         timeout=5)
        status: int = response.status
        return status


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    health = Health("risk", "risk-grpc", "test")
    redis, postgres = Probe(), Probe()
    health.add("redis", redis, critical=False)
    health.add("postgres", postgres, critical=True)
    server = GrpcHealthServer(health, "127.0.0.1", 0, max_age=0)
    await server.start()
    channel = grpc.aio.insecure_channel(server.address)
    try:
        yield Served(server, redis, postgres, health_pb2_grpc.HealthStub(channel))
    finally:
        await channel.close()
        await server.stop(grace=0)


async def test_status_follows_health(served: Served) -> None:
    assert served.server.port > 0
    assert await served.check() == SERVING
    assert await served.check("risk") == SERVING
    served.redis.error = ConnectionError("refused")  # degraded: still serving
    assert await served.check() == SERVING
    served.postgres.error = OSError("down")  # unhealthy
    assert await served.check() == NOT_SERVING
    assert await served.check("risk") == NOT_SERVING
    served.postgres.error = served.redis.error = None
    assert await served.check() == SERVING


async def test_ready_follows_readiness(served: Served) -> None:
    assert await served.check(READY) == NOT_SERVING
    served.server.health.ready = True
    assert await served.check(READY) == SERVING


async def test_an_unknown_service_is_not_found(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await served.check("nope")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_streams_each_change_found_by_a_check(served: Served) -> None:
    call = served.stub.Watch(health_pb2.HealthCheckRequest(service=""))
    seen: list[int] = [(await call.read()).status]
    served.postgres.error = OSError("down")
    await served.server.health.check()
    seen.append((await asyncio.wait_for(call.read(), 5)).status)
    served.postgres.error = None
    await served.server.health.check()
    seen.append((await asyncio.wait_for(call.read(), 5)).status)
    call.cancel()
    assert seen == [SERVING, NOT_SERVING, SERVING]


async def test_a_stopping_server_says_not_serving_and_cannot_be_restarted() -> None:
    health = Health("ws", "ws-grpc", "test")
    server = GrpcHealthServer(health, "127.0.0.1", 0)
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        call = stub.Watch(health_pb2.HealthCheckRequest(service="ws"))
        assert (await call.read()).status == SERVING
        stopping = asyncio.create_task(server.stop(grace=1))
        assert (await asyncio.wait_for(call.read(), 5)).status == NOT_SERVING
        await stopping
    with pytest.raises(LifecycleError):
        await server.start()


async def test_a_port_in_use_is_an_error() -> None:
    health = Health("ws", "ws-grpc2", "test")
    async with GrpcHealthServer(health, "127.0.0.1", 0) as first:
        second = GrpcHealthServer(health, "127.0.0.1", first.port)
        with pytest.raises(OSError, match="cannot listen"):
            await second.start()
