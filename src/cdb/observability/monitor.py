"""Periodic health checks and stream sampling, so metrics show what ``/health`` sees.

Prometheus scrapes ``/metrics``, not ``/health``: without a periodic check
``cdb_redis_up`` would only change when someone looked at ``/health``, and the gRPC
``Watch`` stream would never move. The monitor is also the schedule ``/health`` is
served from: requests read the last round's state, never probe (an exchange ping per
request costs weight and extends a ban). It checks health every ``interval`` and
samples the length of the service's streams and the lag of its consumer group
(``cdb_stream_length``, ``cdb_consumer_lag``). A sample that fails (Redis down) keeps
the last value and is tried again next time; the outage itself shows in
``cdb_redis_up``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from cdb.lifecycle import State, starting
from cdb.observability import metrics
from cdb.observability.health import Health

Length = Callable[[str], Awaitable[int]]
"""``length(topic)``: entries in the topic's stream."""
Lag = Callable[[str, str], Awaitable[int]]
"""``lag(topic, group)``: entries of the topic ``group`` has not acknowledged yet."""
Sleep = Callable[[float], Awaitable[None]]

_log = structlog.get_logger("cdb.observability.monitor")


class StreamWatch:
    """One stream to sample: its length, and the lag of ``group`` when given."""

    __slots__ = ("group", "topic")

    def __init__(self, topic: str, group: str | None = None) -> None:
        self.topic = topic
        self.group = group

    def __repr__(self) -> str:
        return f"StreamWatch({self.topic!r}, {self.group!r})"


class Monitor:
    """Checks ``health`` and samples ``streams`` every ``interval`` s (a task).

    Args:
        health: the service's health; its labels are the metrics' labels.
        interval: seconds between two rounds.
        streams: what to sample; needs ``length`` and, for a group, ``lag``.
    """

    def __init__(
        self, health: Health, *, interval: float = 5.0, streams: Sequence[StreamWatch] = (),
        length: Length | None = None, lag: Lag | None = None, sleep: Sleep = asyncio.sleep,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        self.health = health
        self.interval = interval
        self.streams = tuple(streams)
        self._length = length
        self._lag = lag
        self._sleep = sleep
        self.state = State.CREATED
        self.rounds = 0
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Monitor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Run one round now, then every ``interval``. From now on ``/health`` serves
        what the rounds found and never probes on a request while they keep it fresh."""
        self.state = starting("monitor", self.state)
        # A round may run late by its own probes' timeouts; past that the schedule is
        # stuck, and /health probes by itself rather than serve an ever older state.
        self.health.max_age = max(self.health.max_age,
                                  2 * self.interval + self.health.probe_timeout)
        await self.round()
        self._task = asyncio.create_task(self._run(), name=f"monitor.{self.health.service}")

    async def _run(self) -> None:
        while True:
            await self._sleep(self.interval)
            try:
                await self.round()
            except Exception:
                _log.exception("monitor round failed")

    async def round(self) -> None:
        """Check health, then sample every stream."""
        await self.health.check()
        await self.sample()
        self.rounds += 1

    async def sample(self) -> bool:
        """Sample every stream once; False when some sample failed."""
        service, instance = self.health.service, self.health.instance
        ok = True
        for watch in self.streams:
            try:
                if self._length is not None:
                    length = await self._length(watch.topic)
                    metrics.stream_length.labels(service, instance, watch.topic).set(length)
                if watch.group is not None and self._lag is not None:
                    lag = await self._lag(watch.topic, watch.group)
                    metrics.consumer_lag.labels(
                        service, instance, watch.topic, watch.group
                    ).set(lag)
            except Exception as exc:
                ok = False
                if not self._failing:
                    _log.warning("stream sampling failing", stream=watch.topic, error=str(exc))
                self._failing = True
                break  # the backend is likely down: no point in trying every stream
        if ok and self._failing:
            self._failing = False
            _log.info("stream sampling going again")
        return ok

    async def stop(self) -> None:
        """Stop sampling."""
        if self.state is not State.RUNNING:
            self.state = State.STOPPED
            return
        self.state = State.STOPPING
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # our own cancellation still propagates
        self.state = State.STOPPED
