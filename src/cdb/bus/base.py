"""The Bus protocol: the contract both the in-memory and the Redis Streams bus pass.

Delivery is at least once. Each event published to a topic goes to one member of
every group subscribed to it. A consumer receives batches and acknowledges batches,
once the effect of their events is durable; what it never acknowledges can be
claimed by another member after an idle time. Consumers are idempotent on event ids,
which makes delivery effectively once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from cdb.events import AnyEvent


class Batch:
    """Events of one topic handed to one consumer, acknowledged together.

    Args:
        topic: the un-namespaced topic name.
        events: the decoded events, in publish order.
        token: the backend's handle for acknowledging them.
    """

    __slots__ = ("events", "token", "topic")

    def __init__(self, topic: str, events: list[AnyEvent], token: object) -> None:
        self.topic = topic
        self.events = events
        self.token = token

    def __repr__(self) -> str:
        return f"Batch(topic={self.topic!r}, events={len(self.events)})"


class Subscription(Protocol):
    """One consumer's membership of a group on one or more topics."""

    async def read(self, max_events: int = 1000, timeout: float = 1.0) -> list[Batch]:
        """Next batches (at most ``max_events`` per topic); empty after ``timeout`` s."""
        ...

    async def ack(self, batches: Sequence[Batch]) -> None:
        """Acknowledge ``batches``: their events will not be delivered again."""
        ...

    async def claim(self, min_idle: float, max_events: int = 1000) -> list[Batch]:
        """Take over events other members left unacknowledged for ``min_idle`` s."""
        ...

    async def close(self) -> None:
        """Leave; unacknowledged events stay pending for others to claim."""
        ...


@runtime_checkable
class Interruptible(Protocol):
    """A subscription whose waiting read can be ended early (it then returns what it
    has, maybe nothing): a stopping consumer need not wait out its poll."""

    def interrupt(self) -> None: ...


@runtime_checkable
class DefersAck(Protocol):
    """A subscription that can acknowledge with its next round trip (read, ack or
    close) instead of one of its own: one round trip per consume cycle."""

    def defer_ack(self, batches: Sequence[Batch]) -> None:
        """Acknowledge ``batches`` with the next round trip; no I/O now."""
        ...


class Bus(Protocol):
    """Publish batches to topics; subscribe as a member of a named group."""

    async def publish(self, topic: str, events: Sequence[AnyEvent]) -> None:
        """Publish ``events`` to ``topic`` in order; durable when this returns."""
        ...

    def subscribe(self, topics: Sequence[str], group: str, consumer: str) -> Subscription:
        """Join ``group`` on ``topics`` as ``consumer``; the group starts at the oldest
        retained event when it is new, at its own position otherwise."""
        ...

    async def pending(self, topic: str, group: str) -> int:
        """Events of ``topic`` the group has not acknowledged (delivered or not)."""
        ...

    async def close(self) -> None:
        """Release connections; subscriptions stop reading."""
        ...
