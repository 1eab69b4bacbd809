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

What a consumer cannot use is parked, never fatal: an entry that does not decode, or
one delivered more than ``max_deliveries`` times, is copied to
``namespace.dead_letter(stream)`` (fields ``e`` with the original bytes, ``reason``,
``stream``, ``id``, ``group``, ``consumer``) and acknowledged. A group that vanished
(Redis restarted empty, ``NOGROUP``) is created again and reading goes on.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple, TypeAlias, cast

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import NoScriptError, RedisError, ResponseError

from cdb.bus.base import Batch
from cdb.bus.keys import PUBSUB_TOPIC, STREAM_MAXLEN, Namespace
from cdb.bus.lane import Lane, pack, raise_first
from cdb.errors import BusClosedError, BusError, DecodeError
from cdb.events import AnyEvent, decode, encode

FIELD: Final = b"e"
"""The entry field that holds the encoded event."""

_log = structlog.get_logger("cdb.bus.redis_streams")
_notification_decoder: msgspec.msgpack.Decoder[list[AnyEvent]] = msgspec.msgpack.Decoder(
    list[AnyEvent]
)
# Errors after which the group must be created again: the key or the group is gone
# (FLUSHALL, a restart without persistence), or it went away under a blocked read.
_LOST_GROUP: Final = ("NOGROUP", "UNBLOCKED")

# Publishing runs this script once per chunk of events, all chunks in one round trip.
# Pipelining one XADD per event costs redis-py about 40 us per command to pack and
# parse, four times what the whole script costs Redis; the chunk bounds how long one
# script holds the server. KEYS[1] stream; ARGV: maxlen, channel ('' for none), array
# header, events.
_PUBLISH_LUA: Final = """
local key, maxlen = KEYS[1], ARGV[1]
for i = 4, #ARGV do
  redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'e', ARGV[i])
end
if ARGV[2] ~= '' and redis.call('PUBSUB', 'NUMSUB', ARGV[2])[2] > 0 then
  redis.call('PUBLISH', ARGV[2], ARGV[3] .. table.concat(ARGV, '', 4))
end
return #ARGV - 3
"""
_PUBLISH_SHA: Final = hashlib.sha1(_PUBLISH_LUA.encode(), usedforsecurity=False).hexdigest()
_CHUNK: Final = 1000

_Fields: TypeAlias = "dict[bytes, bytes] | list[bytes] | None"
"""An entry's fields: a dict from redis-py's parsing, a flat list in a raw reply."""
_Entry = tuple[bytes, _Fields]
_Token = tuple[str, list[bytes]]


class GroupBacklog(NamedTuple):
    """A consumer group's unacknowledged events (pending and not yet delivered)."""

    group: str
    events: int
    consumers: int
    """Consumers that ever joined (0: created ahead of its service, nobody read yet)."""


def decode_notification(payload: bytes) -> list[AnyEvent]:
    """Decode the payload of a pub/sub notification: the events of one published batch.

    Raises:
        DecodeError: the payload is not a msgpack array of events.
    """
    try:
        return _notification_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeError(str(exc), "pub/sub notification") from exc


def _msgpack_array_header(n: int) -> bytes:
    """The msgpack header of an ``n``-item array: followed by ``n`` encoded events it
    makes the notification payload without encoding anything twice."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _streams(response: Any) -> Iterable[tuple[bytes, list[_Entry]]]:
    """(stream, entries) pairs of an XREADGROUP reply, whatever the reply shape.

    Redis answers a list of ``[stream, entries]`` on RESP2, a map on RESP3; redis-py's
    RESP3 legacy responses wrap the entries of each stream in one more list.
    """
    if not response:
        return ()
    if isinstance(response, dict):
        return (
            (key, value[0] if value and value[0] and isinstance(value[0][0], list) else value)
            for key, value in response.items()
        )
    return ((item[0], item[1]) for item in response)


def _advance(history: dict[str, bytes], streams: list[tuple[bytes, list[_Entry]]]) -> bool:
    """Move each stream's history cursor past the entries read; False if none came."""
    advanced = False
    for key, entries in streams:
        if entries:
            history[key.decode()] = entries[-1][0]
            advanced = True
    return advanced


def _payload(fields: dict[bytes, bytes] | list[bytes]) -> bytes | None:
    """The event bytes of an entry's fields, ``None`` without the ``e`` field."""
    if type(fields) is list:
        if len(fields) == 2 and fields[0] == FIELD:  # the only shape cdb writes
            return fields[1]
        for i in range(0, len(fields) - 1, 2):
            if fields[i] == FIELD:
                return fields[i + 1]
        return None
    return fields.get(FIELD)  # type: ignore[union-attr]


def _is_lost_group(exc: ResponseError) -> bool:
    return str(exc).startswith(_LOST_GROUP)


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
        self._owns_client = owns_client
        self._closed = False
        socket_timeout = pool_kwargs.get("socket_timeout")
        # A BLOCK that outlasts the socket timeout would end in a client-side timeout
        # error instead of an empty read, so blocking stops short of it.
        self._max_block_ms = max(1, int(socket_timeout * 800)) if socket_timeout else None
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
                raise_first(await self._lane.call(pack("SCRIPT", "LOAD", _PUBLISH_LUA)))
                await self._publish(key, channel, payloads)
        except RedisError as exc:
            # Some chunks may be in: a retry duplicates them, which consumers absorb by
            # being idempotent on event ids.
            raise BusError(f"publish of {len(payloads)} events to {key} failed: {exc}") from exc
        self.published[topic] = self.published.get(topic, 0) + len(payloads)

    async def _publish(self, key: str, channel: str, payloads: list[bytes]) -> None:
        await self._run_publish(key, channel, payloads)

    async def _run_publish(self, key: str, channel: str, payloads: list[bytes],
                           *after: bytes) -> list[Any]:
        """The publish script once per chunk, then the ``after`` commands, in one round
        trip on the publishing lane; their replies (the scripts' first)."""
        if self._lane is None:
            self._lane = self.lane()
        commands = [
            pack("EVALSHA", _PUBLISH_SHA, 1, key, self.maxlen, channel,
                 _msgpack_array_header(len(chunk)) if channel else b"", *chunk)
            for chunk in (payloads[i : i + _CHUNK] for i in range(0, len(payloads), _CHUNK))
        ]
        replies = await self._lane.call(b"".join([*commands, *after]),
                                        len(commands) + len(after))
        # NOSCRIPT fails every chunk alike (one script), before anything ran.
        raise_first(replies)
        return replies

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
        try:
            groups, length = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            raise BusError(f"XINFO GROUPS {key} failed: {exc}") from exc
        if isinstance(groups, ResponseError) and "no such key" in str(groups).lower():
            return []
        if isinstance(groups, Exception):
            raise BusError(f"XINFO GROUPS {key} failed: {groups}")
        out = []
        for info in groups:
            name = _as_bytes(info["name"]).decode()
            if group is not None and name != group:
                continue
            lag = info.get("lag")
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
                entries = cast("list[_Entry]", reply or [])
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


class RedisStreamsSubscription:
    """A consumer of a RedisStreamsBus group on one or more topics.

    The group is created on first use (at the oldest retained entry), since
    ``subscribe`` is not a coroutine; ``ensure_groups`` does it eagerly.
    """

    def __init__(
        self, bus: RedisStreamsBus, topics: Sequence[str], group: str, consumer: str
    ) -> None:
        if not topics:
            raise ValueError("subscribe needs at least one topic")
        self._bus = bus
        self.group = group
        self.consumer = consumer
        ns = bus.namespace
        self._keys = [ns.key(t) for t in topics]
        self._topics = {ns.key(t).encode(): t for t in topics}
        self._ready = False
        self._closed = False
        self._next_auto_claim = 0.0
        self._lane = bus.lane()
        self._reads: dict[tuple[int, int | None], bytes] = {}
        self._deferred: dict[str, list[bytes]] = {}
        """Entry ids acknowledged with ``defer_ack``, sent with the next round trip."""
        self._history: dict[str, bytes] | None = dict.fromkeys(self._keys, b"0")
        """While set, reads return this consumer's own pending entries (after each
        stream's cursor) before any new one: at start, and after a failed read, whose
        entries Redis may have delivered with the reply lost. Taking them up again
        first keeps each stream in its order; a later claim would hand them out after
        newer entries."""

    async def ensure_groups(self) -> None:
        """Create the group on every topic (and the stream) where it is missing."""
        command = b"".join(
            pack("XGROUP", "CREATE", key, self.group, "0", "MKSTREAM") for key in self._keys
        )
        try:
            results = await self._lane.call(command, len(self._keys))
        except RedisError as exc:
            raise BusError(f"creating group {self.group} on {self._keys} failed: {exc}") from exc
        for key, result in zip(self._keys, results, strict=True):
            if isinstance(result, Exception) and not str(result).startswith("BUSYGROUP"):
                raise BusError(f"creating group {self.group} on {key} failed: {result}")
        self._ready = True

    async def read(self, max_events: int = 1000, timeout: float = 1.0) -> list[Batch]:
        if self._closed or self._bus.closed:
            return []
        if not self._ready:
            await self.ensure_groups()
        if self._bus.claim_idle is not None:
            batches = await self._auto_claim(self._bus.claim_idle, max_events)
            if batches:
                return batches
        block: int | None = max(1, int(timeout * 1000)) if timeout > 0 else None
        if block is not None and self._bus._max_block_ms is not None:
            block = min(block, self._bus._max_block_ms)
        if self._history is not None:
            # Never blocks: this consumer's pending entries are there or not.
            batches = await self._read_once(max_events, None, self._history)
            if batches or self._history is not None:
                return batches
        return await self._read_once(max_events, block, None)

    async def _read_once(self, max_events: int, block: int | None,
                         history: dict[str, bytes] | None) -> list[Batch]:
        command = self._read_command(max_events, block, history)
        deferred = self._deferred
        acks = self._pack_acks(deferred)
        try:
            replies = await self._lane.call(
                acks + command, len(deferred) + 1,
                timeout=(block or 0) / 1000 + self._lane.timeout, retry=False,
            )
        except RedisError as exc:
            # The deferred acks stay: XACK is idempotent, the next read sends them again.
            self._history = dict.fromkeys(self._keys, b"0")
            raise BusError(f"XREADGROUP {self.group} on {self._keys} failed: {exc}") from exc
        if deferred:
            self._deferred = {}
            self._check_acks(deferred, replies[:-1])
        response = replies[-1]
        if isinstance(response, ResponseError):
            if _is_lost_group(response):
                await self._recreate_groups(response)
                return []
            raise BusError(f"XREADGROUP {self.group} on {self._keys} failed: {response}")
        streams = list(_streams(response))
        deliveries: dict[bytes, int] = {}
        if history is not None:
            if not _advance(history, streams):
                self._history = None  # caught up: new entries from now on
            else:
                # An entry that took its consumer down every time must still end up
                # dead-lettered: its delivery count (history reads add to it) decides.
                deliveries = await self._deliveries(streams)
        return await self._batches(streams, deliveries)

    async def _deliveries(self, streams: list[tuple[bytes, list[_Entry]]]) -> dict[bytes, int]:
        """How often each entry read was delivered to this consumer (``XPENDING``)."""
        queries = [(key, entries) for key, entries in streams if entries]
        command = b"".join(
            pack("XPENDING", key, self.group, entries[0][0], entries[-1][0], len(entries),
                 self.consumer) for key, entries in queries)
        try:
            replies = await self._lane.call(command, len(queries))
        except RedisError as exc:
            raise BusError(f"XPENDING {self.group} on {self._keys} failed: {exc}") from exc
        found: dict[bytes, int] = {}
        for reply in replies:
            if not isinstance(reply, Exception):
                found.update((bytes(row[0]), int(row[3])) for row in reply)
        return found

    def _read_command(self, max_events: int, block: int | None,
                      history: dict[str, bytes] | None) -> bytes:
        """XREADGROUP of new entries (packed once per shape), or of the pending ones
        after each stream's cursor in ``history``."""
        if history is not None:
            return pack("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", max_events,
                        "STREAMS", *self._keys, *history.values())
        command = self._reads.get((max_events, block))
        if command is None:
            blocking = ("BLOCK", block) if block is not None else ()
            command = self._reads[max_events, block] = pack(
                "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", max_events,
                *blocking, "STREAMS", *self._keys, *(">" for _ in self._keys),
            )
        return command

    async def _auto_claim(self, idle: float, max_events: int) -> list[Batch]:
        now = time.monotonic()
        if now < self._next_auto_claim:
            return []
        self._next_auto_claim = now + idle / 2
        return await self.claim(idle, max_events)

    async def _recreate_groups(self, exc: Exception) -> None:
        _log.warning(
            "consumer group lost, creating it again",
            group=self.group, streams=self._keys, error=str(exc),
        )
        await self.ensure_groups()
        self._history = None  # a new group has nothing pending

    async def _batches(
        self, streams: Iterable[tuple[bytes, list[_Entry]]], deliveries: dict[bytes, int]
    ) -> list[Batch]:
        """Decode entries into batches; park what cannot be handed out.

        Args:
            streams: (stream key, entries) pairs as Redis returned them.
            deliveries: times each entry was delivered, when known (claims).
        """
        batches: list[Batch] = []
        parked: list[tuple[bytes, bytes, bytes, str]] = []  # key, id, bytes, reason
        gone: dict[bytes, list[bytes]] = {}
        limit = self._bus.max_deliveries
        for key, entries in streams:
            events: list[AnyEvent] = []
            ids: list[bytes] = []
            for entry_id, fields in entries:
                if fields is None:
                    # Trimmed while pending (Redis 6.2 hands these out as nil).
                    gone.setdefault(key, []).append(entry_id)
                    continue
                data = _payload(fields)
                if data is None:
                    parked.append((key, entry_id, b"", f"no {FIELD.decode()!r} field"))
                    continue
                times = deliveries.get(entry_id, 1)
                if times > limit:
                    reason = f"delivered {times} times (max_deliveries={limit})"
                    parked.append((key, entry_id, data, reason))
                    continue
                try:
                    events.append(decode(data))
                except DecodeError as exc:
                    parked.append((key, entry_id, data, f"undecodable: {exc.reason}"))
                    continue
                ids.append(entry_id)
            if events:
                stream = key.decode()
                batches.append(Batch(self._topics[key], events, (stream, ids)))
        if parked or gone:
            await self._park(parked, gone)
        return batches

    async def _park(
        self, parked: list[tuple[bytes, bytes, bytes, str]], gone: dict[bytes, list[bytes]]
    ) -> None:
        """Dead-letter ``parked`` entries and acknowledge them with ``gone``, in one
        round trip."""
        bus = self._bus
        acks: dict[bytes, list[bytes]] = {k: list(v) for k, v in gone.items()}
        pipe = bus.client.pipeline(transaction=False)
        for key, entry_id, data, reason in parked:
            topic = self._topics[key]
            pipe.xadd(
                bus.namespace.dead_letter(topic),
                {
                    FIELD: data, b"reason": reason, b"stream": key, b"id": entry_id,
                    b"group": self.group, b"consumer": self.consumer,
                },
                maxlen=bus.maxlen,
                approximate=True,
            )
            acks.setdefault(key, []).append(entry_id)
        for key, ids in acks.items():
            pipe.xack(key, self.group, *ids)
        try:
            await pipe.execute()
        except RedisError as exc:
            # Left pending: a later claim parks them again.
            raise BusError(f"dead-lettering {len(parked)} entries failed: {exc}") from exc
        for key, entry_id, _, reason in parked:
            topic = self._topics[key]
            bus.dead_lettered[topic] = bus.dead_lettered.get(topic, 0) + 1
            _log.warning(
                "entry dead-lettered", stream=key.decode(), id=entry_id.decode(),
                group=self.group, reason=reason,
            )

    def defer_ack(self, batches: Sequence[Batch]) -> None:
        """Acknowledge ``batches`` in the same round trip as the next ``read`` (or with
        ``ack`` or ``close``): one round trip per consume cycle instead of two. A crash
        before then leaves them pending, to be delivered again, which consumers absorb
        (they are idempotent on event ids)."""
        for batch in batches:
            stream, ids = cast(_Token, batch.token)
            self._deferred.setdefault(stream, []).extend(ids)

    def _pack_acks(self, by_stream: dict[str, list[bytes]]) -> bytes:
        return b"".join(
            pack("XACK", stream, self.group, *ids) for stream, ids in by_stream.items()
        )

    def _check_acks(self, by_stream: dict[str, list[bytes]], replies: list[Any]) -> None:
        """Report XACKs Redis refused (the group is gone: nothing is pending any more)."""
        for stream, reply in zip(by_stream, replies, strict=True):
            if isinstance(reply, ResponseError):
                _log.warning("acknowledgement refused", stream=stream, group=self.group,
                             error=str(reply))

    async def ack(self, batches: Sequence[Batch]) -> None:
        self.defer_ack(batches)
        by_stream = self._deferred
        if not by_stream:
            return
        try:
            replies = await self._lane.call(self._pack_acks(by_stream), len(by_stream))
        except RedisError as exc:
            raise BusError(f"XACK {self.group} on {list(by_stream)} failed: {exc}") from exc
        self._deferred = {}
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise BusError(f"XACK {self.group} on {list(by_stream)} failed: {reply}")

    async def claim(self, min_idle: float, max_events: int = 1000) -> list[Batch]:
        """Take over entries pending for ``min_idle`` s, this consumer's own included
        (it may be the same consumer restarted); dead-letter those delivered more than
        ``max_deliveries`` times."""
        if self._closed or self._bus.closed:
            return []
        if not self._ready:
            await self.ensure_groups()
        idle_ms = int(min_idle * 1000)
        pipe = self._bus.client.pipeline(transaction=False)
        for key in self._keys:
            # XAUTOCLAIM does not report delivery counts: XPENDING, just before it in
            # the same round trip, does, for the same oldest idle entries.
            pipe.xpending_range(key, self.group, "-", "+", max_events, idle=idle_ms)
            pipe.xautoclaim(key, self.group, self.consumer, idle_ms, "0-0", count=max_events)
        try:
            results = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            raise BusError(f"claim in {self.group} on {self._keys} failed: {exc}") from exc
        streams: list[tuple[bytes, list[_Entry]]] = []
        deliveries: dict[bytes, int] = {}
        lost: ResponseError | None = None
        for i, key in enumerate(self._keys):
            pending, claimed = results[2 * i], results[2 * i + 1]
            errors = [r for r in (pending, claimed) if isinstance(r, Exception)]
            if errors:
                error = errors[0]
                if not (isinstance(error, ResponseError) and _is_lost_group(error)):
                    raise BusError(f"claim in {self.group} on {key} failed: {error}")
                lost = error  # a new group has nothing to claim
                continue
            for info in pending:
                # Counted before the claim, which is one more delivery.
                deliveries[info["message_id"]] = int(info["times_delivered"]) + 1
            if claimed[1]:
                streams.append((key.encode(), claimed[1]))
            if claimed[2:] and claimed[2]:
                # Redis dropped them from the group: trimmed by MAXLEN before anyone
                # acknowledged them, so those events are lost to this group.
                _log.warning(
                    "pending entries trimmed before acknowledgement",
                    stream=key, group=self.group, count=len(claimed[2]),
                )
        if lost is not None:
            await self._recreate_groups(lost)
        return await self._batches(streams, deliveries)

    async def close(self) -> None:
        """Stop reading. The consumer stays in the group: deleting it would drop its
        pending entries, which others must be able to claim."""
        self._closed = True
        if self._deferred and not self._bus.closed:
            try:
                await self.ack(())
            except BusError as exc:
                _log.warning("acknowledgements not sent before closing; the entries will "
                             "be delivered again", group=self.group, error=str(exc))
        await self._bus.release(self._lane)
