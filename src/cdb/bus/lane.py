"""A Redis connection held for the hot path: packed commands in, raw replies out.

redis-py's asyncio client runs about 300 Python calls per command around the few
that matter: a pool checkout and release under a lock with observability hooks, a
``Retry`` wrapper, an ``asyncio.wait_for`` task per write when a socket timeout is
set, a timeout context per reply, the response callbacks that turn an
``XREADGROUP`` reply into a dict per entry, and ``pack_command``, which walks every
argument several times (1.2 ms for a 1000-id ``XACK``). Measured on this project's
consume cycle (``XREADGROUP`` + ``XACK``), that is ~3/4 of the CPU a service spends
per cycle, and at 1,000 trades/s each hop of the tick-to-order path pays it.

A ``Lane`` keeps redis-py for everything that is hard to get right (connecting,
``AUTH``/``SELECT``/``HELLO``, Sentinel's master lookup through the pool's own
connection class, TLS, hiredis parsing, error classes) and skips the rest: it owns
one connection outside the pool, writes commands packed in one pass, reads the
replies under one deadline, and leaves decoding to the caller. Any failure closes
the connection (a reply left unread must never be taken for the next command's);
the next call connects again, to wherever the Sentinels say the master now is.
Errors Redis answers (``NOGROUP``, ``NOSCRIPT``) come back in the reply list, so one
failed command of a pipeline does not lose the others' replies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = bytes | str | int


def pack(*args: Arg) -> bytes:
    """One RESP command (an array of bulk strings), built in a single pass."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        if type(arg) is not bytes:
            arg = str(arg).encode()
        append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


class Lane:
    """One connection of ``client``'s kind, held for one caller's commands.

    Args:
        client: the redis-py client whose connection settings (and Sentinel pool) to use.
        timeout: how long one call may wait for all its replies when the caller gives
            no deadline of its own (s); the client's ``socket_timeout`` by default.
    """

    def __init__(self, client: aioredis.Redis, timeout: float | None = None) -> None:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        self.timeout = timeout or kwargs.get("socket_timeout") or 10.0
        # Without a socket timeout redis-py writes without a task per write; the
        # deadline of ``call`` bounds the whole exchange instead.
        kwargs["socket_timeout"] = None
        kwargs.pop("retry", None)
        self._conn: AbstractConnection = pool.connection_class(**kwargs)
        self._pool = pool
        self._lock = asyncio.Lock()

    async def call(self, packed: bytes, replies: int = 1, *, timeout: float | None = None,
                   retry: bool = True) -> list[Any]:
        """Send ``packed`` (``replies`` commands) and return their replies in order; an
        error reply is returned as its ``ResponseError``, not raised.

        Args:
            retry: retry once on a new connection when a held one turns out dead.
                Reads pass False: a read whose reply was lost may have been delivered,
                and the caller must take those entries up before newer ones.

        Raises:
            RedisError: the connection failed or no reply came within the deadline
                (``timeout``, else the lane's); the connection is closed.
        """
        async with self._lock:
            # A connection that sat open may have been closed by the server meanwhile
            # (restart, idle timeout): that failure is retried once on a new one, as
            # redis-py's own Retry would. A dropped command may have run: an XADD then
            # repeats, which consumers absorb (idempotent on event ids); reads are not
            # retried here (``retry``).
            stale = self._conn.is_connected
            try:
                return await self._call(packed, replies, timeout)
            except RedisConnectionError:
                if not (stale and retry):
                    raise
            return await self._call(packed, replies, timeout)

    async def _call(self, packed: bytes, replies: int, timeout: float | None) -> list[Any]:
        conn = self._conn
        deadline = timeout or self.timeout
        try:
            # One deadline for all of it: connecting (AUTH/HELLO replies), writing to a
            # full socket and every reply; a paused Redis must not hold a caller forever.
            async with asyncio.timeout(deadline):
                if self._moved(conn):
                    await conn.disconnect(nowait=True)
                if not conn.is_connected:
                    await conn.connect()  # type: ignore[no-untyped-call]
                await conn.send_packed_command(packed, check_health=False)
                out: list[Any] = []
                for _ in range(replies):
                    try:
                        out.append(await conn.read_response(disconnect_on_error=False))
                    except ResponseError as exc:
                        out.append(exc)
            return out
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise RedisTimeoutError(f"no reply from Redis within {deadline} s") from None
        except (RedisError, OSError) as exc:
            await conn.disconnect(nowait=True)
            if isinstance(exc, RedisError):
                raise
            raise RedisConnectionError(str(exc)) from exc
        except BaseException:
            # Cancelled half-way: what Redis still sends belongs to nobody.
            await conn.disconnect(nowait=True)
            raise

    def _moved(self, conn: AbstractConnection) -> bool:
        """The Sentinels named another master since this connection was opened."""
        master = getattr(self._pool, "master_address", None)
        return (master is not None and conn.is_connected
                and (getattr(conn, "host", None), getattr(conn, "port", None)) != master)

    async def close(self) -> None:
        await self._conn.disconnect(nowait=True)


def raise_first(replies: Sequence[Any]) -> None:
    """Raise the first error reply of a pipeline, if any."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
