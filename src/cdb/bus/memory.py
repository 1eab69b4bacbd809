"""The in-memory bus of the embedded mode: one process, batches handed over by reference.

Events are not copied or encoded: a published list is shared by every group that
receives it. Backpressure replaces trimming: ``publish`` waits while any group has
``capacity`` or more unacknowledged events, so a fast source can never run away from
a slow consumer and memory stays flat however long the replay.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from itertools import count
from typing import cast

from cdb.bus.base import Batch
from cdb.bus.keys import STREAM_MAXLEN
from cdb.errors import BusClosedError
from cdb.events import AnyEvent


class _Pending:
    __slots__ = ("consumer", "deliveries", "events", "since")

    def __init__(self, consumer: str, events: list[AnyEvent]) -> None:
        self.consumer = consumer
        self.events = events
        self.since = time.monotonic()
        self.deliveries = 1


class _Group:
    """One consumer group's view of one topic."""

    __slots__ = ("backlog", "name", "pending", "queue", "readers")

    def __init__(self, name: str) -> None:
        self.name = name
        self.queue: deque[list[AnyEvent]] = deque()
        self.pending: dict[int, _Pending] = {}
        self.backlog = 0  # undelivered + pending
        self.readers: set[asyncio.Event] = set()

    def take(self, max_events: int) -> list[AnyEvent]:
        queue = self.queue
        out: list[AnyEvent] = []
        while queue and len(out) < max_events:
            chunk = queue.popleft()
            room = max_events - len(out)
            if len(chunk) > room:
                queue.appendleft(chunk[room:])
                chunk = chunk[:room]
            if out:
                out.extend(chunk)
            else:
                out = chunk if len(chunk) == room or not queue else list(chunk)
        return out


class _Topic:
    __slots__ = ("groups", "retained", "retained_len")

    def __init__(self) -> None:
        self.groups: dict[str, _Group] = {}
        self.retained: deque[list[AnyEvent]] = deque()
        self.retained_len = 0


class MemoryBus:
    """In-process bus with the Bus contract.

    Args:
        capacity: unacknowledged events a group may hold before publishers wait; also
            how many events a topic retains for groups that join later.
    """

    def __init__(self, capacity: int = STREAM_MAXLEN) -> None:
        self._capacity = capacity
        self._topics: dict[str, _Topic] = {}
        self._tokens = count(1)
        self._space = asyncio.Condition()
        self._drained = asyncio.Condition()
        self._closed = False
        self.published: dict[str, int] = {}

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic()
        return topic

    async def publish(self, topic: str, events: Sequence[AnyEvent]) -> None:
        if self._closed:
            raise BusClosedError(f"publish to {topic} on a closed bus")
        if not events:
            return
        chunk = list(events)
        t = self._topic(topic)
        if any(g.backlog >= self._capacity for g in t.groups.values()):
            async with self._space:
                await self._space.wait_for(
                    lambda: self._closed
                    or all(g.backlog < self._capacity for g in t.groups.values())
                )
            if self._closed:
                raise BusClosedError(f"bus closed while publishing to {topic}")
        n = len(chunk)
        self.published[topic] = self.published.get(topic, 0) + n
        t.retained.append(chunk)
        t.retained_len += n
        while t.retained_len - len(t.retained[0]) >= self._capacity:
            t.retained_len -= len(t.retained.popleft())
        for group in t.groups.values():
            group.queue.append(chunk)
            group.backlog += n
            for reader in group.readers:
                reader.set()

    def subscribe(self, topics: Sequence[str], group: str, consumer: str) -> MemorySubscription:
        groups: list[tuple[str, _Group]] = []
        for name in topics:
            t = self._topic(name)
            g = t.groups.get(group)
            if g is None:
                g = t.groups[group] = _Group(group)
                for chunk in t.retained:
                    g.queue.append(chunk)
                    g.backlog += len(chunk)
            groups.append((name, g))
        return MemorySubscription(self, groups, consumer)

    async def pending(self, topic: str, group: str) -> int:
        g = self._topic(topic).groups.get(group)
        return g.backlog if g else 0

    async def wait_drained(self, exclude_groups: frozenset[str] = frozenset()) -> None:
        """Wait until every group (but ``exclude_groups``) has acknowledged everything."""

        def drained() -> bool:
            return self._closed or all(
                g.backlog == 0
                for t in self._topics.values()
                for g in t.groups.values()
                if g.name not in exclude_groups
            )

        if drained():
            return
        async with self._drained:
            await self._drained.wait_for(drained)

    async def _acked(self, group: _Group, n: int) -> None:
        before = group.backlog
        group.backlog -= n
        if before >= self._capacity > group.backlog:
            async with self._space:
                self._space.notify_all()
        if group.backlog == 0:
            async with self._drained:
                self._drained.notify_all()

    async def close(self) -> None:
        self._closed = True
        async with self._space:
            self._space.notify_all()
        async with self._drained:
            self._drained.notify_all()
        for t in self._topics.values():
            for g in t.groups.values():
                for reader in g.readers:
                    reader.set()


class MemorySubscription:
    """A consumer of a MemoryBus group on one or more topics."""

    def __init__(self, bus: MemoryBus, groups: list[tuple[str, _Group]], consumer: str) -> None:
        self._bus = bus
        self._groups = groups
        self._consumer = consumer
        self._wakeup = asyncio.Event()
        for _, g in groups:
            g.readers.add(self._wakeup)

    async def read(self, max_events: int = 1000, timeout: float = 1.0) -> list[Batch]:
        batches = self._take(max_events)
        if batches or self._bus._closed:
            return batches
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except TimeoutError:
            return []
        return self._take(max_events)

    def interrupt(self) -> None:
        self._wakeup.set()

    def _take(self, max_events: int) -> list[Batch]:
        batches: list[Batch] = []
        for name, g in self._groups:
            if g.queue:
                events = g.take(max_events)
                token = next(self._bus._tokens)
                g.pending[token] = _Pending(self._consumer, events)
                batches.append(Batch(name, events, (g, token)))
        return batches

    async def ack(self, batches: Sequence[Batch]) -> None:
        for batch in batches:
            group, token = cast("tuple[_Group, int]", batch.token)
            entry = group.pending.pop(token, None)
            if entry is not None:
                await self._bus._acked(group, len(entry.events))

    async def claim(self, min_idle: float, max_events: int = 1000) -> list[Batch]:
        now = time.monotonic()
        batches: list[Batch] = []
        for name, g in self._groups:
            for token, entry in list(g.pending.items()):
                if entry.consumer != self._consumer and now - entry.since >= min_idle:
                    entry.consumer = self._consumer
                    entry.since = now
                    entry.deliveries += 1
                    batches.append(Batch(name, entry.events, (g, token)))
        return batches

    async def close(self) -> None:
        for _, g in self._groups:
            g.readers.discard(self._wakeup)
