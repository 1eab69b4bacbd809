"""The host acknowledges after handling, parks bad events, holds on infrastructure errors."""

import asyncio
from typing import ClassVar

import pytest

from cdb.bus.memory import MemoryBus
from cdb.clock import SimClock
from cdb.errors import LifecycleError, StoreError
from cdb.events import Alert, AnyEvent
from cdb.lifecycle import State
from cdb.runtime.service import ServiceHost
from cdb.services.base import Service, ServiceContext


def alert(i: int, code: str = "ok") -> Alert:
    return Alert(id=f"a{i}", ts=i, correlation_id="", causation_id="", source="t", level="info",
                 code=code, message="m")


class Recorder(Service):
    name: ClassVar[str] = "rec"
    inputs: ClassVar[tuple[str, ...]] = ("in",)

    def __init__(self, ctx: ServiceContext, store_failures: int = 0) -> None:
        super().__init__(ctx)
        self.seen: list[str] = []
        self.store_failures = store_failures

    async def handle(self, topic: str, events: list[AnyEvent]) -> None:
        if self.store_failures:
            self.store_failures -= 1
            raise StoreError("database down")
        if any(isinstance(e, Alert) and e.code == "poison" for e in events):
            raise ValueError("cannot handle poison")
        self.seen += [e.id for e in events]


def host(bus: MemoryBus, **kw: int) -> tuple[Recorder, ServiceHost]:
    ctx = ServiceContext(name="rec", instance="rec-1", bus=bus, clock=SimClock())
    svc = Recorder(ctx, **kw)
    return svc, ServiceHost(svc, poll=0.01)


async def test_a_bad_event_is_parked_and_the_rest_of_its_batch_processed() -> None:
    bus = MemoryBus()
    dead = bus.subscribe(["in.dead"], "ops", "o")
    svc, h = host(bus)
    async with h:
        await bus.publish("in", [alert(1), alert(2, "poison"), alert(3)])
        await asyncio.wait_for(bus.wait_drained(exclude_groups=frozenset({"ops"})), 2)
    assert svc.seen == ["a1", "a3"]
    (batch,) = await dead.read(timeout=0.1)
    assert [e.id for e in batch.events] == ["a2"]


async def test_infrastructure_errors_hold_the_batch_until_it_succeeds() -> None:
    bus = MemoryBus()
    svc, h = host(bus, store_failures=3)
    async with h:
        await bus.publish("in", [alert(1)])
        await asyncio.wait_for(bus.wait_drained(), 5)
    assert svc.seen == ["a1"]


async def test_a_host_cannot_be_started_twice() -> None:
    _, h = host(MemoryBus())
    async with h:
        assert h.state is State.RUNNING
        with pytest.raises(LifecycleError):
            await h.start()
    assert h.state is State.STOPPED


async def test_a_shard_handles_only_its_symbols_in_its_own_group() -> None:
    from cdb.events import SCALE, Trade

    class Seen(Service):
        name: ClassVar[str] = "signal"
        inputs: ClassVar[tuple[str, ...]] = ("md",)

        def __init__(self, ctx: ServiceContext) -> None:
            super().__init__(ctx)
            self.symbols: list[str] = []

        async def handle(self, topic: str, events: list[AnyEvent]) -> None:
            self.symbols += [e.symbol for e in events]  # type: ignore[union-attr]

    bus = MemoryBus()
    shards = []
    for shard, symbols in (("a", {"BTCUSDT"}), ("b", {"ETHUSDT", "SOLUSDT"})):
        ctx = ServiceContext(name="signal", instance=f"signal-{shard}", bus=bus,
                             clock=SimClock(), shard=shard, symbols=frozenset(symbols))
        shards.append((Seen(ctx), ctx))
    trades = [
        Trade(id=str(i), ts=i, correlation_id=str(i), causation_id=str(i), source="t",
              venue="v", symbol=sym, trade_id=i, price_e8=SCALE, qty_e8=SCALE)
        for i, sym in enumerate(["BTCUSDT", "ETHUSDT", "SOLUSDT", "BTCUSDT"])
    ]
    hosts = [ServiceHost(svc, poll=0.01) for svc, _ in shards]
    for h in hosts:
        await h.start()
    await bus.publish("md", trades)
    await asyncio.wait_for(bus.wait_drained(), 2)
    for h in hosts:
        await h.stop()
    assert shards[0][0].symbols == ["BTCUSDT", "BTCUSDT"]
    assert shards[1][0].symbols == ["ETHUSDT", "SOLUSDT"]
    assert {ctx.group for _, ctx in shards} == {"signal.a", "signal.b"}
