"""db_writer while its database is down: holds the batch unacknowledged, retries with
the backoff, reports degraded health, and parks only what the database refuses."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from cdb.bus.memory import MemoryBus
from cdb.clock import SimClock
from cdb.errors import DataRejectedError, StoreError
from cdb.events import Alert, AnyEvent
from cdb.observability.health import Health
from cdb.resilience.backoff import Backoff
from cdb.runtime.service import ServiceHost
from cdb.services.base import ServiceContext
from cdb.services.db_writer import DbWriterService
from cdb.testing.waiting import eventually_async


def alerts(start: int, n: int = 1) -> list[AnyEvent]:
    return [
        Alert(id=f"a{i}", ts=i, correlation_id="", causation_id="", source="t", level="info",
              code="c", message="m")
        for i in range(start, start + n)
    ]


class FakeStore:
    """Fails while ``down``; ``hang`` makes writes never return; ids are unique."""

    where = "fake://db"

    def __init__(self) -> None:
        self.down = False
        self.hang = False
        self.rows: dict[str, AnyEvent] = {}
        self.attempts = 0
        self.refuse: set[str] = set()

    async def write(self, events: Sequence[AnyEvent]) -> int:
        self.attempts += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.down:
            raise StoreError("write on fake://db failed: connection refused") from OperationalError(
                "insert", {}, ConnectionRefusedError("refused")
            )
        if any(e.id in self.refuse for e in events):
            orig = Exception("value too long")
            raise DataRejectedError("write failed: constraint") from IntegrityError(
                "insert", {}, orig)
        new = [e for e in events if e.id not in self.rows]
        self.rows.update((e.id, e) for e in new)
        return len(new)

    async def ping(self) -> None:
        if self.down:
            raise StoreError("ping failed: connection refused")


def writer(store: FakeStore, **kw: Any) -> tuple[MemoryBus, DbWriterService]:
    bus = MemoryBus()
    ctx = ServiceContext(name="db_writer", instance="dbw-1", bus=bus, clock=SimClock())
    return bus, DbWriterService(ctx, store, **kw)  # type: ignore[arg-type]


async def test_retries_with_the_backoff_and_writes_once_the_database_is_back() -> None:
    store = FakeStore()
    store.down = True
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        if len(slept) == 4:
            store.down = False
        await asyncio.sleep(0)

    _, service = writer(store, backoff=Backoff(rng=random.Random(4)), sleep=sleep)
    await service.handle("stream.alerts", alerts(0, 3))
    expected = Backoff(rng=random.Random(4))
    assert slept == [expected.compute(n) for n in range(1, 5)]
    assert all(0.8 * 2**i <= d <= 2**i for i, d in enumerate(slept)), "1, 2, 4, 8 s less jitter"
    assert store.attempts == 5
    assert sorted(store.rows) == ["a0", "a1", "a2"]
    assert service.status()["database_outages"] == 1
    assert service.waiting_since is None


async def test_nothing_is_acknowledged_and_health_is_degraded_while_it_waits() -> None:
    store = FakeStore()
    bus, service = writer(store, backoff=Backoff(base=0.01, cap=0.05))
    health = Health("db_writer", "dbw-1", "test")
    health.add("postgres", service.probe, critical=False)
    group = ServiceHost(service, poll=0.02)
    async with group:
        store.down = True
        await bus.publish("stream.alerts", alerts(0, 5))
        await eventually_async(lambda: _waiting(service), 5, "waiting")
        report = await health.check()
        assert report.status == "degraded"
        assert report.dependencies["postgres"].status == "down"
        assert "holding 5 events" in (report.dependencies["postgres"].last_error or "")
        assert service.status()["held_events"] == 5
        assert await bus.pending("stream.alerts", "db_writer") == 5, "nothing acknowledged"
        store.down = False
        await eventually_async(lambda: _drained(bus), 5, "acknowledged after the commit")
        assert sorted(store.rows) == [f"a{i}" for i in range(5)]
        assert (await health.check()).status == "healthy"


async def _waiting(service: DbWriterService) -> bool:
    return service.waiting_since is not None


async def _rows(store: FakeStore, n: int) -> bool:
    return len(store.rows) >= n


async def _drained(bus: MemoryBus) -> bool:
    return await bus.pending("stream.alerts", "db_writer") == 0


async def test_a_hanging_write_is_given_up_after_the_timeout_and_retried() -> None:
    store = FakeStore()
    store.hang = True
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        store.hang = False

    _, service = writer(store, write_timeout=0.05, sleep=sleep)
    await asyncio.wait_for(service.handle("stream.alerts", alerts(0)), 5)
    assert store.attempts == 2
    assert list(store.rows) == ["a0"]
    assert "did not finish within 0.05 s" in service.last_error


async def test_data_the_database_refuses_is_not_retried_but_parked_alone() -> None:
    store = FakeStore()
    store.refuse = {"a1"}
    bus, service = writer(store, backoff=Backoff(base=0.01, cap=0.02))
    with pytest.raises(DataRejectedError):
        await service.handle("stream.alerts", alerts(1))
    dead = bus.subscribe(["stream.alerts.dead"], "inspect", "me")
    async with ServiceHost(service, poll=0.02):
        await bus.publish("stream.alerts", alerts(0, 3))
        await eventually_async(lambda: _rows(store, 2), 5, "good events written")
        await eventually_async(lambda: _drained(bus), 5, "all acknowledged")
    assert sorted(r for r in store.rows if r.startswith("a")) == ["a0", "a2"]
    # the host's alert about the parked event is written too
    assert any(getattr(e, "code", "") == "event_parked" for e in store.rows.values())
    parked = await dead.read(10, 0.1)
    assert [e.id for b in parked for e in b.events] == ["a1"]
    assert service.waiting_since is None
