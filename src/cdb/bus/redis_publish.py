"""How the Redis Streams bus writes a batch: the entry format, the publish script (one
round trip per batch, with its pub/sub notification) and the notification codec."""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

from cdb.bus.lane import pack
from cdb.errors import DecodeError
from cdb.events import AnyEvent

FIELD: Final = b"e"
"""The entry field that holds the encoded event."""

_notification_decoder: msgspec.msgpack.Decoder[list[AnyEvent]] = msgspec.msgpack.Decoder(
    list[AnyEvent]
)

# Publishing runs this script once per chunk of events, all chunks in one round trip.
# Pipelining one XADD per event costs redis-py far more to pack and parse per command
# than the whole script costs Redis (benchmarks/README.md); the chunk bounds how long
# one script holds the server. KEYS[1] stream; ARGV: maxlen, channel ('' for none), array
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

LOAD_SCRIPT: Final = pack("SCRIPT", "LOAD", _PUBLISH_LUA)
"""Loads the publish script (after Redis answered ``NOSCRIPT``)."""


def publish_commands(key: str, maxlen: int, channel: str, payloads: list[bytes]) -> list[bytes]:
    """The publish script once per chunk of ``payloads``, appending them to ``key`` and
    notifying ``channel`` ('' for none)."""
    return [
        pack("EVALSHA", _PUBLISH_SHA, 1, key, maxlen, channel,
             _msgpack_array_header(len(chunk)) if channel else b"", *chunk)
        for chunk in (payloads[i : i + _CHUNK] for i in range(0, len(payloads), _CHUNK))
    ]


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
