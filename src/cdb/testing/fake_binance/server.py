"""The fake Binance's server: REST and trade streams on one local port, and a control API.

Starlette on uvicorn serves both faces, so one URL (``--exchange-url``) points a REST
client and a stream client at it. The server does what sits in front of Binance's
matching engine: weight accounting per fixed window (``X-MBX-USED-WEIGHT-1M``), 429 with
``Retry-After`` over the limit and a 418 ban for a client that keeps going, order-rate
limits (``X-MBX-ORDER-COUNT-10S``, -1015), API-key and HMAC-SHA256 signature checks
(-2014/-2015, -1022), ``timestamp``/``recvWindow`` (-1021), and the injected faults;
the engine (``exchange.Exchange``) answers the rest.

The control API under ``/_fake`` lets a process that did not start the fake drive it:
``POST/GET/DELETE /_fake/faults``, ``GET /_fake/ledger``, ``GET /_fake/stats``,
``POST /_fake/trades``, ``POST /_fake/ws/drop``. It listens on loopback unless told
otherwise, takes ``Authorization: Bearer <control_token>`` when a token is configured,
refuses bodies over ``_MAX_BODY`` bytes and numbers that are not finite or out of
range. Each stream connection queues at most ``_WS_QUEUE`` messages: a client that
does not read is disconnected (1008), as Binance drops slow consumers, rather than
growing the fake's memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import itertools
import math
import os
import re
import socket
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from cdb.errors import LifecycleError
from cdb.events import Trade, parse_e8
from cdb.testing.fake_binance.exchange import (
    ApiError,
    Exchange,
    FakeFill,
    FakeOrder,
    SymbolInfo,
    f8,
)
from cdb.testing.fake_binance.faults import Fault, FaultBook, FaultState

State = Literal["created", "running", "stopping", "stopped"]
_MS_NS: Final = 1_000_000
_CONTROL: Final = "/_fake"
_WS_QUEUE: Final = 10_000
"""Messages queued per stream connection before a client that does not read is dropped."""
_MAX_BODY: Final = 1024 * 1024
_MAX_TRADES: Final = 10_000
_MAX_E8: Final = 2**63 - 1
_MAX_SECONDS: Final = 86_400.0 * 365
_SYMBOL: Final = re.compile(r"^[A-Z0-9]{1,20}$")
CONTROL_TOKEN_ENV: Final = "FAKE_BINANCE_CONTROL_TOKEN"  # noqa: S105 - a variable's name


def now_ms() -> int:
    """Wall time in ms (the fake's default server clock)."""
    return time.time_ns() // _MS_NS


class FakeStats(msgspec.Struct, kw_only=True):
    """Counters of the fake (``GET /_fake/stats``)."""

    requests: int = 0
    weight_used: int = 0
    """Weight in the current window."""
    max_weight_in_window: int = 0
    """Most weight counted in any one window so far."""
    rate_limited: int = 0
    """429 answers for going over the weight or order limit (not injected ones)."""
    banned: int = 0
    orders_placed: int = 0
    ws_connects: int = 0
    ws_open: int = 0
    ws_messages: int = 0
    ws_slow_dropped: int = 0
    """Stream connections closed because their queue was full (a client not reading)."""


class _WsTrade(msgspec.Struct, frozen=True):
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
class _WsConn:
    ws: WebSocket
    streams: set[str]
    combined: bool
    opened: float
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(_WS_QUEUE))
    close_code: int | None = None
    closing: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class _Endpoint:
    weight: int
    signed: bool
    handler: str
    order: bool = False


_ENDPOINTS: Final = {
    ("GET", "/api/v3/ping"): _Endpoint(1, False, "ping"),
    ("GET", "/api/v3/time"): _Endpoint(1, False, "time"),
    ("GET", "/api/v3/exchangeInfo"): _Endpoint(20, False, "exchange_info"),
    ("POST", "/api/v3/order"): _Endpoint(1, True, "new_order", order=True),
    ("GET", "/api/v3/order"): _Endpoint(4, True, "query_order"),
    ("DELETE", "/api/v3/order"): _Endpoint(1, True, "cancel_order"),
    ("GET", "/api/v3/openOrders"): _Endpoint(6, True, "open_orders"),
    ("GET", "/api/v3/account"): _Endpoint(20, True, "account"),
    ("GET", "/api/v3/myTrades"): _Endpoint(20, True, "my_trades"),
}
_REST_FAULTS: Final = ("rate_limit", "order_rate_limit", "ban", "server_error", "timeout",
                       "delay", "unknown_status", "reject")
_ORDER_FAULTS: Final = (*_REST_FAULTS, "partial_fill")
_json = msgspec.json.Encoder()


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the fake lives inside a test or a process
    that handles its own signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class FakeBinance:
    """A fake Binance spot exchange (REST and trade streams) on one local port.

    Args:
        symbols: names (``"BTCUSDT"``) or ``SymbolInfo``.
        host, port: where to listen; port 0 picks a free one.
        api_key, api_secret: the credentials signed requests must carry.
        balances: initial free balances by asset (decimal strings); by default 1000 of
            each base asset and a million of each quote asset.
        weight_limit, weight_window_s: request weight allowed per fixed window.
        order_limit, order_window_s: new orders allowed per window.
        ban_after: 429s for over-use within one window that earn a 418 ban.
        ban_s: how long such a ban lasts.
        commission_bps: fee of every fill (maker and taker).
        ws_max_lifetime_s: a stream connection is closed after this (Binance: 24 h).
        control_token: when set, the control API (``/_fake``) needs
            ``Authorization: Bearer <control_token>``.
        ws_ping_interval_s: server pings (Binance: 20 s); None disables.
        clock_ms: server time in ms (``skew_ms`` is added; tests move it for -1021).
    """

    def __init__(
        self, *, symbols: Iterable[str | SymbolInfo] = ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
        host: str = "127.0.0.1", port: int = 0, api_key: str = "fake-api-key",
        api_secret: str = "fake-api-secret",  # noqa: S107 - a fake's well-known test secret
        balances: dict[str, str] | None = None,
        weight_limit: int = 6000, weight_window_s: float = 60.0, order_limit: int = 100,
        order_window_s: float = 10.0, ban_after: int = 5, ban_s: float = 120.0,
        commission_bps: int = 10, ws_max_lifetime_s: float = 86_400.0,
        ws_ping_interval_s: float | None = 20.0, clock_ms: Callable[[], int] = now_ms,
        control_token: str | None = None,
    ) -> None:
        infos = [s if isinstance(s, SymbolInfo) else SymbolInfo.of(s) for s in symbols]
        self.host = host
        self.port = port
        self.api_key = api_key
        self.api_secret = api_secret
        self.weight_limit, self.weight_window_s = weight_limit, weight_window_s
        self.order_limit, self.order_window_s = order_limit, order_window_s
        self.ban_after, self.ban_s = ban_after, ban_s
        self.ws_max_lifetime_s = ws_max_lifetime_s
        self.ws_ping_interval_s = ws_ping_interval_s
        self.clock_ms = clock_ms
        self.control_token = control_token or None
        self.skew_ms = 0
        self.state: State = "created"

        self.exchange = Exchange(infos, balances=balances, commission_bps=commission_bps,
                                 now_ms=self._server_ms, rate_limits=self._rate_limits)
        self.faults = FaultBook()
        self.stats = FakeStats()
        self.order_arrivals: list[str] = []
        """``newClientOrderId`` of every order request received, whatever became of it."""
        self._trade_ids: dict[str, Iterator[int]] = {}
        self._conns: set[_WsConn] = set()
        self._held: Trade | None = None
        self._window = (-1, 0)  # (window index, weight used)
        self._violations = (-1, 0)
        self._banned_until = 0.0
        self._order_times: deque[float] = deque()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: _Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    # the ledger -------------------------------------------------------------------------

    @property
    def orders(self) -> dict[int, FakeOrder]:
        """Every order ever accepted, by venue order id."""
        return self.exchange.orders

    @property
    def fills(self) -> list[FakeFill]:
        """Every execution, in order."""
        return self.exchange.fills

    @property
    def order_requests(self) -> list[tuple[str, str]]:
        """``(newClientOrderId, outcome)`` of every order request that reached matching."""
        return self.exchange.order_requests

    def placed(self, client_order_id: str) -> list[FakeOrder]:
        """The orders accepted with ``client_order_id`` (more than one is a duplicate)."""
        return [o for o in self.orders.values() if o.client_order_id == client_order_id]

    def balance(self, asset: str) -> tuple[int, int]:
        """``(free, locked)`` of ``asset`` in e8."""
        free, locked = self.exchange.balances.get(asset, [0, 0])
        return free, locked

    # lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """REST base URL (``http://host:port``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """Stream base URL (``ws://host:port``)."""
        return f"ws://{self.host}:{self.port}"

    async def __aenter__(self) -> FakeBinance:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind and serve; returns when the server accepts connections."""
        if self.state != "created":
            raise LifecycleError(f"FakeBinance is {self.state}; make a new one")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._sock = sock
        config = uvicorn.Config(
            self.app(), log_level="warning", access_log=False, lifespan="off",
            ws="websockets-sansio", ws_ping_interval=self.ws_ping_interval_s,
            ws_ping_timeout=60.0, timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._serve_task = asyncio.create_task(
            self._server.serve(sockets=[sock]), name="fake_binance.serve"
        )
        while not self._server.started:
            if self._serve_task.done():
                await self._serve_task
                raise LifecycleError("FakeBinance server exited at start")
            await asyncio.sleep(0.005)
        self.state = "running"

    async def stop(self) -> None:
        """Close every connection, release held requests, stop serving."""
        if self.state in ("stopping", "stopped"):
            return
        self.state = "stopping"
        self._stopping.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self._conns):
            self._close_conn(conn, 1001)
        if self._server is not None and self._serve_task is not None:
            self._server.should_exit = True
            await self._serve_task
        if self._sock is not None:
            self._sock.close()
        self.state = "stopped"

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def app(self) -> Starlette:
        """The ASGI app (REST, streams and the control API)."""
        methods = ["GET", "POST", "DELETE", "PUT"]
        guard = self._guarded
        return Starlette(routes=[
            Route(f"{_CONTROL}/faults", guard(self._ctl_faults),
                  methods=["GET", "POST", "DELETE"]),
            Route(f"{_CONTROL}/ledger", guard(self._ctl_ledger), methods=["GET"]),
            Route(f"{_CONTROL}/stats", guard(self._ctl_stats), methods=["GET"]),
            Route(f"{_CONTROL}/trades", guard(self._ctl_trades), methods=["POST"]),
            Route(f"{_CONTROL}/ws/drop", guard(self._ctl_drop), methods=["POST"]),
            Route("/api/{rest:path}", self._rest, methods=methods),
            WebSocketRoute("/ws", self._ws),
            WebSocketRoute("/ws/{streams:path}", self._ws),
            WebSocketRoute("/stream", self._ws),
        ])

    # faults ----------------------------------------------------------------------------

    def inject(self, fault: Fault | None = None, /, **kwargs: Any) -> FaultState:
        """Add a fault (a ``Fault`` or its fields as keywords); returns its live state."""
        fault = fault if fault is not None else msgspec.convert(kwargs, Fault)
        state = self.faults.add(fault)
        if fault.kind == "ws_drop":  # acts at once, on the connections open now
            self.drop_streams(fault.status or 1011)
            state.fired, state.remaining = 1, 0
        return state

    def clear_faults(self) -> None:
        """Remove every live fault."""
        self.faults.clear()

    def _take(self, kinds: tuple[str, ...], method: str = "", path: str = "") -> Fault | None:
        return self.faults.take(kinds, method, path)

    # market data -----------------------------------------------------------------------

    async def publish(self, trades: Iterable[Trade]) -> None:
        """Trades print: prices move, resting orders fill, stream subscribers are told."""
        for trade in trades:
            self.exchange.match(trade)
            for out in self._ws_filter(trade):
                self._broadcast(out)
        await asyncio.sleep(0)

    def trade(self, symbol: str, price: str, qty: str = "0.01", trade_id: int | None = None,
              ts_ms: int | None = None, buyer_maker: bool = False) -> Trade:
        """A market trade for ``publish`` (ids count up per symbol from 1)."""
        if trade_id is None:
            trade_id = next(self._trade_ids.setdefault(symbol, itertools.count(1)))
        ts = (ts_ms if ts_ms is not None else self._server_ms()) * _MS_NS
        tid = f"binance:{symbol}:{trade_id}"
        return Trade(id=tid, ts=ts, correlation_id=tid, causation_id=tid, source="fake",
                     venue="binance", symbol=symbol, trade_id=trade_id,
                     price_e8=parse_e8(price), qty_e8=parse_e8(qty), buyer_maker=buyer_maker)

    async def feed(self, batches: Iterable[list[Trade]] | AsyncIterable[list[Trade]], *,
                   speed: float | None = 1.0) -> None:
        """Publish trades paced by their event time (``speed`` x real time; None: at once).

        Each trade prints when it is due, as on the real stream: a batch is only how the
        source hands trades over, never a burst of trades from the future.
        """
        anchor: tuple[float, int] | None = None
        async for batch in _aiter(batches):
            if not batch:
                continue
            if speed is None:
                await self.publish(batch)
                continue
            if anchor is None:
                anchor = (time.monotonic(), batch[0].ts)
            start = 0
            while start < len(batch):
                now = time.monotonic()
                due_ns = anchor[1] + int((now - anchor[0]) * speed * 1e9)
                end = start
                while end < len(batch) and batch[end].ts <= due_ns:
                    end += 1
                if end > start:
                    await self.publish(batch[start:end])
                    start = end
                    continue
                wait = anchor[0] + (batch[start].ts - anchor[1]) / 1e9 / speed - now
                await asyncio.sleep(max(wait, 0.001))

    def start_feed(self, batches: Iterable[list[Trade]] | AsyncIterable[list[Trade]], *,
                   speed: float | None = 1.0) -> asyncio.Task[None]:
        """``feed`` in a task the fake owns (cancelled when it stops)."""
        return self._spawn(self.feed(batches, speed=speed), "fake_binance.feed")

    def drop_streams(self, code: int = 1011) -> int:
        """Close every stream connection now (``code`` 1006 is sent as 1011); how many."""
        conns = list(self._conns)
        for conn in conns:
            self._close_conn(conn, code)
        return len(conns)

    def _close_conn(self, conn: _WsConn, code: int) -> None:
        conn.close_code = code if code not in (1005, 1006, 1015) else 1011
        conn.closing.set()

    def _ws_filter(self, trade: Trade) -> list[Trade]:
        """What the stream sends for one trade, after websocket faults."""
        if self._take(("ws_skip", "ws_silence")) is not None:
            return []
        if self._take(("ws_duplicate",)) is not None:
            return [trade, trade]
        if self._held is not None:
            held, self._held = self._held, None
            return [trade, held]
        if self._take(("ws_reorder",)) is not None:
            self._held = trade
            return []
        return [trade]

    def _broadcast(self, trade: Trade) -> None:
        stream = f"{trade.symbol.lower()}@trade"
        t_ms = trade.ts // _MS_NS
        data = _json.encode(_WsTrade(
            e="trade", E=max(t_ms, self._server_ms()), s=trade.symbol, t=trade.trade_id,
            p=f8(trade.price_e8), q=f8(trade.qty_e8), T=t_ms, m=trade.buyer_maker, M=True,
        )).decode()
        combined = f'{{"stream":"{stream}","data":{data}}}'
        for conn in list(self._conns):
            if stream in conn.streams and not conn.closing.is_set():
                self._send(conn, combined if conn.combined else data)

    def _send(self, conn: _WsConn, message: str) -> None:
        """Queue ``message``; a connection whose queue is full is dropped (1008)."""
        try:
            conn.queue.put_nowait(message)
        except asyncio.QueueFull:
            if not conn.closing.is_set():
                self.stats.ws_slow_dropped += 1
                self._close_conn(conn, 1008)

    async def _ws(self, ws: WebSocket) -> None:
        path = ws.url.path
        combined = path == "/stream"
        raw = ws.query_params.get("streams", "") if combined else path[len("/ws"):].strip("/")
        streams = {s for s in raw.split("/") if s}
        if self._take(("ws_refuse",)) is not None:
            await ws.close(code=1013)
            return
        await ws.accept()
        conn = _WsConn(ws=ws, streams=streams, combined=combined, opened=time.monotonic())
        self._conns.add(conn)
        self.stats.ws_connects += 1
        self.stats.ws_open = len(self._conns)
        tasks = [
            asyncio.create_task(self._ws_send(conn), name="fake_binance.ws_send"),
            asyncio.create_task(self._ws_receive(conn), name="fake_binance.ws_receive"),
            asyncio.create_task(conn.closing.wait(), name="fake_binance.ws_closing"),
        ]
        try:
            done, _ = await asyncio.wait(
                tasks, timeout=self.ws_max_lifetime_s, return_when=asyncio.FIRST_COMPLETED
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
            self._conns.discard(conn)
            self.stats.ws_open = len(self._conns)

    async def _ws_send(self, conn: _WsConn) -> None:
        while True:
            message = await conn.queue.get()
            await conn.ws.send_text(message)
            self.stats.ws_messages += 1

    async def _ws_receive(self, conn: _WsConn) -> None:
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
                self._send(conn, '{"error":{"code":2,"msg":"Invalid request"},"id":null}')
                continue
            result: object = None
            if method == "SUBSCRIBE":
                conn.streams.update(params)
            elif method == "UNSUBSCRIBE":
                conn.streams.difference_update(params)
            elif method == "LIST_SUBSCRIPTIONS":
                result = sorted(conn.streams)
            else:
                self._send(conn, _json.encode(
                    {"error": {"code": 1, "msg": f"Unknown method {str(method)[:50]}"},
                     "id": rid}).decode())
                continue
            self._send(conn, _json.encode({"result": result, "id": rid}).decode())

    # REST ------------------------------------------------------------------------------

    def _server_ms(self) -> int:
        return self.clock_ms() + self.skew_ms

    def _rate_limits(self) -> list[dict[str, object]]:
        return [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": round(self.weight_limit * 60 / self.weight_window_s)},
            {"rateLimitType": "ORDERS", "interval": "SECOND",
             "intervalNum": round(self.order_window_s), "limit": self.order_limit},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200_000},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5,
             "limit": 61_000},
        ]

    async def _rest(self, request: Request) -> Response:
        method, path = request.method, request.url.path
        endpoint = _ENDPOINTS.get((method, path))
        if endpoint is None:
            return Response(status_code=404)
        self.stats.requests += 1
        query = request.url.query
        body = (await request.body()).decode()
        params = dict(parse_qsl(query, keep_blank_values=True)
                      + parse_qsl(body, keep_blank_values=True))
        if endpoint.order:
            self.order_arrivals.append(params.get("newClientOrderId", ""))
        try:
            headers = self._admit(endpoint)
            kinds = _ORDER_FAULTS if endpoint.order else _REST_FAULTS
            fault = self._take(kinds, method, path)
            if fault is not None and fault.apply == "never":
                early = await self._fault_response(fault, headers)
                if early is not None:
                    return early
            if endpoint.signed:
                self._check_signature(request, query, body, params)
            if endpoint.order:
                headers.update(self._count_order())
            if fault is not None and fault.apply == "after":
                await self._hold(fault.delay_s)
                result = self._call(endpoint, params, fault)
                return self._ok(result, headers)
            result = self._call(endpoint, params, fault)
            if endpoint.order:
                self.stats.orders_placed = len(self.orders)
            if fault is not None and fault.apply == "before":
                late = await self._fault_response(fault, headers)
                if late is not None:
                    return late
            return self._ok(result, headers)
        except ApiError as exc:
            return Response(
                _json.encode({"code": exc.code, "msg": exc.msg}), exc.status,
                headers={**self._weight_headers(), **exc.headers},
                media_type="application/json",
            )

    def _call(self, endpoint: _Endpoint, params: dict[str, str], fault: Fault | None) -> object:
        handler: Callable[[dict[str, str], Fault | None], object] = getattr(
            self.exchange, endpoint.handler
        )
        return handler(params, fault)

    def _ok(self, result: object, headers: dict[str, str]) -> Response:
        return Response(_json.encode(result), 200, headers=headers, media_type="application/json")

    def _weight_headers(self) -> dict[str, str]:
        used = self._window[1]
        return {"X-MBX-USED-WEIGHT-1M": str(used), "X-MBX-USED-WEIGHT": str(used)}

    def _admit(self, endpoint: _Endpoint) -> dict[str, str]:
        """Ban check and weight accounting; raises 418/429 like Binance."""
        now = time.monotonic()
        if now < self._banned_until:
            self.stats.banned += 1
            raise self._ban_error(self._banned_until - now)
        index = int(now // self.weight_window_s)
        used = (self._window[1] if self._window[0] == index else 0) + endpoint.weight
        self._window = (index, used)
        self.stats.weight_used = used
        self.stats.max_weight_in_window = max(self.stats.max_weight_in_window, used)
        if used > self.weight_limit:
            self.stats.rate_limited += 1
            strikes = (self._violations[1] if self._violations[0] == index else 0) + 1
            self._violations = (index, strikes)
            if self.ban_after and strikes >= self.ban_after:
                self._banned_until = now + self.ban_s
                raise self._ban_error(self.ban_s)
            retry = (index + 1) * self.weight_window_s - now
            raise ApiError(
                429, -1003,
                f"Too much request weight used; current limit is {self.weight_limit} request "
                "weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid "
                "polling the API.",
                {"Retry-After": _retry_after(retry)},
            )
        return self._weight_headers()

    def _ban_error(self, seconds: float) -> ApiError:
        until = self._server_ms() + int(seconds * 1000)
        return ApiError(
            418, -1003,
            f"Way too much request weight used; IP banned until {until}. Please use WebSocket "
            "Streams for live updates to avoid bans.",
            {"Retry-After": _retry_after(seconds)},
        )

    def _count_order(self) -> dict[str, str]:
        now = time.monotonic()
        times = self._order_times
        while times and times[0] <= now - self.order_window_s:
            times.popleft()
        if len(times) >= self.order_limit:
            self.stats.rate_limited += 1
            raise ApiError(
                429, -1015,
                f"Too many new orders; current limit is {self.order_limit} orders per "
                f"{self.order_window_s:g} SECOND.",
                {"Retry-After": _retry_after(times[0] + self.order_window_s - now)},
            )
        times.append(now)
        return {"X-MBX-ORDER-COUNT-10S": str(len(times))}

    async def _fault_response(self, fault: Fault, headers: dict[str, str]) -> Response | None:
        kind = fault.kind
        if kind in ("rate_limit", "order_rate_limit"):
            code = -1003 if kind == "rate_limit" else -1015
            msg = ("Too many requests; please use the websocket for live updates."
                   if kind == "rate_limit" else "Too many new orders.")
            raise ApiError(fault.status or 429, code, msg,
                            {"Retry-After": _retry_after(fault.retry_after_s)})
        if kind == "ban":
            self._banned_until = time.monotonic() + fault.retry_after_s
            self.stats.banned += 1
            raise self._ban_error(fault.retry_after_s)
        if kind == "server_error":
            status = fault.status or 503
            return Response(f"<html><body><h1>{status} Service Unavailable</h1></body></html>",
                            status, headers=headers, media_type="text/html")
        if kind == "unknown_status":
            raise ApiError(fault.status or 503, -1007,
                            "Timeout waiting for response from backend server. Send status "
                            "unknown; execution status unknown.")
        if kind == "timeout":
            await self._hold(fault.delay_s)
            return Response("", 504, headers=headers)
        if kind == "delay":
            await self._hold(fault.delay_s)
            return None
        if kind == "reject":
            raise ApiError(fault.status or 400, fault.code, fault.msg)
        return None  # partial_fill acts inside matching

    async def _hold(self, seconds: float) -> None:
        """Wait ``seconds`` (0: until the fake stops), released early by ``stop``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds or None)

    def _check_signature(self, request: Request, query: str, body: str,
                         params: dict[str, str]) -> None:
        key = request.headers.get("X-MBX-APIKEY")
        if not key:
            raise ApiError(401, -2014, "API-key format invalid.")
        if key != self.api_key:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        signature = params.get("signature")
        if not signature:
            raise ApiError(400, -1102, "Mandatory parameter 'signature' was not sent, was "
                                        "empty/null, or malformed.")
        total = _strip_signature(query) + _strip_signature(body)
        expected = hmac.new(self.api_secret.encode(), total.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        stamp = params.get("timestamp", "")
        if not stamp.isdigit():
            raise ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was "
                                        "empty/null, or malformed.")
        window = params.get("recvWindow", "5000")
        if not window.isdigit() or int(window) > 60_000:
            raise ApiError(400, -1131, "recvWindow must be less than 60000")
        server = self._server_ms()
        if int(stamp) >= server + 1000:
            raise ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the "
                                        "server's time.")
        if server - int(stamp) > int(window):
            raise ApiError(400, -1021, "Timestamp for this request is outside of the "
                                        "recvWindow.")

    # control API -------------------------------------------------------------------------

    def _guarded(self, handler: Callable[[Request], Awaitable[Response]]
                 ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind the control token (when configured) and the body bound."""

        async def guarded(request: Request) -> Response:
            if self.control_token is not None:
                scheme, _, value = request.headers.get("authorization", "").partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(
                        value.strip().encode(), self.control_token.encode()):
                    return _detail("send Authorization: Bearer <control token>", 401)
            length = request.headers.get("content-length", "0")
            if not length.isdigit() or int(length) > _MAX_BODY:
                return _detail(f"body over {_MAX_BODY} bytes", 413)
            return await handler(request)

        return guarded

    async def _ctl_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.clear_faults()
            return Response(b"[]", media_type="application/json")
        if request.method == "POST":
            try:
                fault = _checked_fault(msgspec.json.decode(await _body(request), type=Fault))
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                return _detail(str(exc)[:300], 422)
            return Response(_json.encode(self.inject(fault)), 201,
                            media_type="application/json")
        return Response(_json.encode(self.faults.history), media_type="application/json")

    async def _ctl_ledger(self, request: Request) -> Response:
        body = {"orders": list(self.orders.values()), "fills": self.fills,
                "balances": {a: {"free": f8(f), "locked": f8(lk)}
                             for a, (f, lk) in sorted(self.exchange.balances.items())}}
        return Response(_json.encode(body), media_type="application/json")

    async def _ctl_stats(self, request: Request) -> Response:
        return Response(_json.encode(self.stats), media_type="application/json")

    async def _ctl_trades(self, request: Request) -> Response:
        """``[{"symbol": "BTCUSDT", "price": "42000.5", "qty": "0.01"}, ...]``."""
        try:
            rows = msgspec.json.decode(await _body(request), type=list[dict[str, str]])
            if len(rows) > _MAX_TRADES:
                raise ValueError(f"at most {_MAX_TRADES} trades per request")
            trades = [self._control_trade(r) for r in rows]
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError, ValueError) as exc:
            return _detail(str(exc)[:300], 422)
        await self.publish(trades)
        return Response(_json.encode({"published": len(trades)}), 201,
                        media_type="application/json")

    def _control_trade(self, row: dict[str, str]) -> Trade:
        symbol = row["symbol"]
        if not _SYMBOL.fullmatch(symbol):
            raise ValueError(f"symbol {symbol[:30]!r} is not like BTCUSDT")
        trade = self.trade(symbol, row["price"][:40], row.get("qty", "0.01")[:40])
        for what, value in (("price", trade.price_e8), ("qty", trade.qty_e8)):
            if not 0 < value <= _MAX_E8:
                raise ValueError(f"{what} must be positive and fit 64 bits in e8")
        return trade

    async def _ctl_drop(self, request: Request) -> Response:
        return Response(_json.encode({"dropped": self.drop_streams()}),
                        media_type="application/json")


# helpers -----------------------------------------------------------------------------------


def _detail(text: str, status: int) -> Response:
    return Response(_json.encode({"detail": text}), status, media_type="application/json")


async def _body(request: Request) -> bytes:
    """The request body, at most ``_MAX_BODY`` bytes (even without a content-length)."""
    raw = b""
    async for part in request.stream():
        raw += part
        if len(raw) > _MAX_BODY:
            raise ValueError(f"body over {_MAX_BODY} bytes")
    return raw


def _checked_fault(fault: Fault) -> Fault:
    """``fault`` if its numbers are finite and in range; ValueError says which is not."""
    for name in ("duration_s", "retry_after_s", "delay_s", "fill_ratio"):
        value = getattr(fault, name)
        if value is not None and not (math.isfinite(value) and 0 <= value <= _MAX_SECONDS):
            raise ValueError(f"{name} must be a finite number from 0 to {_MAX_SECONDS:g}")
    if fault.times is not None and not 0 < fault.times <= 10**9:
        raise ValueError("times must be from 1 to 10^9 (or null: while it lasts)")
    if not 0 <= fault.status <= 4999 or not 1 <= fault.parts <= 1000:
        raise ValueError("status must be an HTTP status or close code, parts 1 to 1000")
    if fault.fill_ratio > 1:
        raise ValueError("fill_ratio must be from 0 to 1")
    return fault


def _retry_after(seconds: float) -> str:
    """Whole seconds as Binance sends them; below 1 s kept fractional so tests run fast."""
    if seconds >= 1:
        return str(math.ceil(seconds))
    return f"{max(seconds, 0.0):.3f}"


def _strip_signature(text: str) -> str:
    return "&".join(p for p in text.split("&") if p and not p.startswith("signature="))


async def _aiter(
    batches: Iterable[list[Trade]] | AsyncIterable[list[Trade]],
) -> AsyncIterator[list[Trade]]:
    if isinstance(batches, AsyncIterable):
        async for batch in batches:
            yield batch
    else:
        for batch in batches:
            yield batch
            await asyncio.sleep(0)


def main(argv: list[str] | None = None) -> None:
    """Run a fake Binance fed by the seeded synthetic market until interrupted."""
    from cdb.marketdata.synthetic import SyntheticSource

    parser = argparse.ArgumentParser(prog="python -m cdb.testing.fake_binance",
                                     description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--symbols", default="BTCUSDT,ETHUSDT,SOLUSDT")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--api-key", default="fake-api-key")
    parser.add_argument("--api-secret", default="fake-api-secret")
    parser.add_argument("--weight-limit", type=int, default=6000)
    parser.add_argument("--control-token-file",
                        help=f"file holding the control API's token (else ${CONTROL_TOKEN_ENV})")
    args = parser.parse_args(argv)
    control_token = os.environ.get(CONTROL_TOKEN_ENV) or None
    if args.control_token_file:
        with open(args.control_token_file, encoding="utf-8") as f:
            control_token = f.read().strip() or None
    if not control_token and args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error(f"--host {args.host}: off loopback the control API needs a token "
                     f"(${CONTROL_TOKEN_ENV} or --control-token-file)")
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]

    async def run() -> None:
        async with FakeBinance(symbols=symbols, host=args.host, port=args.port,
                               api_key=args.api_key, api_secret=args.api_secret,
                               weight_limit=args.weight_limit,
                               control_token=control_token) as fake:
            source = SyntheticSource(seed=args.seed, symbols=symbols, duration_s=86_400.0,
                                     start_ns=time.time_ns(), venue="binance")
            print(f"fake binance listening on {fake.url} (streams {fake.ws_url})", flush=True)
            await fake.feed(source.batches(), speed=1.0)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
