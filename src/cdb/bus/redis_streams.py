"""The Redis Streams bus of the distributed mode: the Bus contract over consumer groups.

Each topic is a stream (``namespace.key(topic)``) whose entries hold one msgpack
event in the field ``e``. Every operation on a batch is one round trip: ``publish``
runs a Lua script per 1000 events that does one ``XADD ... MAXLEN ~`` per event,
``read`` is one ``XREADGROUP`` over all the subscription's streams, ``ack`` one
pipelined ``XACK`` per stream. These three go through a ``Lane`` (one connection
held per subscription, one for publishing) rather than redis-py's command path,
which costs several times what Redis does per call (see ``cdb.bus.lane``).

Topics with a contract pub/sub topic (``keys.PUBSUB_TOPIC``) also get one
``PUBLISH`` per chunk of up to 1000 events, from the same script, when the channel
has a subscriber: a best-effort notification (lost while nobody listens, never
replayed) whose payload is the msgpack array of the chunk's events, read with
``decode_notification``. One message per batch rather than per event keeps a
subscriber's work and Redis's fan-out per batch; the streams stay the source of
truth.

The publish script and the entry format are in ``cdb.bus.redis_publish``; reading,
acknowledging, claiming and dead-lettering in ``cdb.bus.redis_subscription``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import NoScriptError, RedisError, ResponseError

from cdb.bus.keys import PUBSUB_TOPIC, STREAM_MAXLEN, Namespace
from cdb.bus.lane import Lane, pack, raise_first
from cdb.bus.redis_publish import LOAD_SCRIPT, publish_commands
from cdb.bus.redis_subscription import RedisStreamsSubscription, StreamEntry
from cdb.bus.sentinel import follow_master
from cdb.errors import BusClosedError, BusError
from cdb.events import AnyEvent, encode


class GroupBacklog(NamedTuple):
    """A consumer group's unacknowledged events (pending and not yet delivered)."""

    group: str
    events: int
    consumers: int
    """Consumers that ever joined (0: created ahead of its service, nobody read yet)."""


def _entry_id(value: bytes | str) -> tuple[int, int]:
    """A stream entry id (``ms-seq``) as a comparable pair."""
    ms, _, seq = _as_bytes(value).partition(b"-")
    return int(ms), int(seq or 0)


def read_to_end(group: Mapping[str, Any], stream: Mapping[str, Any] | None) -> bool:
    """Whether a consumer group (an ``XINFO GROUPS`` entry) was delivered every entry of
    the stream (``XINFO STREAM``): its last-delivered id is the stream's last id.

    Redis's own counters (``lag``, ``entries-read``) can stay off after it reloads its
    AOF, by thousands, while the group has read everything; this cannot.
    """
    if stream is None or group.get("last-delivered-id") is None:
        return False
    return bool(_entry_id(group["last-delivered-id"]) >= _entry_id(
        stream["last-generated-id"]))


def undelivered(group: Mapping[str, Any], stream: Mapping[str, Any] | None) -> int | None:
    """Entries the group has not been delivered: 0 once ``read_to_end``, else Redis's
    ``lag`` (None when Redis cannot count)."""
    if read_to_end(group, stream):
        return 0
    lag = group.get("lag")
    return None if lag is None else int(lag)


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


class RedisStreamsBus:
    """Bus over Redis Streams and consumer groups.

    Args:
        client: an asyncio Redis client made with ``decode_responses=False`` (events
            are bytes). Its ``socket_timeout`` bounds how long one ``read`` blocks.
        namespace: prefixes every key; the empty namespace gives the contract names.
        maxlen: approximate length streams are trimmed to (``MAXLEN ~``).
        claim_idle: when set, ``read`` also reclaims entries left pending this long
            (s), checking every ``claim_idle / 2`` s, for consumers that never call
            ``claim`` themselves; ``ServiceHost`` claims on its own, so it is off by
            default.
        max_deliveries: deliveries after which an entry is dead-lettered instead of
            handed out again (a poison event must not loop forever).
        min_replicas: replicas that must confirm every publish (``WAIT`` on the
            connection that wrote it; 0: none). Replication is asynchronous: what a
            master accepted just before a failover may never reach the replica promoted
            in its place. With this, such a publish fails (the replica stopped
            acknowledging), a buffered bus keeps the events and publishes them again to
            the new master; consumers absorb the copy.
        replica_timeout: how long a publish waits for the replicas (s).
        owns_client: close ``client`` on ``close``.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        namespace: Namespace,
        *,
        maxlen: int = STREAM_MAXLEN,
        claim_idle: float | None = None,
        max_deliveries: int = 5,
        min_replicas: int = 0,
        replica_timeout: float = 1.0,
        owns_client: bool = False,
    ) -> None:
        # Only a single-pool client can be checked; a cluster client keeps settings per node.
        pool = getattr(client, "connection_pool", None)
        pool_kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", None) or {}
        if pool_kwargs.get("decode_responses"):
            raise BusError(
                "the Redis client decodes responses, but events are binary: "
                "create it with decode_responses=False"
            )
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1, not {max_deliveries}")
        self.client = client
        self.namespace = namespace
        self.maxlen = maxlen
        self.claim_idle = claim_idle
        self.max_deliveries = max_deliveries
        self.min_replicas = min_replicas
        self._wait_ms = max(1, int(replica_timeout * 1000))
        self._owns_client = owns_client
        self._closed = False
        socket_timeout = pool_kwargs.get("socket_timeout")
        # A BLOCK that outlasts the socket timeout would end in a client-side timeout
        # error instead of an empty read, so blocking stops short of it.
        self.max_block_ms = max(1, int(socket_timeout * 800)) if socket_timeout else None
        """The longest ``BLOCK`` a read may ask for (ms); ``None``: no socket timeout."""
        self._channels = {t: namespace.key(c) for t, c in PUBSUB_TOPIC.items()}
        self.published: dict[str, int] = {}
        self.dead_lettered: dict[str, int] = {}
        self._lane: Lane | None = None
        self._lanes: list[Lane] = []
        """Every lane of this bus and its subscriptions: closed with the bus."""

    @classmethod
    def from_url(
        cls,
        url: str,
        namespace: Namespace,
        *,
        maxlen: int = STREAM_MAXLEN,
        claim_idle: float | None = None,
        max_deliveries: int = 5,
    ) -> RedisStreamsBus:
        """A bus with its own client for ``url`` (``redis://[:password@]host:port/db``),
        closed with the bus."""
        client = aioredis.Redis.from_url(url, decode_responses=False)
        return cls(
            client, namespace, maxlen=maxlen, claim_idle=claim_idle,
            max_deliveries=max_deliveries, owns_client=True,
        )

    async def __aenter__(self) -> RedisStreamsBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def publish(self, topic: str, events: Sequence[AnyEvent]) -> None:
        if self._closed:
            raise BusClosedError(f"publish to {topic} on a closed bus")
        if not events:
            return
        key = self.namespace.key(topic)
        payloads = [encode(event) for event in events]
        channel = self._channels.get(topic, "")
        try:
            try:
                await self._publish(key, channel, payloads)
            except NoScriptError:
                # Redis restarted or its script cache was flushed; nothing ran.
                if self._lane is None:
                    self._lane = self.lane()
                raise_first(await self._lane.call(LOAD_SCRIPT))
                await self._publish(key, channel, payloads)
        except RedisError as exc:
            # Some chunks may be in: a retry duplicates them, which consumers absorb by
            # being idempotent on event ids.
            raise BusError(f"publish of {len(payloads)} events to {key} failed: {exc}") from exc
        self.published[topic] = self.published.get(topic, 0) + len(payloads)

    async def _publish(self, key: str, channel: str, payloads: list[bytes]) -> None:
        """The publish script once per chunk (and WAIT, with ``min_replicas``), in one
        round trip on the publishing lane."""
        if self._lane is None:
            self._lane = self.lane()
        commands = publish_commands(key, self.maxlen, channel, payloads)
        if self.min_replicas:
            # WAIT counts the writes of its own connection: the same round trip.
            commands.append(pack("WAIT", self.min_replicas, self._wait_ms))
        replies = await self._lane.call(b"".join(commands), len(commands))
        # NOSCRIPT fails every chunk alike (one script), before anything ran.
        raise_first(replies)
        if self.min_replicas:
            confirmed = int(replies[-1])
            if confirmed < self.min_replicas:
                await self._follow_failover()
                raise BusError(
                    f"publish of {len(payloads)} events to {key}: {confirmed} of "
                    f"{self.min_replicas} replicas confirmed within {self._wait_ms} ms"
                )

    async def _follow_failover(self) -> None:
        """A master that lost its replicas may have been replaced: ask the sentinels now
        (redis-py drops idle connections to a master that moved) rather than write to it
        until Sentinel demotes it."""
        pool = self.client.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            with contextlib.suppress(RedisError, OSError):
                await follow_master(pool)

    def lane(self) -> Lane:
        """A connection of this bus's client for one caller's hot-path commands (closed
        with the bus, or by ``release``)."""
        lane = Lane(self.client)
        self._lanes.append(lane)
        return lane

    async def release(self, lane: Lane) -> None:
        """Close a lane its caller is done with."""
        if lane in self._lanes:
            self._lanes.remove(lane)
        await lane.close()

    def subscribe(
        self, topics: Sequence[str], group: str, consumer: str
    ) -> RedisStreamsSubscription:
        return RedisStreamsSubscription(self, topics, group, consumer)

    async def pending(self, topic: str, group: str) -> int:
        for backlog in await self.backlogs(topic, group):
            return backlog.events
        return 0

    async def backlogs(self, topic: str, group: str | None = None) -> list[GroupBacklog]:
        """What each consumer group of ``topic`` (or only ``group``) has not acknowledged,
        from one ``XINFO GROUPS`` (none for a stream that does not exist yet)."""
        key = self.namespace.key(topic)
        pipe = self.client.pipeline(transaction=False)
        pipe.xinfo_groups(key)
        pipe.xlen(key)
        pipe.xinfo_stream(key)
        try:
            groups, length, stream = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            raise BusError(f"XINFO GROUPS {key} failed: {exc}") from exc
        if isinstance(groups, ResponseError) and "no such key" in str(groups).lower():
            return []
        if isinstance(groups, Exception):
            raise BusError(f"XINFO GROUPS {key} failed: {groups}")
        at = None if isinstance(stream, Exception) else stream
        out = []
        for info in groups:
            name = _as_bytes(info["name"]).decode()
            if group is not None and name != group:
                continue
            # A producer paced by a count that never drains (ws) would wait forever.
            lag = undelivered(info, at)
            if lag is None:
                lag = await self._count_after(key, _as_bytes(info["last-delivered-id"]))
            # Redis counts entries trimmed before delivery in the lag; they will never
            # be delivered, and the undelivered entries that remain are in the stream.
            events = int(info["pending"]) + min(int(lag), int(length))
            out.append(GroupBacklog(name, events, int(info["consumers"])))
        return out

    async def _count_after(self, key: str, last_id: bytes) -> int:
        """Entries after ``last_id``, counted by reading them: Redis reports no lag
        before 7.0, nor after entries were deleted from inside the stream."""
        count = 0
        start = b"(" + last_id
        try:
            while True:
                reply = await self.client.xrange(key, min=start, max="+", count=1000)
                entries = cast("list[StreamEntry]", reply or [])
                count += len(entries)
                if len(entries) < 1000:
                    return count
                start = b"(" + entries[-1][0]
        except RedisError as exc:
            raise BusError(f"XRANGE {key} failed: {exc}") from exc

    async def close(self) -> None:
        """Stop publishing and reading; a read in flight ends within its timeout."""
        if self._closed:
            return
        self._closed = True
        for lane in self._lanes:
            await lane.close()
        if self._owns_client:
            await self.client.aclose()

    @property
    def closed(self) -> bool:
        return self._closed
