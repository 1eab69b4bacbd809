"""The embedded target: ``EmbeddedPipeline`` in this process, in lockstep with the
scenario.

The pipeline is the one ``cdb run`` runs (same services, in-memory bus, SQLite,
paper venue, simulated clock), with three hooks: the market is the scenario's
synthetic market (its shapes included), each paced batch advances the scenario's
``LockstepClock``, and the bus is a ``ChaosBus`` that can pause a consumer group and
carries the fault-injection switches (``Sabotage``). A scenario of minutes of market
time runs in seconds and the same seed gives the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import msgspec
from prometheus_client import generate_latest

from cdb.bus.keys import ALL_STREAMS, DEAD_LETTER_SUFFIX, MARKET_DATA, ORDERS
from cdb.bus.memory import MemoryBus, MemorySubscription
from cdb.chaos.history.clock import LockstepClock
from cdb.chaos.scenario.registry import Unavailable
from cdb.chaos.targets.base import GROUPS_OF, Plan, Target, scenario_env
from cdb.chaos.targets.db import SqlReader, snapshot
from cdb.config import load_settings
from cdb.events import SCALE, AnyEvent, Fill, Order, RiskDecision, Signal, Trade
from cdb.marketdata.synthetic import START_NS, SyntheticSource
from cdb.observability import metrics
from cdb.runtime.embedded import EmbeddedPipeline, RunOptions
from cdb.services.risk import RiskService, client_order_id
from cdb.services.ws import WsService
from cdb.venues.base import KeepsLedger

RECORDER_GROUP = "chaos.recorder"


Action = Literal["drop", "duplicate", "inflate", "unchain", "ignore_ess", "poison", "leak"]


class Rule(msgspec.Struct, kw_only=True):
    """One switch: ``action`` on every ``every``-th event published on ``topic`` (of
    type ``only`` when given, an event tag such as ``fill``).

    ``drop`` loses it, ``duplicate`` sends a copy under another id, ``inflate``
    multiplies an order's quantity by ``factor``, ``unchain`` cuts a fill from its
    order, ``ignore_ess`` turns a rejection for the ESS into an order, ``poison``
    makes a signal risk cannot handle (a price that is not a number), ``leak`` lets
    the publishing service (``owner``) leave a task and a buffer behind per event. A
    ``lasting`` rule outlives its fault (a bug does not go away when the scenario stops
    looking)."""

    topic: str
    action: Action
    every: int = 1
    only: str = ""
    factor: int = 10
    lasting: bool = False
    owner: str = ""
    """``leak``: the service the leaked tasks belong to (their names start with it)."""
    seen: int = 0
    affected: int = 0
    last_id: str = ""
    """The last event affected (the evidence names it)."""


def _tag(event: AnyEvent) -> str:
    return str(type(event).__struct_config__.tag)


class Sabotage:
    """Fault-injection switches on the embedded bus.

    They make the pipeline violate an invariant on purpose (a fill that never reaches
    the database, an order sent twice, an order while HALTED, a consumer that stalls,
    a reset that is answered but never applied): a scenario that uses one must fail on
    that check, which is how the coordinator shows it can say no.
    """

    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self.stalled: set[str] = set()
        """Consumer groups that stopped reading for good (until the run finishes)."""
        self.lose_resets = False
        """ESS resets are answered as done and never reach risk."""
        self.prices: dict[str, int] = {}
        self.leaked: list[tuple[asyncio.Task[Any], bytearray]] = []
        """``leak``: tasks that never end and what they hold (cancelled by ``close``)."""

    def close(self) -> None:
        """End the leaked tasks (the run is over)."""
        for task, _ in self.leaked:
            task.cancel()
        self.leaked.clear()

    def add(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        if rule in self.rules and not rule.lasting:
            self.rules.remove(rule)

    def apply(self, topic: str, events: Sequence[AnyEvent],
              ) -> tuple[list[AnyEvent], list[tuple[str, list[AnyEvent]]]]:
        """The events to publish on ``topic``, and events diverted to other topics."""
        out = list(events)
        if topic == MARKET_DATA and out and isinstance(out[-1], Trade):
            self.prices[out[-1].symbol] = out[-1].price_e8
        diverted: list[tuple[str, list[AnyEvent]]] = []
        for rule in self.rules:
            if rule.topic != topic:
                continue
            kept: list[AnyEvent] = []
            for event in out:
                if rule.only and _tag(event) != rule.only:
                    kept.append(event)
                    continue
                rule.seen += 1
                hit = rule.seen % rule.every == 0
                changed = self._act(rule, event, kept, diverted) if hit else None
                if changed is None:
                    kept.append(event)
                else:
                    rule.affected += 1
                    rule.last_id = event.id
            out = kept
        return out, diverted

    def _act(self, rule: Rule, event: AnyEvent, kept: list[AnyEvent],
             diverted: list[tuple[str, list[AnyEvent]]]) -> bool | None:
        """Apply ``rule`` to ``event`` (appending what replaces it to ``kept``); None
        when the rule does not apply to this event."""
        action = rule.action
        if action == "drop":
            return True
        if action == "leak":
            task = asyncio.get_running_loop().create_task(
                asyncio.Event().wait(), name=f"{rule.owner}.leaked-{rule.affected}")
            self.leaked.append((task, bytearray(64 * 1024)))
            kept.append(event)
            return True
        if action == "duplicate":
            kept += [event, msgspec.structs.replace(event, id=f"{event.id}-dup")]
            return True
        if action == "inflate" and isinstance(event, Order):
            kept.append(msgspec.structs.replace(event, qty_e8=event.qty_e8 * rule.factor))
            return True
        if action == "unchain" and isinstance(event, Fill):
            kept.append(msgspec.structs.replace(event, causation_id="unchained"))
            return True
        if action == "poison" and isinstance(event, Signal):
            # Not a number where risk compares one: it raises, is retried, is parked.
            kept.append(msgspec.structs.replace(event, price_e8="poison"))
            return True
        if action == "ignore_ess" and isinstance(event, RiskDecision) and (
                event.reason == "ess_halted") and event.symbol in self.prices:
            diverted.append((ORDERS, [_order_for(event, self.prices[event.symbol])]))
            return True
        return None


def _order_for(rejection: RiskDecision, price_e8: int) -> Order:
    """The order risk would have sent had it ignored the ESS (1,000 quote)."""
    order_id = f"{rejection.signal_id}-o"
    return Order(id=order_id, ts=rejection.ts, correlation_id=rejection.correlation_id,
                 causation_id=rejection.signal_id, source=rejection.source,
                 client_order_id=client_order_id(order_id), symbol=rejection.symbol,
                 side=rejection.side, order_type="MARKET",
                 qty_e8=1_000 * SCALE * SCALE // price_e8, ref_price_e8=price_e8)


class ChaosBus(MemoryBus):
    """The in-memory bus with paused groups and sabotage switches."""

    def __init__(self, sabotage: Sabotage, capacity: int = 100_000) -> None:
        super().__init__(capacity=capacity)
        self.sabotage = sabotage
        self.paused: set[str] = set()

    def is_paused(self, group: str) -> bool:
        return group in self.paused or group in self.sabotage.stalled

    async def publish(self, topic: str, events: Sequence[AnyEvent]) -> None:
        diverted: list[tuple[str, list[AnyEvent]]] = []
        if self.sabotage.rules:
            events, diverted = self.sabotage.apply(topic, events)
        await super().publish(topic, events)
        for other, extra in diverted:
            await super().publish(other, extra)

    def subscribe(self, topics: Sequence[str], group: str, consumer: str) -> MemorySubscription:
        return _PausableSubscription(self, super().subscribe(topics, group, consumer), group)

    async def wait_drained(self, exclude_groups: frozenset[str] = frozenset()) -> None:
        # The db_writer too, unlike ``cdb run``: probes of the database and the lag at
        # a simulated instant must not depend on how fast the disk was.
        await super().wait_drained(frozenset(self.paused | self.sabotage.stalled))

    def groups(self, stream: str) -> dict[str, int]:
        """Each consumer group of ``stream`` and the events it has not acknowledged."""
        topic = self._topics.get(stream)
        return {name: g.backlog for name, g in topic.groups.items()} if topic else {}

    @property
    def is_closed(self) -> bool:
        return self._closed


class _PausableSubscription(MemorySubscription):
    """Reads nothing while its group is paused; otherwise the inner subscription."""

    def __init__(self, bus: ChaosBus, inner: MemorySubscription, group: str) -> None:
        self._chaos_bus = bus
        self._inner = inner
        self._group = group

    async def read(self, max_events: int = 1000, timeout: float = 1.0) -> Any:
        if self._chaos_bus.is_paused(self._group):
            await asyncio.sleep(min(timeout, 0.02))
            return []
        return await self._inner.read(max_events, timeout)

    def interrupt(self) -> None:
        # A stopping service interrupts its idle read (ServiceHost.stop): the read
        # waits in the inner subscription.
        self._inner.interrupt()

    async def ack(self, batches: Any) -> None:
        await self._inner.ack(batches)

    async def claim(self, min_idle: float, max_events: int = 1000) -> Any:
        if self._chaos_bus.is_paused(self._group):
            return []
        return await self._inner.claim(min_idle, max_events)

    async def close(self) -> None:
        await self._inner.close()


class EmbeddedTarget(Target):
    """The pipeline as tasks of this process (see the module docstring)."""

    mode: ClassVar[str] = "embedded"

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.clock: LockstepClock = LockstepClock(start=-plan.warmup)
        self.switches = Sabotage()
        market = plan.scenario.pipeline.market
        self._origin_ns = START_NS + int(plan.warmup * 1e9)
        self.recording.t_of = lambda ts: (ts - self._origin_ns) / 1e9
        self._finishing = False
        self._market_over = False
        self._run: asyncio.Task[Any] | None = None
        self._recorder: asyncio.Task[None] | None = None
        self.db_path = plan.report_dir / "pipeline.db"
        self.db_url = f"sqlite+aiosqlite:///{self.db_path}"
        self._sql = SqlReader(self.db_url)
        self._batch = max(1, round(market.trades_per_s / 10))
        self.pipeline: EmbeddedPipeline | None = None
        self.chaos_bus: ChaosBus | None = None
        self.market_gen: Generator[list[Trade]] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        plan = self.plan
        env = {**os.environ, **scenario_env(plan.scenario, plan.seed), **plan.env}
        self.recording.env = {k: v for k, v in env.items() if k not in os.environ or
                              os.environ[k] != v}
        settings = load_settings(environ=env)
        plan.report_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._fresh_database)
        market = plan.scenario.pipeline.market
        options = RunOptions(
            db_url=self.db_url, seed=plan.seed, symbols=market.symbols,
            duration_s=plan.market_duration, speed=market.speed, shapes=tuple(plan.shapes),
            instance=self.namespace, batch_size=self._batch,
        )
        # The pipeline with the scenario's market, its bus, and the clock hook.
        self.chaos_bus = bus = ChaosBus(self.switches)
        market_gen = self.market()
        self.pipeline = pipeline = EmbeddedPipeline(
            settings, options, source=market_gen, bus=bus, after_batch=self.after_batch)
        self.market_gen = market_gen
        topics = [*ALL_STREAMS, *(s + DEAD_LETTER_SUFFIX for s in ALL_STREAMS)]
        sub = bus.subscribe(topics, RECORDER_GROUP, "recorder")
        self._recorder = asyncio.create_task(self._record(sub), name="chaos.recorder")
        self._run = asyncio.create_task(pipeline.run(), name="chaos.embedded")
        while not pipeline.services:
            if self._run.done():
                self._run.result()
                raise RuntimeError("the embedded pipeline ended before it started")
            await asyncio.sleep(0.001)

    def _fresh_database(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.db_path}{suffix}").unlink()

    def market(self) -> Generator[list[Trade]]:
        """The scenario's market; ends early once the scenario is finishing."""
        market = self.plan.scenario.pipeline.market
        source = SyntheticSource(
            seed=self.plan.seed, symbols=market.symbols, duration_s=self.plan.market_duration,
            shapes=self.plan.shapes, source=self.instance_of("ws"), batch_size=self._batch,
            trades_per_s=market.trades_per_s, bursts_per_hour=market.bursts_per_hour,
        )
        for batch in source.batches():
            if self._finishing:
                return
            yield batch
        self._market_over = True
        self.clock.close()

    async def after_batch(self, batch: list[Trade]) -> None:
        await self.clock.advance(self.recording.t_of(batch[-1].ts))

    async def _record(self, sub: MemorySubscription) -> None:
        assert self.chaos_bus is not None
        bus = self.chaos_bus
        while True:
            batches = await sub.read(100_000, 0.05)
            for batch in batches:
                self.recording.on_events(batch.topic, batch.events)
            if batches:
                await sub.ack(batches)
            elif bus.is_closed:
                return

    async def finish(self) -> None:
        self._finishing = True
        # A stalled consumer is stuck only while the scenario watches: the pipeline
        # must drain to be recorded.
        self.switches.stalled.clear()
        self.clock.leave()
        if self._run is not None:
            summary = await self._run
            self.summary = msgspec.to_builtins(summary)
        self.clock.close()
        if self._recorder is not None:
            await asyncio.wait([self._recorder], timeout=5)
        self.recording.streams = {stream: await self.stream_info(stream)
                                  for stream in ALL_STREAMS}
        self.recording.db = await snapshot(self.db_url)
        self.recording.ledger = self.ledger()
        self.recording.ledger_source = "paper venue (in process)"

    async def stop(self) -> None:
        self._finishing = True
        self.clock.close()
        self.switches.close()
        for task in (self._run, self._recorder):
            if task is not None and not task.done():
                task.cancel()
                # Its end (cancelled or failed) is collected; a cancellation of stop
                # itself still propagates.
                await asyncio.gather(task, return_exceptions=True)
        if self.market_gen is not None:
            # Closed now rather than by the garbage collector at some later moment.
            with contextlib.suppress(ValueError):
                self.market_gen.close()
        await self._sql.close()

    # -- observation -------------------------------------------------------------------

    def _service(self, service: str) -> Any:
        if self.pipeline is None or service not in self.pipeline.services:
            raise Unavailable(f"service {service!r} is not running in this pipeline")
        return self.pipeline.services[service]

    async def health(self, service: str) -> dict[str, Any]:
        svc = self._service(service)
        status = "healthy"
        detail = ""
        if self._run is None or self._run.done():
            status, detail = "unhealthy", "the pipeline has stopped"
        elif self.chaos_bus is not None and self.chaos_bus.is_paused(service):
            status, detail = "unhealthy", "paused by the scenario"
        return {"service": service, "instance": self.instance_of(service), "status": status,
                "detail": detail, "details": svc.status()}

    async def metrics_text(self, service: str) -> str:
        self._service(service)
        return generate_latest(metrics.REGISTRY).decode()

    async def sql(self, query: str) -> list[dict[str, Any]]:
        return await self._sql.query(query)

    async def lag(self) -> dict[str, dict[str, int]]:
        assert self.pipeline is not None
        bus = self.pipeline.bus
        out: dict[str, dict[str, int]] = {}
        for group, topics in GROUPS_OF.items():
            if group not in self.services:
                continue
            for topic in topics:
                out.setdefault(topic, {})[group] = await bus.pending(topic, group)
        return out

    async def stream_info(self, stream: str) -> dict[str, Any]:
        """As Redis tells it: entries added, and per consumer group what it read and
        holds unacknowledged (the in-memory bus counts undelivered and pending events
        together, as pending); ``producer``: what ws says it published to the market
        data stream."""
        assert self.pipeline is not None
        assert self.chaos_bus is not None
        bus = self.chaos_bus
        added = bus.published.get(stream, 0)
        groups = {g: {"pending": backlog, "entries_read": added, "lag": 0}
                  for g, backlog in bus.groups(stream).items() if g != RECORDER_GROUP}
        info: dict[str, Any] = {"stream": stream, "entries_added": added, "length": added,
                                "groups": groups,
                                "dead_lettered": self.recording.dead_letters.get(stream, 0)}
        ws = self.pipeline.services.get("ws")
        if stream == MARKET_DATA and isinstance(ws, WsService):
            info["producer"] = {"service": "ws", "published": ws.trades}
        return info

    async def publish(self, topic: str, events: list[AnyEvent]) -> None:
        assert self.pipeline is not None
        await self.pipeline.bus.publish(topic, events)

    def now_ns(self) -> int:
        assert self.pipeline is not None
        return self.pipeline.clock.now()

    # -- ESS (the risk service's own API, in process) ----------------------------------

    def _risk(self) -> RiskService:
        risk = self._service("risk")
        if not isinstance(risk, RiskService):
            raise Unavailable("the pipeline has no risk service")
        return risk

    async def ess(self) -> dict[str, Any]:
        status: dict[str, Any] = self._risk().ess_status()
        return status

    async def ess_command(self, command: str, reason: str, actor: str) -> dict[str, Any]:
        risk = self._risk()
        if command == "reset" and self.switches.lose_resets:
            return {"changed": True, "state": "ACTIVE"}  # the sabotage: answered, not done
        if command == "trip":
            changed = await risk.trip_manually(actor, reason)
            return {"changed": changed is not None, **risk.ess_status()}
        result = await risk.reset(actor, reason)
        if type(result).__name__ == "ResetRefused":
            return {"changed": False, "refused": getattr(result, "reason", ""),
                    "detail": getattr(result, "detail", ""), **risk.ess_status()}
        return {"changed": True, **risk.ess_status()}

    # -- controls ----------------------------------------------------------------------

    async def pause_service(self, service: str) -> str:
        self._service(service)
        if service == "ws":
            raise Unavailable("in embedded mode ws drives the simulated clock and cannot be "
                              "paused; use a stale market shape")
        assert self.chaos_bus is not None
        self.chaos_bus.paused.add(service)
        return f"consumer group {service} stopped reading"

    async def resume_service(self, service: str) -> str:
        assert self.chaos_bus is not None
        self.chaos_bus.paused.discard(service)
        return f"consumer group {service} reads again"

    def sabotage(self) -> Sabotage:
        return self.switches

    def ledger(self) -> list[dict[str, Any]] | None:
        venue = self.pipeline.venue if self.pipeline is not None else None
        if not isinstance(venue, KeepsLedger):
            return None  # a venue without its own record (not the paper venue)
        return [
            {"order_id": x.order.id, "client_order_id": x.order.client_order_id,
             "venue_fill_id": x.venue_fill_id, "ts": x.ts, "price_e8": x.price_e8,
             "qty_e8": x.qty_e8, "status": x.status, "cum_qty_e8": x.cum_qty_e8,
             "symbol": x.order.symbol, "side": x.order.side}
            for x in venue.ledger
        ]
