"""A Bus that survives its backend going away: a circuit breaker in front of it, and a
durable disk buffer behind the breaker for what producers publish meanwhile.

``publish`` goes straight to the inner bus (Redis) while the breaker is closed and
nothing is buffered. When the inner bus fails, or the breaker is open, the events are
appended to the ``DiskBuffer`` instead (durable when ``publish`` returns, as the Bus
contract wants), and so is every later event until the buffer is empty again: a
flusher task publishes the buffer oldest first, so on recovery the buffered events
reach Redis, in their order, *before* any new event. An inner publish that failed
half-way is buffered whole; the part that got through is published twice, which
consumers absorb by being idempotent on event ids.

Subscriptions and ``pending`` go through the same breaker: while it is open they fail
fast with ``CircuitOpenError`` (a ``BusError``, so the service host holds its batch and
backs off) instead of each waiting for its own connection timeout.

When the buffer is full the policy decides (``full_policy``):

- ``block`` (default): ``publish`` waits until the flush has made room. Nothing is
  dropped; the producer slows to what Redis takes (ws stops reading its source, a
  consumer stops reading its input). Logged once, ``cdb_buffer_full`` is 1, and
  health shows it.
- ``reject``: ``publish`` raises ``BufferFullError``. A consuming service holds its
  input batch unacknowledged and retries it; a producer must decide itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Generic, Literal, TypeVar

import structlog

from cdb.bus.base import Batch, Bus, DefersAck, Subscription
from cdb.bus.disk_buffer import DiskBuffer, Entry
from cdb.errors import (
    BufferFullError,
    BusClosedError,
    BusError,
    CircuitOpenError,
    DecodeError,
)
from cdb.events import AnyEvent, decode, encode
from cdb.lifecycle import State, starting
from cdb.resilience import metrics
from cdb.resilience.backoff import Backoff, nap
from cdb.resilience.breaker import BreakerProbe, BreakerState, CircuitBreaker

FullPolicy = Literal["block", "reject"]
FlushGate = Callable[[str, int], Awaitable[None]]
"""``gate(topic, n)`` returns when ``n`` more events of ``topic`` may be flushed; its
calls to the backend go through ``guarded(bus.breaker, ...)`` like the bus's own."""
Sleep = Callable[[float], Awaitable[None]]

B = TypeVar("B", bound=Bus)
T = TypeVar("T")

_log = structlog.get_logger("cdb.bus.buffered")


class BufferedBus(Generic[B]):
    """Breaker, disk buffer and in-order flush around ``inner`` (an async context manager).

    Args:
        inner: the bus that may fail (Redis Streams); closed with this one.
        buffer: the disk buffer (not yet open); opened on start, closed on close.
        breaker: shared with whatever else talks to the same backend (health).
        backoff: waits between flush attempts while the breaker stays closed.
        full_policy: ``block`` or ``reject`` (module docstring).
        flush_batch: events read from the buffer per flush step.
        gate: paces the flush so consumers are not outrun (Redis trims streams).
        drain_timeout: on close, how long the flusher may go on emptying the buffer.
        service, instance: metric labels.
        probe: a cheap call to the backend (PING); while the breaker is open it is
            tried on the backoff schedule and closes the breaker once it answers, so
            traffic flows again seconds after the backend is back (``BreakerProbe``).
        on_start: awaited first on start (e.g. watching the Sentinels).
        on_close: awaited last on close (e.g. closing the Redis connections).
        sleep: injectable for tests.
    """

    def __init__(
        self, inner: B, buffer: DiskBuffer, *, breaker: CircuitBreaker | None = None,
        backoff: Backoff | None = None, full_policy: FullPolicy = "block",
        flush_batch: int = 1000, gate: FlushGate | None = None, drain_timeout: float = 5.0,
        service: str = "", instance: str = "",
        on_start: Callable[[], Awaitable[None]] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None, sleep: Sleep = asyncio.sleep,
        probe: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        if full_policy not in ("block", "reject"):
            raise ValueError(f"full_policy is 'block' or 'reject', not {full_policy!r}")
        self.inner = inner
        self.buffer = buffer
        self.breaker = breaker or CircuitBreaker("redis")
        self.backoff = backoff or Backoff()
        self.full_policy = full_policy
        self._flush_batch = flush_batch
        self._gate = gate
        self._drain_timeout = drain_timeout
        self._on_start = on_start
        self._on_close = on_close
        self._sleep = sleep
        self.state = State.CREATED
        self._appending = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._empty = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self._closed_again = asyncio.Event()
        self.probe = (
            BreakerProbe(self.breaker, probe, self.backoff, sleep=sleep) if probe else None
        )
        self._buffering = False  # for logging once per outage
        self._full_logged = False
        self.flushed = 0
        labels = (service, instance)
        self._g_buffered = metrics.buffered_events.labels(*labels)
        self._g_bytes = metrics.buffer_bytes.labels(*labels)
        self._g_full = metrics.buffer_full.labels(*labels)
        self._c_buffered = metrics.buffered_total.labels(*labels)
        self._c_flushed = metrics.flushed_total.labels(*labels)
        self._c_parked = metrics.buffer_parked.labels(*labels)
        state = metrics.breaker_state.labels(*labels, self.breaker.name)
        opened = metrics.breaker_opened.labels(*labels, self.breaker.name)
        state.set(self.breaker.state.value)

        def on_change(old: BreakerState, new: BreakerState, error: str) -> None:
            state.set(new.value)
            if new is BreakerState.OPEN:
                opened.inc()
            elif new is BreakerState.CLOSED:
                self._closed_again.set()

        self.breaker.listen(on_change)

    def __repr__(self) -> str:
        return f"BufferedBus({self.inner!r}, {self.buffer!r}, {self.state.value})"

    # lifecycle

    async def __aenter__(self) -> BufferedBus[B]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the buffer and start the flusher; what a previous run left is flushed
        first."""
        running = starting(repr(self), self.state)
        try:
            if self._on_start is not None:
                await self._on_start()
            await asyncio.to_thread(self.buffer.open)
        except BaseException:
            await self.close()
            raise
        self.state = running
        self._update_gauges()
        if self.buffer.count:
            _log.warning(
                "disk buffer holds events from a previous run; flushing them first",
                path=str(self.buffer.path), events=self.buffer.count,
            )
            self._buffering = True
            self._wake.set()
        self._flusher = asyncio.create_task(self._flush_forever(), name="bus.flush")
        if self.probe is not None:
            self._prober = asyncio.create_task(self.probe.run(), name="bus.probe")

    async def close(self) -> None:
        """Stop: flush what Redis still takes within ``drain_timeout``, keep the rest on
        disk for the next start, close the inner bus and the buffer."""
        if self.state in (State.STOPPING, State.STOPPED):
            return
        started = self.state is State.RUNNING
        self.state = State.STOPPING
        self._room.set()  # publishers waiting for room give up
        try:
            if self._prober is not None:
                self._prober.cancel()
                await asyncio.gather(self._prober, return_exceptions=True)
            if started and self._flusher is not None:
                if self.buffer.count:
                    await self._drain()
                self._flusher.cancel()
                await asyncio.gather(self._flusher, return_exceptions=True)
        finally:
            try:
                await self.inner.close()
                if self._on_close is not None:
                    await self._on_close()
            finally:
                await asyncio.to_thread(self.buffer.close)
                self.state = State.STOPPED

    async def _drain(self) -> None:
        if self.breaker.state is BreakerState.OPEN:
            left = self.buffer.count
        else:
            self._wake.set()
            try:
                await asyncio.wait_for(self._empty.wait(), self._drain_timeout)
                return
            except TimeoutError:
                left = self.buffer.count
        _log.warning(
            "events stay in the disk buffer; they are flushed at the next start",
            path=str(self.buffer.path), events=left,
        )

    @property
    def closed(self) -> bool:
        return self.state in (State.STOPPING, State.STOPPED)

    # state

    @property
    def buffered(self) -> int:
        """Events in the disk buffer, not yet flushed."""
        return self.buffer.count

    def status(self) -> dict[str, object]:
        """For ``/health`` details."""
        return {
            "buffered_events": self.buffer.count,
            "buffer_full": self.buffer.full,
            "redis_circuit": self.breaker.state.name.lower(),
        }

    def _update_gauges(self) -> None:
        self._g_buffered.set(self.buffer.count)
        self._g_bytes.set(self.buffer.nbytes)
        full = self.buffer.full
        self._g_full.set(1 if full else 0)
        if full:
            self._room.clear()
        else:
            self._room.set()

    # the Bus protocol

    async def publish(self, topic: str, events: Sequence[AnyEvent]) -> None:
        """Publish to the inner bus, or append to the disk buffer when it cannot take
        them now; durable either way when this returns.

        Raises:
            BufferFullError: the buffer is full and the policy is ``reject``.
            BusClosedError: the bus was closed (also while waiting for room).
        """
        if self.state is not State.RUNNING:
            raise BusClosedError(f"publish to {topic} on a {self.state.value} buffered bus")
        if not events:
            return
        # Anything buffered (or being buffered) goes first: new events queue behind it.
        if not (self.buffer.count or self._appending):
            try:
                await guarded(self.breaker, partial(self.inner.publish, topic, events))
            except BusClosedError:
                raise
            except BusError as exc:
                self._outage_started(exc)
            else:
                return
        await self._append(topic, events)

    def _outage_started(self, exc: BaseException | str) -> None:
        if not self._buffering:
            self._buffering = True
            _log.warning(
                "bus unavailable; buffering events on disk", error=str(exc),
                path=str(self.buffer.path),
            )

    async def _append(self, topic: str, events: Sequence[AnyEvent]) -> None:
        payloads = [encode(event) for event in events]
        self._appending += 1
        try:
            while True:
                if self.buffer.full:
                    await self._wait_for_room()
                    continue
                try:
                    await asyncio.to_thread(self.buffer.append, topic, payloads)
                except BufferFullError:
                    # Another publisher filled it first.
                    if self.full_policy == "reject":
                        raise
                    self._update_gauges()
                    continue
                break
        finally:
            self._appending -= 1
        self._c_buffered.inc(len(payloads))
        self._update_gauges()
        self._empty.clear()
        self._wake.set()

    async def _wait_for_room(self) -> None:
        self._update_gauges()
        if self.full_policy == "reject":
            raise BufferFullError(
                f"disk buffer {self.buffer.path} is full ({self.buffer.count} events); "
                "policy reject"
            )
        if not self._full_logged:
            self._full_logged = True
            _log.error(
                "disk buffer full; publishers wait until Redis takes the buffered events",
                path=str(self.buffer.path), events=self.buffer.count,
                bytes=self.buffer.nbytes, policy=self.full_policy,
            )
        await self._room.wait()
        if self.state is not State.RUNNING:
            raise BusClosedError("bus closed while waiting for room in the disk buffer")

    def subscribe(self, topics: Sequence[str], group: str, consumer: str) -> GuardedSubscription:
        inner = self.inner.subscribe(topics, group, consumer)
        if isinstance(inner, DefersAck):
            return DeferringGuardedSubscription(inner, self.breaker)
        return GuardedSubscription(inner, self.breaker)

    async def pending(self, topic: str, group: str) -> int:
        """The inner bus's count plus the events of ``topic`` still in the buffer."""
        inner = await guarded(self.breaker, partial(self.inner.pending, topic, group))
        return inner + self.buffer.count_of(topic)

    # the flush

    async def _flush_forever(self) -> None:
        failures = 0
        while True:
            if not (self.buffer.count or self._appending):
                self._flush_done()
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self.buffer.count:
                # An append is on its way to the disk; it wakes us when it is there.
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.breaker.state is BreakerState.OPEN:
                await self._until_closed(self.breaker.retry_after())
                continue
            try:
                await self._flush_some()
            except CircuitOpenError as exc:
                # Not tried: open, or another call holds the half-open trial.
                await self._until_closed(max(exc.retry_after, self.backoff.base / 10))
                continue
            except BusError as exc:
                # Counted by the breaker already (every inner call is guarded).
                failures += 1
                if failures == 1:
                    _log.warning("flushing the disk buffer failed; retrying", error=str(exc),
                                 events=self.buffer.count)
                # Open: until the trial (or a probe closes it); still closed: the backoff.
                after = self.breaker.retry_after()
                await (self._until_closed(after) if after else
                       self._sleep(self.backoff.compute(failures)))
                continue
            except Exception:
                # A bug must not end the flush for good: the buffer would only grow.
                failures += 1
                _log.exception("flushing the disk buffer failed; retrying", failures=failures)
                await self._sleep(self.backoff.compute(failures))
                continue
            failures = 0

    async def _until_closed(self, delay: float) -> None:
        """Sleep ``delay`` s, or less when the breaker closes meanwhile (a probe found the
        backend back): the buffer then flushes at once, not at the breaker's trial."""
        if self.probe is None:
            await self._sleep(delay)
            return
        self._closed_again.clear()
        if self.breaker.state is not BreakerState.CLOSED:
            await nap(delay, self._closed_again, self._sleep)

    def _flush_done(self) -> None:
        self._empty.set()
        if self._buffering:
            self._buffering = False
            _log.info("disk buffer flushed; publishing directly again", events=self.flushed)
            self.flushed = 0
        if self._full_logged:
            self._full_logged = False
            _log.info("disk buffer has room again")

    async def _flush_some(self) -> None:
        """Publish the oldest entries, one run of a topic at a time, deleting each run
        from the buffer once the inner bus has it."""
        entries = await asyncio.to_thread(self.buffer.peek, self._flush_batch)
        for topic, run in _runs(entries):
            events: list[AnyEvent] = []
            bad: list[Entry] = []
            for entry in run:
                try:
                    events.append(decode(entry.payload))
                except DecodeError:
                    bad.append(entry)
            if bad:
                await asyncio.to_thread(self.buffer.park, bad, "undecodable")
                self._c_parked.inc(len(bad))
                _log.error("buffered entries do not decode; parked in the buffer file",
                           topic=topic, count=len(bad), path=str(self.buffer.path))
            if events:
                if self._gate is not None:
                    await self._gate(topic, len(events))
                await guarded(self.breaker, partial(self.inner.publish, topic, events))
            await asyncio.to_thread(self.buffer.delete_through, run[-1].seq)
            self.flushed += len(events)
            self._c_flushed.inc(len(events))
            self._update_gauges()


def _runs(entries: list[Entry]) -> list[tuple[str, list[Entry]]]:
    """Consecutive entries of one topic, in order."""
    runs: list[tuple[str, list[Entry]]] = []
    for entry in entries:
        if runs and runs[-1][0] == entry.topic:
            runs[-1][1].append(entry)
        else:
            runs.append((entry.topic, [entry]))
    return runs


async def guarded(breaker: CircuitBreaker, fn: Callable[[], Awaitable[T]]) -> T:
    """``fn()`` through ``breaker``; a ``BusError`` counts as a failure.

    Raises:
        CircuitOpenError: not tried.
    """
    return await breaker.call(fn, failing=(BusError,))


class GuardedSubscription:
    """A subscription whose reads, acks and claims go through the breaker."""

    def __init__(self, inner: Subscription, breaker: CircuitBreaker) -> None:
        self.inner = inner
        self._breaker = breaker

    async def read(self, max_events: int = 1000, timeout: float = 1.0) -> list[Batch]:
        return await guarded(self._breaker, lambda: self.inner.read(max_events, timeout))

    async def ack(self, batches: Sequence[Batch]) -> None:
        await guarded(self._breaker, lambda: self.inner.ack(batches))

    async def claim(self, min_idle: float, max_events: int = 1000) -> list[Batch]:
        return await guarded(self._breaker, lambda: self.inner.claim(min_idle, max_events))

    async def close(self) -> None:
        await self.inner.close()


class DeferringGuardedSubscription(GuardedSubscription):
    """A guarded subscription over one that defers acks (``DefersAck``); deferring does
    no I/O, so it bypasses the breaker."""

    def __init__(self, inner: Subscription, breaker: CircuitBreaker) -> None:
        if not isinstance(inner, DefersAck):
            raise TypeError(f"{inner!r} cannot defer acknowledgements")
        super().__init__(inner, breaker)
        self._defer_ack = inner.defer_ack

    def defer_ack(self, batches: Sequence[Batch]) -> None:
        self._defer_ack(batches)
