"""Lines logged while the host hands a batch to its service carry the events'
correlation id; the binding is per batch and ends with it."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from typing import ClassVar

import pytest

from cdb.bus.memory import MemoryBus
from cdb.clock import SimClock
from cdb.events import Alert, AnyEvent
from cdb.observability import logging as cdb_logging
from cdb.runtime.service import ServiceHost
from cdb.services.base import Service, ServiceContext


def alert(i: int, correlation: str, code: str = "ok") -> Alert:
    return Alert(id=f"a{i}", ts=i, correlation_id=correlation, causation_id="", source="t",
                 level="info", code=code, message="m")


class Talker(Service):
    """Logs one line per batch it handles; cannot handle 'poison'."""

    name: ClassVar[str] = "talker"
    inputs: ClassVar[tuple[str, ...]] = ("in",)

    async def handle(self, topic: str, events: list[AnyEvent]) -> None:
        if any(isinstance(e, Alert) and e.code == "poison" for e in events):
            raise ValueError("cannot handle poison")
        self.ctx.log.info("handled", n=len(events))


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    cdb_logging.configure("INFO", stream=buffer)
    try:
        yield buffer
    finally:
        cdb_logging.reset()


def lines(buffer: io.StringIO, event: str) -> list[dict[str, object]]:
    parsed = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    return [line for line in parsed if line["event"] == event]


async def run(bus: MemoryBus, *batches: list[AnyEvent]) -> None:
    ctx = ServiceContext(name="talker", instance="talker-1", bus=bus, clock=SimClock())
    async with ServiceHost(Talker(ctx), poll=0.01):
        for batch in batches:
            await bus.publish("in", batch)
            await asyncio.wait_for(bus.wait_drained(exclude_groups=frozenset({"ops"})), 2)


async def test_a_handled_batch_logs_with_its_correlation_id(out: io.StringIO) -> None:
    await run(MemoryBus(), [alert(1, "trade-1")], [alert(2, "trade-2"), alert(3, "trade-3")])
    first, second = lines(out, "handled")
    assert first["correlation_id"] == "trade-1"
    assert (first["service"], first["instance"]) == ("talker", "talker-1")
    assert second["correlation_ids"] == ["trade-2", "trade-3"]
    stopped = lines(out, "service stopped")[0]
    assert "correlation_id" not in stopped
    assert "correlation_ids" not in stopped


async def test_a_parked_event_is_logged_with_its_own_correlation_id(out: io.StringIO) -> None:
    bus = MemoryBus()
    bus.subscribe(["in.dead"], "ops", "o")
    await run(bus, [alert(1, "trade-1"), alert(2, "trade-2", "poison")])
    (parked,) = lines(out, "event parked")
    assert parked["correlation_id"] == "trade-2"
