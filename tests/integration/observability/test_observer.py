"""The observer a distributed service runs, over a real Redis: stream length and lag
sampled from the streams, the instance registered with its gRPC address, and all of it
undone on stop."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cdb.bus.keys import MARKET_DATA, Namespace
from cdb.bus.redis import make_bus, make_redis, redis_probe
from cdb.config import load_settings
from cdb.events import Alert
from cdb.observability import metrics
from cdb.observability.health import Health
from cdb.runtime.discovery import discover
from cdb.runtime.observer import ServiceObserver, streams_of
from cdb.testing.redis import RedisServer

pytestmark = pytest.mark.integration


def alert(i: int) -> Alert:
    return Alert(id=f"a{i}", ts=i, correlation_id=f"c{i}", causation_id="", source="t",
                 level="info", code="ok", message="m")


def test_what_each_service_samples() -> None:
    assert [(w.topic, w.group) for w in streams_of("ws", ())] == [(MARKET_DATA, None)]
    assert [(w.topic, w.group) for w in streams_of("signal", (MARKET_DATA,))] == [
        (MARKET_DATA, "signal")]


async def test_the_observer_samples_registers_and_serves_grpc(
    redis_server: RedisServer, namespace: Namespace, tmp_path: Path
) -> None:
    settings = load_settings(environ={
        "REDIS_HOST": redis_server.host, "REDIS_PORT": str(redis_server.port),
        "REDIS_PASSWORD": "", "SERVICE_INSTANCE_NAME": namespace.name,
        "CDB_BUFFER_DIR": str(tmp_path), "CDB_GRPC_PORT_SIGNAL": "0",
        "CDB_MONITOR_INTERVAL_S": "60", "CDB_SECRETS_DIR": str(tmp_path),
    })
    client = make_redis(settings)
    bus = make_bus(settings, client, service="signal", instance="signal-obs")
    await bus.start()
    topic = "stream.obs"
    try:
        await bus.publish(topic, [alert(i) for i in range(7)])
        sub = bus.inner.subscribe([topic], "signal", "c1")
        await sub.ensure_groups()
        (batch,) = await sub.read(3, timeout=0.5)
        await sub.ack([batch])
        health = Health("signal", "signal-obs", "test")
        health.add("redis", redis_probe(bus, client), critical=False)
        observer = ServiceObserver(settings, health, bus, inputs=(topic,), http_port=8123)
        await observer.start()
        try:
            labels = {"service": "signal", "instance": "signal-obs"}
            value = metrics.REGISTRY.get_sample_value
            assert value("cdb_stream_length", {**labels, "stream": topic}) == 7
            assert value("cdb_consumer_lag", {**labels, "stream": topic, "group": "signal"}) == 4
            assert value("cdb_redis_up", labels) == 1
            assert value("cdb_events_consumed_total", {**labels, "topic": topic}) == 0
            (reg,) = await discover(client, namespace)
            assert reg.alive
            assert reg.record.address == "http://127.0.0.1:8123"
            assert observer.grpc is not None
            assert reg.record.grpc_address == f"127.0.0.1:{observer.grpc.port}"
            async with grpc.aio.insecure_channel(reg.record.grpc_address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                response = await stub.Check(health_pb2.HealthCheckRequest(service="signal"))
                assert response.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            await observer.stop()
        assert await discover(client, namespace) == []
    finally:
        await bus.close()
