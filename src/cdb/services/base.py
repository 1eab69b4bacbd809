"""The Service seam: one component that consumes topics and publishes.

A service implements ``handle`` (one batch of one topic; decisions are pure functions
it calls) and optionally ``produce`` (a source loop, for ws). ``cdb.runtime`` hosts
it the same way embedded (a task among five) or alone (a process).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import structlog

from cdb.bus.base import Batch, Bus
from cdb.bus.keys import ALERTS_STREAM, ORDERS
from cdb.clock import Clock
from cdb.events import Alert, AnyEvent, IdGen, Level
from cdb.observability import metrics


class ServiceContext:
    """What a service gets from its host: bus, clock, identity, ids, logging.

    Args:
        name: the service kind (``ws``, ``signal``, ...); also its consumer group.
        instance: this instance's name (consumer name, event ``source``).
    """

    def __init__(
        self, *, name: str, instance: str, bus: Bus, clock: Clock, shard: str = "",
        symbols: frozenset[str] = frozenset(),
    ) -> None:
        self.name = name
        self.instance = instance
        self.group = f"{name}.{shard}" if shard else name
        """Consumer group: shared by the instances of a service, one per shard."""
        self.symbols = symbols
        """Symbols this instance owns (empty: all); other symbols' events are skipped."""
        self.bus = bus
        self.clock = clock
        self.ids = IdGen(instance)
        self.bus_up_since: int | None = 0
        """Clock time (ns) since when this service's reads of the bus have worked; None
        while they fail. What depends on the market flowing (the stale-data guard) does
        not count time our own bus was down."""
        self.log = structlog.get_logger(service=name, instance=instance)
        self._published: dict[str, object] = {}

    async def publish(self, topic: str, events: Sequence[AnyEvent]) -> None:
        """Publish ``events`` and count them."""
        if not events:
            return
        await self.bus.publish(topic, events)
        if topic == ORDERS and not self.clock.simulated:
            now = self.clock.now()
            latency = metrics.tick_to_order.labels(self.name, self.instance)
            for event in events:
                latency.observe((now - event.ts) / 1e9)
        child = self._published.get(topic)
        if child is None:
            child = self._published[topic] = metrics.events_published.labels(
                self.name, self.instance, topic
            )
        child.inc(len(events))  # type: ignore[attr-defined]

    async def alert(
        self, level: Level, code: str, message: str, *, correlation_id: str = "",
        causation_id: str = "",
    ) -> Alert:
        """Publish an alert on the alerts stream and log it."""
        ts = self.clock.now()
        event = Alert(
            id=self.ids.next(ts), ts=ts, correlation_id=correlation_id,
            causation_id=causation_id, source=self.instance, level=level, code=code,
            message=message,
        )
        # Logged at its own level: an operator's log shows warnings and worse.
        log = self.log.info if level == "info" else (
            self.log.warning if level == "warning" else self.log.critical)
        log("alert", code=code, level=level, message=message)
        await self.publish(ALERTS_STREAM, [event])
        return event


class Service:
    """Base of the five services. Subclasses set ``name`` and ``inputs``."""

    name: ClassVar[str] = "service"
    inputs: ClassVar[tuple[str, ...]] = ()
    batch_size: ClassVar[int] = 1000

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def on_start(self) -> None:
        """Open resources and restore state, before the first batch."""

    async def handle(self, topic: str, events: list[AnyEvent]) -> None:
        """Process one batch of ``topic``; raise to have it retried or parked."""

    async def handle_batches(self, batches: list[Batch]) -> None:
        """Process every batch of one read together (override to commit them as one)."""
        for batch in batches:
            await self.handle(batch.topic, batch.events)

    async def produce(self) -> None:
        """A source loop for services that originate events; returns when done."""

    async def on_stop(self) -> None:
        """Flush and close resources after the last batch."""

    def status(self) -> dict[str, object]:
        """Service-specific state for health and summaries."""
        return {}

    @property
    def has_producer(self) -> bool:
        return type(self).produce is not Service.produce
