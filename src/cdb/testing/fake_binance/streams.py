"""The fake's trade streams: connections, subscriptions, and what each trade sends.

``/ws/<symbol>@trade`` (raw), ``/stream?streams=a@trade/b@trade`` (combined), the
``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS`` methods, the 24 h disconnect, and
the websocket faults (skip, duplicate, reorder, refuse, drop). Each connection queues at
most ``WS_QUEUE`` messages: a client that does not read is disconnected (1008), as
Binance drops slow consumers, rather than growing the fake's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec
from starlette.websockets import WebSocket

from cdb.events import Trade
from cdb.testing.fake_binance.records import f8

if TYPE_CHECKING:
    from cdb.testing.fake_binance.server import FakeBinance

WS_QUEUE: Final = 10_000
"""Messages queued per stream connection before a client that does not read is dropped."""
_MS_NS: Final = 1_000_000
_json = msgspec.json.Encoder()


class WsTrade(msgspec.Struct, frozen=True):
    """The trade stream payload, fields in Binance's order (and Binance's names)."""

    e: str
    E: int
    s: str
    t: int
    p: str
    q: str
    T: int
    m: bool
    M: bool


@dataclass(eq=False)
class WsConn:
    """One stream connection: its subscriptions and its bounded send queue."""

    ws: WebSocket
    streams: set[str]
    combined: bool
    opened: float
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(WS_QUEUE))
    close_code: int | None = None
    closing: asyncio.Event = field(default_factory=asyncio.Event)


class Streams:
    """Every stream connection of one fake, and what each trade sends them."""

    def __init__(self, fake: FakeBinance) -> None:
        self._fake = fake
        self.conns: set[WsConn] = set()
        self._held: Trade | None = None

    def drop(self, code: int = 1011) -> int:
        """Close every stream connection now (``code`` 1006 is sent as 1011); how many."""
        conns = list(self.conns)
        for conn in conns:
            self.close(conn, code)
        return len(conns)

    def close(self, conn: WsConn, code: int) -> None:
        """Close ``conn`` with ``code`` (the codes a peer may not send become 1011)."""
        conn.close_code = code if code not in (1005, 1006, 1015) else 1011
        conn.closing.set()

    def filter(self, trade: Trade) -> list[Trade]:
        """What the stream sends for one trade, after websocket faults."""
        if self._fake.faults.take(("ws_skip", "ws_silence")) is not None:
            return []
        if self._fake.faults.take(("ws_duplicate",)) is not None:
            return [trade, trade]
        if self._held is not None:
            held, self._held = self._held, None
            return [trade, held]
        if self._fake.faults.take(("ws_reorder",)) is not None:
            self._held = trade
            return []
        return [trade]

    def broadcast(self, trade: Trade) -> None:
        """Send ``trade`` to every connection subscribed to its stream."""
        stream = f"{trade.symbol.lower()}@trade"
        t_ms = trade.ts // _MS_NS
        data = _json.encode(WsTrade(
            e="trade", E=max(t_ms, self._fake.server_ms()), s=trade.symbol, t=trade.trade_id,
            p=f8(trade.price_e8), q=f8(trade.qty_e8), T=t_ms, m=trade.buyer_maker, M=True,
        )).decode()
        combined = f'{{"stream":"{stream}","data":{data}}}'
        for conn in list(self.conns):
            if stream in conn.streams and not conn.closing.is_set():
                self.send(conn, combined if conn.combined else data)

    def send(self, conn: WsConn, message: str) -> None:
        """Queue ``message``; a connection whose queue is full is dropped (1008)."""
        try:
            conn.queue.put_nowait(message)
        except asyncio.QueueFull:
            if not conn.closing.is_set():
                self._fake.stats.ws_slow_dropped += 1
                self.close(conn, 1008)

    async def serve(self, ws: WebSocket) -> None:
        """The websocket route: ``/ws/<streams>`` (raw) and ``/stream?streams=`` (combined)."""
        path = ws.url.path
        combined = path == "/stream"
        raw = ws.query_params.get("streams", "") if combined else path[len("/ws"):].strip("/")
        streams = {s for s in raw.split("/") if s}
        if self._fake.faults.take(("ws_refuse",)) is not None:
            await ws.close(code=1013)
            return
        await ws.accept()
        conn = WsConn(ws=ws, streams=streams, combined=combined, opened=time.monotonic())
        self.conns.add(conn)
        self._fake.stats.ws_connects += 1
        self._fake.stats.ws_open = len(self.conns)
        tasks = [
            asyncio.create_task(self._send_loop(conn), name="fake_binance.ws_send"),
            asyncio.create_task(self._receive_loop(conn), name="fake_binance.ws_receive"),
            asyncio.create_task(conn.closing.wait(), name="fake_binance.ws_closing"),
        ]
        try:
            done, _ = await asyncio.wait(
                tasks, timeout=self._fake.ws_max_lifetime_s, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:  # the 24 h disconnect
                conn.close_code = 1001
            if tasks[1] not in done:
                with contextlib.suppress(Exception):
                    await ws.close(code=conn.close_code or 1000)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.conns.discard(conn)
            self._fake.stats.ws_open = len(self.conns)

    async def _send_loop(self, conn: WsConn) -> None:
        while True:
            message = await conn.queue.get()
            await conn.ws.send_text(message)
            self._fake.stats.ws_messages += 1

    async def _receive_loop(self, conn: WsConn) -> None:
        while True:
            message = await conn.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                continue
            try:
                request = msgspec.json.decode(text, type=dict[str, Any])
                method, params, rid = request["method"], request.get("params", []), request["id"]
            except (msgspec.DecodeError, KeyError, TypeError):
                self.send(conn, '{"error":{"code":2,"msg":"Invalid request"},"id":null}')
                continue
            result: object = None
            if method == "SUBSCRIBE":
                conn.streams.update(params)
            elif method == "UNSUBSCRIBE":
                conn.streams.difference_update(params)
            elif method == "LIST_SUBSCRIPTIONS":
                result = sorted(conn.streams)
            else:
                self.send(conn, _json.encode(
                    {"error": {"code": 1, "msg": f"Unknown method {str(method)[:50]}"},
                     "id": rid}).decode())
                continue
            self.send(conn, _json.encode({"result": result, "id": rid}).decode())
