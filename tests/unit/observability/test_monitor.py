"""The monitor checks health and samples streams periodically; a failing sample keeps
the last values and comes back."""

from __future__ import annotations

import asyncio

import pytest

from cdb.errors import BusError, LifecycleError
from cdb.observability import metrics
from cdb.observability.health import Health
from cdb.observability.monitor import Monitor, StreamWatch


class Streams:
    def __init__(self) -> None:
        self.lengths = {"stream.a": 10, "stream.b": 20}
        self.lags = {("stream.a", "g"): 3}
        self.down = False

    async def length(self, topic: str) -> int:
        if self.down:
            raise BusError("redis down")
        return self.lengths[topic]

    async def lag(self, topic: str, group: str) -> int:
        if self.down:
            raise BusError("redis down")
        return self.lags[(topic, group)]


def sample(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


async def test_a_round_checks_health_and_samples_length_and_lag() -> None:
    health = Health("signal", "sig-mon-1", "test")
    streams = Streams()
    monitor = Monitor(health, streams=[StreamWatch("stream.a", "g"), StreamWatch("stream.b")],
                      length=streams.length, lag=streams.lag)
    checked: list[str] = []
    health.listen(lambda r: checked.append(r.status))
    await monitor.round()
    labels = {"service": "signal", "instance": "sig-mon-1"}
    assert sample("cdb_stream_length", **labels, stream="stream.a") == 10
    assert sample("cdb_stream_length", **labels, stream="stream.b") == 20
    assert sample("cdb_consumer_lag", **labels, stream="stream.a", group="g") == 3
    assert sample("cdb_consumer_lag", **labels, stream="stream.b", group="g") is None
    assert checked == ["healthy"]


async def test_a_failing_sample_keeps_the_last_values_and_recovers() -> None:
    health = Health("signal", "sig-mon-2", "test")
    streams = Streams()
    monitor = Monitor(health, streams=[StreamWatch("stream.a", "g")], length=streams.length,
                      lag=streams.lag)
    labels = {"service": "signal", "instance": "sig-mon-2", "stream": "stream.a"}
    assert await monitor.sample()
    streams.down = True
    streams.lengths["stream.a"] = 99
    assert not await monitor.sample()
    assert sample("cdb_stream_length", **labels) == 10
    streams.down = False
    assert await monitor.sample()
    assert sample("cdb_stream_length", **labels) == 99


async def test_it_runs_every_interval_until_stopped_and_refuses_reuse() -> None:
    health = Health("ws", "ws-mon", "test")
    monitor = Monitor(health, interval=0.01)
    async with monitor:
        for _ in range(200):
            if monitor.rounds >= 3:
                break
            await asyncio.sleep(0.01)
    assert monitor.rounds >= 3
    rounds = monitor.rounds
    await asyncio.sleep(0.05)
    assert monitor.rounds == rounds
    with pytest.raises(LifecycleError):
        await monitor.start()


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        Monitor(Health("ws", "x", "t"), interval=0)
