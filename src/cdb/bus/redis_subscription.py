"""Reading a Redis Streams bus: one consumer of a group, its reads, acks and claims.

``read`` is one ``XREADGROUP`` over all the subscription's streams and ``ack`` one
pipelined ``XACK`` per stream, both on the subscription's own ``Lane``. What a consumer
cannot use is parked, never fatal: an entry that does not decode, or one delivered
more than ``max_deliveries`` times, is copied to ``namespace.dead_letter(stream)``
(fields ``e`` with the original bytes, ``reason``, ``stream``, ``id``, ``group``,
``consumer``) and acknowledged. A group that vanished (Redis restarted empty,
``NOGROUP``) is created again and reading goes on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias, cast

import structlog
from redis.exceptions import RedisError, ResponseError

from cdb.bus.base import Batch
from cdb.bus.lane import pack
from cdb.bus.redis_publish import FIELD
from cdb.errors import BusError, DecodeError
from cdb.events import AnyEvent, decode

if TYPE_CHECKING:
    from cdb.bus.redis_streams import RedisStreamsBus

_log = structlog.get_logger("cdb.bus.redis_streams")

# Errors after which the group must be created again: the key or the group is gone
# (FLUSHALL, a restart without persistence), or it went away under a blocked read.
_LOST_GROUP: Final = ("NOGROUP", "UNBLOCKED")

_Fields: TypeAlias = "dict[bytes, bytes] | list[bytes] | None"
"""An entry's fields: a dict from redis-py's parsing, a flat list in a raw reply."""
StreamEntry = tuple[bytes, _Fields]
_Token = tuple[str, list[bytes]]


def _streams(response: Any) -> Iterable[tuple[bytes, list[StreamEntry]]]:
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


def _advance(history: dict[str, bytes], streams: list[tuple[bytes, list[StreamEntry]]]) -> bool:
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
        if block is not None and self._bus.max_block_ms is not None:
            block = min(block, self._bus.max_block_ms)
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

    async def _deliveries(self, streams: list[tuple[bytes, list[StreamEntry]]]) -> dict[bytes, int]:
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
        self, streams: Iterable[tuple[bytes, list[StreamEntry]]], deliveries: dict[bytes, int]
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
        streams: list[tuple[bytes, list[StreamEntry]]] = []
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
