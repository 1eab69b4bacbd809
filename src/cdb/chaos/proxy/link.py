"""One proxied connection: client <-> proxy <-> upstream, the toxics applied on the way."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from typing import TYPE_CHECKING, Final

from cdb.chaos.proxy.toxics import Stream, Toxic

if TYPE_CHECKING:
    from cdb.chaos.proxy.listener import Proxy

_CHUNK: Final = 32 * 1024
QUEUE_CHUNKS: Final = 8
"""Chunks in flight per direction of a connection (256 KiB): the bound of its memory."""


class Link:
    """One proxied connection: client <-> proxy <-> upstream."""

    def __init__(self, proxy: Proxy, client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.closed = asyncio.Event()
        self._decisions: dict[int, bool] = {}
        self._sent: dict[str, int] = {"upstream": 0, "downstream": 0}
        self._timers: dict[int, asyncio.Task[None]] = {}
        self._half_closed: set[str] = set()
        self.tasks: list[asyncio.Task[None]] = []

    def affected(self, toxic: Toxic) -> bool:
        """Whether ``toxic`` acts on this connection (decided once, by toxicity)."""
        key = id(toxic)
        decided = self._decisions.get(key)
        if decided is None:
            decided = self._decisions[key] = self.proxy.rng.random() < toxic.toxicity
            if decided:
                toxic.connections += 1
                if toxic.type in ("timeout", "reset_peer"):
                    self._timers[key] = asyncio.create_task(self._timer(toxic),
                                                            name="proxy.timer")
        return decided

    async def _timer(self, toxic: Toxic) -> None:
        delay = toxic.attr("timeout") / 1000
        if toxic.type == "timeout" and delay <= 0:
            return  # held until removed, never closed
        removed = asyncio.ensure_future(toxic.removed.wait())
        try:
            done, _ = await asyncio.wait([removed], timeout=delay)
        finally:
            removed.cancel()
        if not done:
            self.close(reset=toxic.type == "reset_peer")

    def toxics(self, stream: Stream) -> list[Toxic]:
        return [t for t in list(self.proxy.toxics.values())
                if t.stream == stream and self.affected(t)]

    def start(self) -> None:
        for stream, (reader, _), (_, writer) in (
            ("upstream", self.client, self.upstream), ("downstream", self.upstream, self.client),
        ):
            queue: asyncio.Queue[tuple[bytes, float] | None] = asyncio.Queue(QUEUE_CHUNKS)
            self.tasks.append(asyncio.create_task(self._read(reader, queue), name="proxy.read"))
            self.tasks.append(asyncio.create_task(self._write(stream, queue, writer),  # type: ignore[arg-type]
                                                  name="proxy.write"))
        for stream in ("upstream", "downstream"):
            self.toxics(stream)  # type: ignore[arg-type]  # start timers of toxics present

    async def _read(self, reader: asyncio.StreamReader,
                    queue: asyncio.Queue[tuple[bytes, float] | None]) -> None:
        try:
            while data := await reader.read(_CHUNK):
                await queue.put((data, time.monotonic()))
        except (OSError, asyncio.IncompleteReadError):
            pass
        await queue.put(None)

    async def _write(self, stream: Stream, queue: asyncio.Queue[tuple[bytes, float] | None],
                     writer: asyncio.StreamWriter) -> None:
        try:
            while (item := await queue.get()) is not None:
                chunk, arrived = item
                data = await self._through(stream, chunk, arrived)
                if data is None:
                    self.close()
                    return
                writer.write(data)
                await writer.drain()
                if self._over_limit(stream, len(data)):
                    self.close()
                    return
            # The sender closed its side: pass the close on (slowly, with slow_close)
            # and keep the other direction going until it closes too.
            for toxic in self.toxics(stream):
                if toxic.type == "slow_close":
                    toxic.chunks += 1
                    await asyncio.sleep(toxic.attr("delay") / 1000)
            if writer.can_write_eof():
                writer.write_eof()
            self._half_closed.add(stream)
            if len(self._half_closed) == 2:
                self.close()
        except (OSError, ConnectionError):
            self.close()

    async def _through(self, stream: Stream, data: bytes, arrived: float) -> bytes | None:
        """Apply the toxics of ``stream`` to one chunk; None when the link closed."""
        for toxic in self.toxics(stream):
            kind = toxic.type
            if kind == "latency":
                jitter = toxic.attr("jitter")
                delay = toxic.attr("latency") + (self.proxy.rng.uniform(-jitter, jitter)
                                                 if jitter else 0.0)
                wait = arrived + max(delay, 0.0) / 1000 - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            elif kind == "bandwidth":
                rate = toxic.attr("rate") * 1000
                if rate > 0:
                    await asyncio.sleep(len(data) / rate)
            elif kind == "timeout":
                toxic.chunks += 1
                await self._held(toxic)
                if self.closed.is_set():
                    return None
                continue
            elif kind == "limit_data":
                left = int(toxic.attr("bytes")) - self._sent[stream]
                if left <= 0:
                    toxic.chunks += 1
                    return None
                if len(data) > left:
                    data = data[:left]
            else:
                continue
            toxic.chunks += 1
            toxic.bytes += len(data)
        return data

    async def _held(self, toxic: Toxic) -> None:
        removed = asyncio.ensure_future(toxic.removed.wait())
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait([removed, closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            removed.cancel()
            closed.cancel()

    def _over_limit(self, stream: Stream, n: int) -> bool:
        self._sent[stream] += n
        return any(t.type == "limit_data" and self._sent[stream] >= t.attr("bytes")
                   for t in self.toxics(stream))

    def close(self, *, reset: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for _, writer in (self.client, self.upstream):
            if reset:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                writer.transport.abort()
            else:
                writer.close()
        for task in [*self.tasks, *self._timers.values()]:
            if task is not asyncio.current_task():
                task.cancel()
        self.proxy.links.discard(self)
