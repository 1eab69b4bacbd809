"""What a distributed service runs to be observed, beyond its HTTP API.

::

    observer = ServiceObserver(settings, health, bus, inputs=service.inputs, http_port=port)
    await observer.start()      # after the HTTP server: discovery points at it
    ...
    await observer.stop()       # before the HTTP server stops

- the ``Monitor``: health checked and streams sampled every CDB_MONITOR_INTERVAL_S
  (``cdb_redis_up``, ``cdb_stream_length``, ``cdb_consumer_lag``);
- the discovery ``Registrar``: the instance in Redis with a CDB_DISCOVERY_TTL_S heartbeat;
- the gRPC health service on CDB_GRPC_PORT(_<SERVICE>), when set.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

import msgspec

from cdb import __version__
from cdb.bus.keys import MARKET_DATA
from cdb.clock import WallClock
from cdb.config import Settings
from cdb.observability import logging as cdb_logging
from cdb.observability import metrics
from cdb.observability.grpc_health import GrpcHealthServer
from cdb.observability.health import Health
from cdb.observability.monitor import Monitor, StreamWatch
from cdb.runtime.discovery import InstanceRecord, Registrar

if TYPE_CHECKING:
    from cdb.bus.buffered import BufferedBus
    from cdb.bus.redis_streams import RedisStreamsBus

_ANY_INTERFACE = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 - compared, not bound


def advertised_host(settings: Settings) -> str:
    """The host others reach this instance at: CDB_ADVERTISE_HOST, else BIND_HOST unless
    it binds every interface, else the host name."""
    if settings.cdb_advertise_host:
        return settings.cdb_advertise_host
    if settings.bind_host not in _ANY_INTERFACE:
        return settings.bind_host
    return socket.gethostname()


def streams_of(service: str, inputs: Sequence[str]) -> list[StreamWatch]:
    """What a service samples: each input with its own group's lag; ws, which reads no
    stream, the one it writes."""
    if inputs:
        return [StreamWatch(topic, service) for topic in inputs]
    if service == "ws":
        return [StreamWatch(MARKET_DATA)]
    return []


def prepare_process(settings: Settings, service: str, instance: str) -> None:
    """Every log line of this process names the service and instance, and so do its
    process and runtime metrics; its secret values are masked wherever they would
    appear in logs or health."""
    cdb_logging.bind_process(service=service, instance=instance)
    metrics.claim_process(service, instance, replace=True)
    register_settings_secrets(settings)


def register_settings_secrets(settings: Settings) -> None:
    """Mask this process's secret values wherever they would appear in logs or health."""
    values = []
    for name in ("redis_password", "postgres_password", "database_url", "cdb_api_token",
                 "binance_api_key", "binance_api_secret"):
        secret = getattr(settings, name, None)
        if secret is not None:
            values.append(secret.get_secret_value())
    cdb_logging.register_secrets(values)


class ServiceObserver:
    """Monitor, discovery heartbeat and gRPC health of one distributed service.

    Args:
        settings: the process's settings.
        health: the service's health (what ``/health`` reports).
        bus: the service's bus (its Redis client, namespace and breaker are used).
        inputs: the topics the service consumes.
        http_port: the port of its HTTP API (advertised in discovery).
    """

    def __init__(
        self, settings: Settings, health: Health, bus: BufferedBus[RedisStreamsBus], *,
        inputs: Sequence[str], http_port: int,
    ) -> None:
        from cdb.bus.buffered import guarded

        self.settings = settings
        self.health = health
        inner = bus.inner

        async def length(topic: str) -> int:
            key = inner.namespace.key(topic)
            value: int = await guarded(bus.breaker, partial(inner.client.xlen, key))
            return value

        service, instance = health.service, health.instance
        metrics.prime(service, instance, topics=tuple(inputs), reasons=_rejection_reasons()
                      if service == "risk" else ())
        self.monitor = Monitor(
            health, interval=settings.cdb_monitor_interval_s,
            streams=streams_of(service, inputs), length=length, lag=bus.pending,
        )
        grpc_port = settings.grpc_port_of(service)
        self.grpc = (
            GrpcHealthServer(health, settings.bind_host, grpc_port)
            if grpc_port is not None else None
        )
        host = advertised_host(settings)
        clock = WallClock()
        started_ns = clock.now()
        self._record = InstanceRecord(
            service=service, instance=instance, address=f"http://{host}:{http_port}",
            version=__version__,
            started=datetime.fromtimestamp(started_ns / 1e9, tz=UTC).isoformat(
                timespec="seconds"),
            started_ns=started_ns, host=socket.gethostname(), pid=os.getpid(),
            restarts=settings.cdb_restarts,
        )
        self._host = host
        self.registrar: Registrar | None = None
        self._client = inner.client
        self._namespace = inner.namespace
        self._clock = clock

    async def start(self) -> None:
        """gRPC first (its address goes in the record), then the monitor, then discovery."""
        record = self._record
        if self.grpc is not None:
            await self.grpc.start()
            record = msgspec.structs.replace(record,
                                             grpc_address=f"{self._host}:{self.grpc.port}")
        await self.monitor.start()
        self.registrar = Registrar(
            self._client, self._namespace, record, ttl=self.settings.cdb_discovery_ttl_s,
            clock=self._clock,
        )
        await self.registrar.start()

    async def stop(self) -> None:
        """Deregister, stop sampling, answer NOT_SERVING and stop the gRPC server."""
        try:
            if self.registrar is not None:
                await self.registrar.stop()
            await self.monitor.stop()
        finally:
            if self.grpc is not None:
                await self.grpc.stop()


def _rejection_reasons() -> tuple[str, ...]:
    from cdb.risk import limits as lim

    return (lim.ESS_HALTED, lim.RATE_LIMIT, lim.OPEN_ORDERS, lim.ORDER_NOTIONAL,
            lim.POSITION_LIMIT, lim.EXPOSURE_LIMIT, lim.NO_POSITION, lim.NO_PRICE, lim.TOO_SMALL)
