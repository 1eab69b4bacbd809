"""The host of a Service (``cdb.services.base``): its lifecycle, reads and acks.

The ``ServiceHost`` runs a service the same way embedded (a task among five) or
alone (a process): it reads
batches as a member of the service's consumer group, hands them over, and
acknowledges only after ``handle`` returned, so nothing is acknowledged before its
effect is published or committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial

from cdb.bus.base import Batch, DefersAck, Interruptible, Subscription
from cdb.bus.keys import DEAD_LETTER_SUFFIX
from cdb.errors import BusError, LifecycleError, StoreError
from cdb.lifecycle import State
from cdb.observability import metrics
from cdb.observability.logging import handling
from cdb.services.base import Service, ServiceContext

BUS_RETRY_CAP_S = 0.5
"""Longest wait between two failed reads of the bus (its breaker paces Redis)."""


def _owned(batches: list[Batch], symbols: frozenset[str]) -> list[Batch]:
    """The batches with only the events of ``symbols`` (a shard's share)."""
    out = []
    for batch in batches:
        mine = [e for e in batch.events if getattr(e, "symbol", None) in symbols]
        out.append(Batch(batch.topic, mine, batch.token))
    return out


async def _shielded_ack(sub: Subscription, batches: list[Batch]) -> None:
    await asyncio.shield(sub.ack(batches))


class _Outage:
    """Backoff for a failing dependency, logged once per state change, not per retry."""

    def __init__(self, ctx: ServiceContext, what: str) -> None:
        self._ctx = ctx
        self._what = what
        self._delay = 0.0

    async def failed(self, exc: Exception) -> None:
        if not self._delay:
            self._ctx.log.warning(f"{self._what} failing; holding work", error=str(exc))
            self._delay = 0.05
        # Every bus call goes through its breaker, which keeps a storm of retries off
        # Redis (an open one refuses locally): ask it often, so work resumes within
        # half a second of Redis being back.
        cap = BUS_RETRY_CAP_S if isinstance(exc, BusError) else 5.0
        await asyncio.sleep(min(self._delay, cap))
        self._delay = min(self._delay * 2, 5.0)

    def recovered(self) -> None:
        if self._delay:
            self._ctx.log.info(f"{self._what} recovered")
            self._delay = 0.0


class ServiceHost:
    """Runs one service: consume loop, optional producer, drain and stop.

    Args:
        service: the service to run.
        poll: longest wait for a batch before checking for stop (s).
        claim_idle: reclaim events another member left pending this long (s).
    """

    def __init__(self, service: Service, *, poll: float = 0.2, claim_idle: float = 30.0) -> None:
        self.service = service
        self.state = State.CREATED
        self._poll = poll
        self._claim_idle = claim_idle
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sub: Subscription | None = None
        self.started_at = 0.0
        self.producer_done = asyncio.Event()

    @property
    def ctx(self) -> ServiceContext:
        return self.service.ctx

    async def __aenter__(self) -> ServiceHost:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the service and its tasks."""
        if self.state is not State.CREATED:
            raise LifecycleError(f"{self.ctx.name} host is {self.state.value}; make a new one")
        self.started_at = time.monotonic()
        await self.service.on_start()
        self.state = State.RUNNING
        name = self.ctx.name
        if self.service.inputs:
            self._tasks.append(asyncio.create_task(self._consume(), name=f"{name}.consume"))
        if self.service.has_producer:
            self._tasks.append(asyncio.create_task(self._produce(), name=f"{name}.produce"))
        else:
            self.producer_done.set()
        self.ctx.log.info("service started", inputs=list(self.service.inputs))

    async def _produce(self) -> None:
        try:
            await self.service.produce()
        finally:
            self.producer_done.set()

    async def _consume(self) -> None:
        ctx = self.ctx
        sub = self._sub = ctx.bus.subscribe(self.service.inputs, ctx.group, ctx.instance)
        # Over Redis the ack travels with the next read (one round trip per cycle);
        # stopping sends it on close.
        defer_ack = sub.defer_ack if isinstance(sub, DefersAck) else None
        # Claim at once: a restarted consumer picks up what its predecessor left pending.
        last_claim = float("-inf")
        outage = _Outage(ctx, "bus")
        try:
            while not self._stopping.is_set():
                try:
                    batches = await sub.read(self.service.batch_size, self._poll)
                    now = time.monotonic()
                    if now - last_claim >= self._claim_idle:
                        last_claim = now
                        batches.extend(await sub.claim(self._claim_idle, self.service.batch_size))
                except BusError as exc:
                    ctx.bus_up_since = None
                    await outage.failed(exc)
                    continue
                if ctx.bus_up_since is None:
                    ctx.bus_up_since = ctx.clock.now()
                outage.recovered()
                if not batches:
                    continue
                # A shard handles only its symbols; acking the whole read acknowledges
                # the other symbols' events, which other shards' groups receive.
                owned = _owned(batches, ctx.symbols) if ctx.symbols else batches
                with handling(owned):  # log lines carry the events' correlation ids
                    await self._process(owned)
                # The ack is the commit point of the batch: never cancelled half-way.
                if defer_ack is not None:
                    defer_ack(batches)
                else:
                    await self._retrying(partial(_shielded_ack, sub, batches))
        finally:
            await sub.close()

    async def _process(self, batches: list[Batch]) -> None:
        """Hand a read over; infrastructure errors retry, a bad event is parked."""
        service, ctx = self.service, self.ctx
        started = time.perf_counter()
        try:
            await self._retrying(lambda: service.handle_batches(batches))
        except Exception:
            for batch in batches:
                try:
                    await self._retrying(partial(service.handle, batch.topic, batch.events))
                except Exception:
                    await self._park_bad_events(batch)
        elapsed = time.perf_counter() - started
        for batch in batches:
            metrics.events_consumed.labels(ctx.name, ctx.instance, batch.topic).inc(
                len(batch.events)
            )
        metrics.batch_seconds.labels(ctx.name, ctx.instance, batches[0].topic).observe(elapsed)

    async def _retrying(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` until it succeeds or fails for a reason other than infrastructure.

        A bus or database failure is not the event's fault: the read stays
        unacknowledged and is retried with backoff (logged once per outage).
        """
        outage = _Outage(self.ctx, "infrastructure")
        while True:
            try:
                await step()
            except (BusError, StoreError) as exc:
                await outage.failed(exc)
            else:
                outage.recovered()
                return

    async def _park_bad_events(self, batch: Batch) -> None:
        """Retry event by event; an event that still fails is dead-lettered."""
        service, ctx = self.service, self.ctx
        for event in batch.events:
            try:
                await service.handle(batch.topic, [event])
            except (BusError, StoreError):
                raise
            except Exception as exc:
                metrics.events_parked.labels(ctx.name, ctx.instance, batch.topic).inc()
                ctx.log.exception("event parked", topic=batch.topic, event_id=event.id,
                                  correlation_id=event.correlation_id)
                await ctx.publish(batch.topic + DEAD_LETTER_SUFFIX, [event])
                await ctx.alert(
                    "warning", "event_parked",
                    f"{ctx.name} could not process {event.id} from {batch.topic}: {exc!r}",
                    correlation_id=event.correlation_id, causation_id=event.id,
                )

    async def wait_producer(self) -> None:
        """Wait until the producer (if any) has finished."""
        await self.producer_done.wait()
        for task in self._tasks:
            if task.get_name().endswith(".produce") and task.done() and task.exception():
                raise task.exception()  # type: ignore[misc]

    async def stop(self, timeout: float = 10.0) -> None:
        """Drain: finish the batch in hand, ack it, stop; cancel after ``timeout`` s."""
        if self.state in (State.STOPPING, State.STOPPED):
            return
        self.state = State.STOPPING
        self._stopping.set()
        for task in self._tasks:
            if task.get_name().endswith(".produce"):
                task.cancel()
        if isinstance(self._sub, Interruptible):
            self._sub.interrupt()  # an idle read returns now, not after its poll
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.service.on_stop()
        finally:
            self.state = State.STOPPED
            self.ctx.log.info("service stopped")
