"""A fake Binance spot exchange on 127.0.0.1: the real wire formats, a ledger, faults on demand.

One port serves both faces, as ``--exchange-url`` expects:

- websocket trade streams: ``/ws/<symbol>@trade`` (raw), ``/stream?streams=a@trade/b@trade``
  (combined, ``{"stream": ..., "data": ...}``), the ``SUBSCRIBE``/``UNSUBSCRIBE``/
  ``LIST_SUBSCRIPTIONS`` methods, server pings, and the 24 h disconnect
  (``ws_max_lifetime_s``, short in tests);
- REST: ``/api/v3/ping``, ``time``, ``exchangeInfo``, ``order`` (POST/GET/DELETE,
  ``newClientOrderId``/``origClientOrderId``, MARKET and LIMIT, ACK/RESULT/FULL),
  ``openOrders``, ``account``, ``myTrades``; HMAC-SHA256 signatures, ``timestamp`` and
  ``recvWindow`` checked like the real API (-2014/-2015, -1022, -1021, -1102), request
  weight counted per fixed window with ``X-MBX-USED-WEIGHT-1M`` and order counts with
  ``X-MBX-ORDER-COUNT-10S``; over the limit it answers 429/-1003 (or -1015 for orders)
  with ``Retry-After``, and bans (418) a client that keeps going.

It behaves like Binance where that matters to a client: a ``newClientOrderId`` is unique
among *open* orders only (a filled order's id is accepted again, which is why a client
must look an unknown order up before sending it again); market orders fill at the last
traded price (taker fee in the asset received, as Binance charges it), limit orders rest
and fill against the trades fed to the fake; balances are checked (-2010).

Faults (``Fault``) are injected from Python (``inject``) or over HTTP
(``POST /_fake/faults``, so a scenario runner can drive a fake in another process); each
one is one-shot, N times, or for a duration, and counts how often it fired (a fault
that never fired is why a scenario verdict is *unknown*). ``apply`` says whether the
request still takes effect: ``before`` the fault (an order placed whose response is
lost), ``never``, or ``after`` a delay (an order that reaches the matching engine after
the client gave up). The ledger (``orders``, ``fills``; ``GET /_fake/ledger``) is the
venue's truth that tests compare cdb's records against.

::

    async with FakeBinance(symbols=["BTCUSDT"]) as fake:
        fake.inject(Fault(kind="rate_limit", endpoint="POST /api/v3/order", times=2))
        await fake.publish([trade, ...])     # to websocket subscribers; moves prices
        ...  # point clients at fake.url (REST) and fake.ws_url (streams)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import itertools
import math
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
from cdb.events import SCALE, Trade, mul_e8, parse_e8

FaultKind = Literal[
    "rate_limit", "order_rate_limit", "ban", "server_error", "timeout", "delay",
    "unknown_status", "partial_fill", "reject",
    "ws_drop", "ws_duplicate", "ws_reorder", "ws_skip", "ws_silence", "ws_refuse",
]
Apply = Literal["never", "before", "after"]
State = Literal["created", "running", "stopping", "stopped"]

_CID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_QUOTES: Final = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")
_MS_NS: Final = 1_000_000
_DEFAULT_PRICES: Final = {"BTCUSDT": "42000", "ETHUSDT": "2300", "SOLUSDT": "100",
                          "BNBUSDT": "310", "XRPUSDT": "0.62"}
_CONTROL: Final = "/_fake"


def _f8(value_e8: int) -> str:
    """Binance's decimal format: always eight decimals."""
    sign = "-" if value_e8 < 0 else ""
    whole, frac = divmod(abs(value_e8), SCALE)
    return f"{sign}{whole}.{frac:08d}"


def now_ms() -> int:
    """Wall time in ms (the fake's default server clock)."""
    return time.time_ns() // _MS_NS


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """A fault to inject into the fake.

    Args:
        kind: what happens. REST: ``rate_limit`` (429, -1003), ``order_rate_limit``
            (429, -1015), ``ban`` (418 on every request for ``retry_after_s``),
            ``server_error`` (``status``, 503 by default), ``timeout`` (no answer for
            ``delay_s``, or until the fake stops when 0), ``delay`` (a slow but normal
            answer), ``unknown_status`` (-1007, execution status unknown),
            ``partial_fill`` (a market order fills ``fill_ratio`` in ``parts`` fills, the
            rest expires), ``reject`` (400 with ``code``/``msg``). Websocket:
            ``ws_drop`` (close every stream connection with ``status`` as close code),
            ``ws_duplicate`` / ``ws_reorder`` / ``ws_skip`` (the next trades sent twice,
            swapped pairwise, or never sent), ``ws_silence`` (trades not sent, the
            connection kept), ``ws_refuse`` (new connections rejected).
        endpoint: ``"*"`` or ``"[METHOD ]PATH"`` such as ``"POST /api/v3/order"``.
        times: how many requests (or trades) it hits; None: every one while it lasts.
        duration_s: how long it lasts; None: until ``times`` is used up.
        apply: whether the request still takes effect: ``never``, ``before`` the fault
            (placed, then the answer is lost or an error), ``after`` ``delay_s``.
    """

    kind: FaultKind
    endpoint: str = "*"
    times: int | None = 1
    duration_s: float | None = None
    status: int = 0
    retry_after_s: float = 1.0
    delay_s: float = 0.0
    apply: Apply = "never"
    fill_ratio: float = 1.0
    parts: int = 1
    code: int = -2010
    msg: str = "Order would trigger immediately."


class FaultState(msgspec.Struct, kw_only=True):
    """An injected fault and how often it fired."""

    id: int
    fault: Fault
    fired: int = 0
    remaining: int | None = None
    until: float | None = None


class SymbolInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A tradable symbol of the fake (filters as in ``exchangeInfo``)."""

    symbol: str
    base: str
    quote: str
    price: str = "100"
    step: str = "0.00001"
    tick: str = "0.01"
    min_qty: str = "0.00001"
    max_qty: str = "9000"
    min_notional: str = "5"

    @classmethod
    def of(cls, symbol: str, price: str | None = None) -> SymbolInfo:
        """A symbol with its base and quote split off a known quote asset."""
        quote = next((q for q in _QUOTES if symbol.endswith(q) and symbol != q), symbol[-4:])
        return cls(symbol=symbol, base=symbol[: -len(quote)], quote=quote,
                   price=price or _DEFAULT_PRICES.get(symbol, "100"))


class FakeFill(msgspec.Struct, frozen=True, kw_only=True):
    """One execution in the fake's ledger (a row of ``myTrades``)."""

    trade_id: int
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    price_e8: int
    qty_e8: int
    quote_e8: int
    commission_e8: int
    commission_asset: str
    time_ms: int
    maker: bool


class FakeOrder(msgspec.Struct, kw_only=True):
    """One order in the fake's ledger."""

    order_id: int
    symbol: str
    client_order_id: str
    side: str
    type: str
    time_in_force: str
    orig_qty_e8: int
    price_e8: int
    status: str
    time_ms: int
    update_ms: int
    executed_e8: int = 0
    quote_e8: int = 0
    locked_e8: int = 0
    """Funds held for a resting order (quote for a buy, base for a sell)."""


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


class _ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.headers = status, code, msg, headers or {}


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
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    close_code: int | None = None
    closing: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class _Endpoint:
    weight: int
    signed: bool
    handler: str
    order: bool = False


_ENDPOINTS: Final = {
    ("GET", "/api/v3/ping"): _Endpoint(1, False, "_ping"),
    ("GET", "/api/v3/time"): _Endpoint(1, False, "_time"),
    ("GET", "/api/v3/exchangeInfo"): _Endpoint(20, False, "_exchange_info"),
    ("POST", "/api/v3/order"): _Endpoint(1, True, "_new_order", order=True),
    ("GET", "/api/v3/order"): _Endpoint(4, True, "_query_order"),
    ("DELETE", "/api/v3/order"): _Endpoint(1, True, "_cancel_order"),
    ("GET", "/api/v3/openOrders"): _Endpoint(6, True, "_open_orders"),
    ("GET", "/api/v3/account"): _Endpoint(20, True, "_account"),
    ("GET", "/api/v3/myTrades"): _Endpoint(20, True, "_my_trades"),
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
        balances: initial free balances by asset (decimal strings).
        weight_limit, weight_window_s: request weight allowed per fixed window.
        order_limit, order_window_s: new orders allowed per window.
        ban_after: 429s for over-use within one window that earn a 418 ban.
        ban_s: how long such a ban lasts.
        commission_bps: fee of every fill (maker and taker).
        ws_max_lifetime_s: a stream connection is closed after this (Binance: 24 h).
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
    ) -> None:
        infos = [s if isinstance(s, SymbolInfo) else SymbolInfo.of(s) for s in symbols]
        self.symbols = {s.symbol: s for s in infos}
        self.host = host
        self.port = port
        self.api_key = api_key
        self.api_secret = api_secret
        self.weight_limit, self.weight_window_s = weight_limit, weight_window_s
        self.order_limit, self.order_window_s = order_limit, order_window_s
        self.ban_after, self.ban_s = ban_after, ban_s
        self.commission_bps = commission_bps
        self.ws_max_lifetime_s = ws_max_lifetime_s
        self.ws_ping_interval_s = ws_ping_interval_s
        self.clock_ms = clock_ms
        self.skew_ms = 0
        self.state: State = "created"

        self.prices = {s.symbol: parse_e8(s.price) for s in infos}
        assets = {a for s in infos for a in (s.base, s.quote)}
        start = balances if balances is not None else {
            a: ("1000000" if a in _QUOTES else "1000") for a in assets
        }
        self.balances: dict[str, list[int]] = {a: [parse_e8(v), 0] for a, v in start.items()}
        self.orders: dict[int, FakeOrder] = {}
        """Every order ever accepted, by venue order id (the ledger)."""
        self.fills: list[FakeFill] = []
        """Every execution, in order (the ledger)."""
        self.stats = FakeStats()
        self.faults: list[FaultState] = []
        self.order_requests: list[tuple[str, str]] = []
        """``(newClientOrderId, outcome)`` of every order request that reached matching."""
        self.order_arrivals: list[str] = []
        """``newClientOrderId`` of every order request received, whatever became of it."""
        self._anon_ids = itertools.count(1)

        self._order_ids = itertools.count(1_000_001)
        self._trade_ids: dict[str, Iterator[int]] = {}
        self._fault_ids = itertools.count(1)
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
        return Starlette(routes=[
            Route(f"{_CONTROL}/faults", self._ctl_faults, methods=["GET", "POST", "DELETE"]),
            Route(f"{_CONTROL}/ledger", self._ctl_ledger, methods=["GET"]),
            Route(f"{_CONTROL}/stats", self._ctl_stats, methods=["GET"]),
            Route(f"{_CONTROL}/trades", self._ctl_trades, methods=["POST"]),
            Route(f"{_CONTROL}/ws/drop", self._ctl_drop, methods=["POST"]),
            Route("/api/{rest:path}", self._rest, methods=methods),
            WebSocketRoute("/ws", self._ws),
            WebSocketRoute("/ws/{streams:path}", self._ws),
            WebSocketRoute("/stream", self._ws),
        ])

    # faults ----------------------------------------------------------------------------

    def inject(self, fault: Fault | None = None, /, **kwargs: Any) -> FaultState:
        """Add a fault (a ``Fault`` or its fields as keywords); returns its live state."""
        fault = fault if fault is not None else msgspec.convert(kwargs, Fault)
        until = None if fault.duration_s is None else time.monotonic() + fault.duration_s
        state = FaultState(id=next(self._fault_ids), fault=fault, remaining=fault.times,
                           until=until)
        if fault.kind == "ws_drop":  # acts at once, on the connections open now
            self.drop_streams(fault.status or 1011)
            state.fired, state.remaining = 1, 0
            return state
        self.faults.append(state)
        return state

    def clear_faults(self) -> None:
        """Remove every fault."""
        self.faults.clear()

    def _take(self, kinds: tuple[str, ...], method: str = "", path: str = "") -> Fault | None:
        """The first live fault of ``kinds`` matching the request; uses one of its times."""
        now = time.monotonic()
        for state in list(self.faults):
            fault = state.fault
            if (state.until is not None and now >= state.until) or state.remaining == 0:
                self.faults.remove(state)
                continue
            if fault.kind not in kinds or not _matches(fault.endpoint, method, path):
                continue
            state.fired += 1
            if state.remaining is not None:
                state.remaining -= 1
            return fault
        return None

    # market data -----------------------------------------------------------------------

    async def publish(self, trades: Iterable[Trade]) -> None:
        """Trades print: prices move, resting orders fill, stream subscribers are told."""
        for trade in trades:
            if trade.symbol not in self.symbols:
                continue
            self.prices[trade.symbol] = trade.price_e8
            self._match_resting(trade)
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
        """Publish batches paced by their event time (``speed`` x real time; None: at once)."""
        anchor: tuple[float, int] | None = None
        async for batch in _aiter(batches):
            if not batch:
                continue
            if speed is not None:
                if anchor is None:
                    anchor = (time.monotonic(), batch[0].ts)
                due = anchor[0] + (batch[0].ts - anchor[1]) / 1e9 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.publish(batch)

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
            p=_f8(trade.price_e8), q=_f8(trade.qty_e8), T=t_ms, m=trade.buyer_maker, M=True,
        )).decode()
        combined = f'{{"stream":"{stream}","data":{data}}}'
        for conn in self._conns:
            if stream in conn.streams and not conn.closing.is_set():
                conn.queue.put_nowait(combined if conn.combined else data)

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
                conn.queue.put_nowait('{"error":{"code":2,"msg":"Invalid request"},"id":null}')
                continue
            result: object = None
            if method == "SUBSCRIBE":
                conn.streams.update(params)
            elif method == "UNSUBSCRIBE":
                conn.streams.difference_update(params)
            elif method == "LIST_SUBSCRIPTIONS":
                result = sorted(conn.streams)
            else:
                conn.queue.put_nowait(
                    _json.encode({"error": {"code": 1, "msg": f"Unknown method {method}"},
                                  "id": rid}).decode())
                continue
            conn.queue.put_nowait(_json.encode({"result": result, "id": rid}).decode())

    # REST ------------------------------------------------------------------------------

    def _server_ms(self) -> int:
        return self.clock_ms() + self.skew_ms

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
            if fault is not None and fault.apply == "before":
                late = await self._fault_response(fault, headers)
                if late is not None:
                    return late
            return self._ok(result, headers)
        except _ApiError as exc:
            return Response(
                _json.encode({"code": exc.code, "msg": exc.msg}), exc.status,
                headers={**self._weight_headers(), **exc.headers},
                media_type="application/json",
            )

    def _call(self, endpoint: _Endpoint, params: dict[str, str], fault: Fault | None) -> object:
        handler: Callable[[dict[str, str], Fault | None], object] = getattr(
            self, endpoint.handler
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
            raise _ApiError(
                429, -1003,
                f"Too much request weight used; current limit is {self.weight_limit} request "
                "weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid "
                "polling the API.",
                {"Retry-After": _retry_after(retry)},
            )
        return self._weight_headers()

    def _ban_error(self, seconds: float) -> _ApiError:
        until = self._server_ms() + int(seconds * 1000)
        return _ApiError(
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
            raise _ApiError(
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
            raise _ApiError(fault.status or 429, code, msg,
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
            raise _ApiError(fault.status or 503, -1007,
                            "Timeout waiting for response from backend server. Send status "
                            "unknown; execution status unknown.")
        if kind == "timeout":
            await self._hold(fault.delay_s)
            return Response("", 504, headers=headers)
        if kind == "delay":
            await self._hold(fault.delay_s)
            return None
        if kind == "reject":
            raise _ApiError(fault.status or 400, fault.code, fault.msg)
        return None  # partial_fill acts inside matching

    async def _hold(self, seconds: float) -> None:
        """Wait ``seconds`` (0: until the fake stops), released early by ``stop``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds or None)

    def _check_signature(self, request: Request, query: str, body: str,
                         params: dict[str, str]) -> None:
        key = request.headers.get("X-MBX-APIKEY")
        if not key:
            raise _ApiError(401, -2014, "API-key format invalid.")
        if key != self.api_key:
            raise _ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        signature = params.get("signature")
        if not signature:
            raise _ApiError(400, -1102, "Mandatory parameter 'signature' was not sent, was "
                                        "empty/null, or malformed.")
        total = _strip_signature(query) + _strip_signature(body)
        expected = hmac.new(self.api_secret.encode(), total.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise _ApiError(400, -1022, "Signature for this request is not valid.")
        stamp = params.get("timestamp", "")
        if not stamp.isdigit():
            raise _ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was "
                                        "empty/null, or malformed.")
        window = params.get("recvWindow", "5000")
        if not window.isdigit() or int(window) > 60_000:
            raise _ApiError(400, -1131, "recvWindow must be less than 60000")
        server = self._server_ms()
        if int(stamp) >= server + 1000:
            raise _ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the "
                                        "server's time.")
        if server - int(stamp) > int(window):
            raise _ApiError(400, -1021, "Timestamp for this request is outside of the "
                                        "recvWindow.")

    # endpoints ---------------------------------------------------------------------------

    def _ping(self, params: dict[str, str], fault: Fault | None) -> object:
        return {}

    def _time(self, params: dict[str, str], fault: Fault | None) -> object:
        return {"serverTime": self._server_ms()}

    def _exchange_info(self, params: dict[str, str], fault: Fault | None) -> object:
        wanted = params.get("symbol")
        return {
            "timezone": "UTC",
            "serverTime": self._server_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": self.weight_limit},
                {"rateLimitType": "ORDERS", "interval": "SECOND",
                 "intervalNum": int(self.order_window_s), "limit": self.order_limit},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1,
                 "limit": 200_000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5,
                 "limit": 61_000},
            ],
            "exchangeFilters": [],
            "symbols": [_symbol_json(s) for s in self.symbols.values()
                        if wanted in (None, s.symbol)],
        }

    def _symbol(self, params: dict[str, str]) -> SymbolInfo:
        name = _required(params, "symbol")
        info = self.symbols.get(name)
        if info is None:
            raise _ApiError(400, -1121, "Invalid symbol.")
        return info

    def _new_order(self, params: dict[str, str], fault: Fault | None) -> object:
        info = self._symbol(params)
        side = _required(params, "side")
        kind = _required(params, "type")
        if side not in ("BUY", "SELL"):
            raise _ApiError(400, -1117, "Invalid side.")
        if kind not in ("MARKET", "LIMIT"):
            raise _ApiError(400, -1116, "Invalid orderType.")
        qty = _decimal(params, "quantity")
        cid = params.get("newClientOrderId") or f"fake-{next(self._anon_ids)}"
        if not _CID.match(cid):
            raise _ApiError(400, -1100, "Illegal characters found in parameter "
                                        "'newClientOrderId'; legal range is "
                                        "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
        price = 0
        tif = "GTC"
        if kind == "LIMIT":
            price = _decimal(params, "price")
            tif = _required(params, "timeInForce")
            if price % parse_e8(info.tick) or price <= 0:
                raise _ApiError(400, -1013, "Filter failure: PRICE_FILTER")
        self._check_lot(info, qty, price or self.prices[info.symbol])
        if any(o.client_order_id == cid and o.status in ("NEW", "PARTIALLY_FILLED")
               for o in self.orders.values()):
            self.order_requests.append((cid, "duplicate"))
            raise _ApiError(400, -2010, "Duplicate order sent.")
        now = self._server_ms()
        order = FakeOrder(
            order_id=next(self._order_ids), symbol=info.symbol, client_order_id=cid, side=side,
            type=kind, time_in_force=tif, orig_qty_e8=qty, price_e8=price, status="NEW",
            time_ms=now, update_ms=now,
        )
        fills = (self._fill_market(info, order, fault) if kind == "MARKET"
                 else self._rest_limit(info, order))
        self.orders[order.order_id] = order
        self.stats.orders_placed += 1
        self.order_requests.append((cid, "placed"))
        return self._order_response(order, fills, params.get("newOrderRespType", "FULL"))

    def _check_lot(self, info: SymbolInfo, qty: int, price: int) -> None:
        step = parse_e8(info.step)
        if qty % step or not parse_e8(info.min_qty) <= qty <= parse_e8(info.max_qty):
            raise _ApiError(400, -1013, "Filter failure: LOT_SIZE")
        if mul_e8(qty, price) < parse_e8(info.min_notional):
            raise _ApiError(400, -1013, "Filter failure: NOTIONAL")

    def _balance(self, asset: str) -> list[int]:
        return self.balances.setdefault(asset, [0, 0])

    def _fill_market(self, info: SymbolInfo, order: FakeOrder,
                     fault: Fault | None) -> list[FakeFill]:
        price = self.prices[info.symbol]
        if order.side == "BUY":
            if self._balance(info.quote)[0] < mul_e8(order.orig_qty_e8, price):
                self._insufficient(order)
        elif self._balance(info.base)[0] < order.orig_qty_e8:
            self._insufficient(order)
        ratio, parts = 1.0, 1
        if fault is not None and fault.kind == "partial_fill":
            ratio, parts = fault.fill_ratio, max(1, fault.parts)
        step = parse_e8(info.step)
        executed = math.floor(order.orig_qty_e8 * ratio / step) * step
        pieces = _split(executed, parts, step)
        fills = [self._execute(info, order, price, qty, maker=False) for qty in pieces]
        order.status = "FILLED" if order.executed_e8 >= order.orig_qty_e8 else "EXPIRED"
        return fills

    def _insufficient(self, order: FakeOrder) -> None:
        self.order_requests.append((order.client_order_id, "insufficient"))
        raise _ApiError(400, -2010, "Account has insufficient balance for requested action.")

    def _rest_limit(self, info: SymbolInfo, order: FakeOrder) -> list[FakeFill]:
        if order.side == "BUY":
            need, asset = mul_e8(order.orig_qty_e8, order.price_e8), info.quote
        else:
            need, asset = order.orig_qty_e8, info.base
        balance = self._balance(asset)
        if balance[0] < need:
            self._insufficient(order)
        balance[0] -= need
        balance[1] += need
        order.locked_e8 = need
        return []

    def _execute(self, info: SymbolInfo, order: FakeOrder, price: int, qty: int, *,
                 maker: bool) -> FakeFill:
        quote = mul_e8(qty, price)
        base_bal, quote_bal = self._balance(info.base), self._balance(info.quote)
        if order.side == "BUY":
            commission, asset = qty * self.commission_bps // 10_000, info.base
            if order.locked_e8:
                release = min(order.locked_e8, quote)
                order.locked_e8 -= release
                quote_bal[1] -= release
            else:
                quote_bal[0] -= quote
            base_bal[0] += qty - commission
        else:
            commission, asset = quote * self.commission_bps // 10_000, info.quote
            if order.locked_e8:
                release = min(order.locked_e8, qty)
                order.locked_e8 -= release
                base_bal[1] -= release
            else:
                base_bal[0] -= qty
            quote_bal[0] += quote - commission
        order.executed_e8 += qty
        order.quote_e8 += quote
        order.update_ms = self._server_ms()
        trade_ids = self._trade_ids.setdefault(f"fill:{info.symbol}", itertools.count(1))
        fill = FakeFill(
            trade_id=next(trade_ids), order_id=order.order_id,
            client_order_id=order.client_order_id, symbol=info.symbol, side=order.side,
            price_e8=price, qty_e8=qty, quote_e8=quote, commission_e8=commission,
            commission_asset=asset, time_ms=order.update_ms, maker=maker,
        )
        self.fills.append(fill)
        return fill

    def _match_resting(self, trade: Trade) -> None:
        info = self.symbols[trade.symbol]
        for order in self.orders.values():
            if order.symbol != trade.symbol or order.status not in ("NEW", "PARTIALLY_FILLED"):
                continue
            if order.type != "LIMIT":
                continue
            buy = order.side == "BUY"
            if (buy and trade.price_e8 > order.price_e8) or (
                not buy and trade.price_e8 < order.price_e8
            ):
                continue
            qty = min(order.orig_qty_e8 - order.executed_e8, trade.qty_e8)
            if qty <= 0:
                continue
            self._execute(info, order, order.price_e8, qty, maker=True)
            order.status = ("FILLED" if order.executed_e8 >= order.orig_qty_e8
                            else "PARTIALLY_FILLED")
            if order.status == "FILLED" and order.locked_e8:
                self._unlock(info, order)

    def _unlock(self, info: SymbolInfo, order: FakeOrder) -> None:
        balance = self._balance(info.quote if order.side == "BUY" else info.base)
        balance[0] += order.locked_e8
        balance[1] -= order.locked_e8
        order.locked_e8 = 0

    def _find(self, params: dict[str, str]) -> FakeOrder:
        info = self._symbol(params)
        order_id, cid = params.get("orderId"), params.get("origClientOrderId")
        if not order_id and not cid:
            raise _ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, "
                                        "but both were empty/null!")
        # The latest order wins: a client order id may be reused once its order is closed.
        for order in reversed(self.orders.values()):
            if order.symbol != info.symbol:
                continue
            if (order_id and str(order.order_id) == order_id) or (
                not order_id and order.client_order_id == cid
            ):
                return order
        raise _ApiError(400, -2013, "Order does not exist.")

    def _query_order(self, params: dict[str, str], fault: Fault | None) -> object:
        return _order_json(self._find(params))

    def _cancel_order(self, params: dict[str, str], fault: Fault | None) -> object:
        try:
            order = self._find(params)
        except _ApiError as exc:
            raise _ApiError(400, -2011, "Unknown order sent.") from exc
        if order.status not in ("NEW", "PARTIALLY_FILLED"):
            raise _ApiError(400, -2011, "Unknown order sent.")
        order.status = "CANCELED"
        order.update_ms = self._server_ms()
        if order.locked_e8:
            self._unlock(self.symbols[order.symbol], order)
        body = _order_json(order)
        body["origClientOrderId"] = order.client_order_id
        body["clientOrderId"] = params.get("newClientOrderId") or f"cancel-{order.order_id}"
        body["transactTime"] = order.update_ms
        for key in ("time", "updateTime", "isWorking", "stopPrice", "icebergQty"):
            body.pop(key, None)
        return body

    def _open_orders(self, params: dict[str, str], fault: Fault | None) -> object:
        symbol = params.get("symbol")
        if symbol is not None:
            self._symbol(params)
        return [_order_json(o) for o in self.orders.values()
                if o.status in ("NEW", "PARTIALLY_FILLED") and symbol in (None, o.symbol)]

    def _account(self, params: dict[str, str], fault: Fault | None) -> object:
        rate = _f8(self.commission_bps * SCALE // 10_000)
        return {
            "makerCommission": self.commission_bps, "takerCommission": self.commission_bps,
            "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": rate, "taker": rate, "buyer": "0.00000000",
                                "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False,
            "updateTime": self._server_ms(), "accountType": "SPOT",
            "balances": [{"asset": a, "free": _f8(f), "locked": _f8(lk)}
                         for a, (f, lk) in sorted(self.balances.items())],
            "permissions": ["SPOT"], "uid": 354937868,
        }

    def _my_trades(self, params: dict[str, str], fault: Fault | None) -> object:
        info = self._symbol(params)
        order_id = params.get("orderId")
        start = int(params.get("startTime", "0"))
        end = int(params.get("endTime", str(2**62)))
        from_id = int(params.get("fromId", "0"))
        limit = min(int(params.get("limit", "500")), 1000)
        rows = [
            f for f in self.fills
            if f.symbol == info.symbol and (order_id is None or str(f.order_id) == order_id)
            and start <= f.time_ms <= end and f.trade_id >= from_id
        ]
        return [_fill_json(f) for f in rows[:limit]]

    def _order_response(self, order: FakeOrder, fills: list[FakeFill], kind: str) -> object:
        ack = {"symbol": order.symbol, "orderId": order.order_id, "orderListId": -1,
               "clientOrderId": order.client_order_id, "transactTime": order.update_ms}
        if kind == "ACK":
            return ack
        result = {
            **ack, "price": _f8(order.price_e8), "origQty": _f8(order.orig_qty_e8),
            "executedQty": _f8(order.executed_e8), "origQuoteOrderQty": "0.00000000",
            "cummulativeQuoteQty": _f8(order.quote_e8), "status": order.status,
            "timeInForce": order.time_in_force, "type": order.type, "side": order.side,
            "workingTime": order.time_ms, "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        if kind == "RESULT":
            return result
        result["fills"] = [
            {"price": _f8(f.price_e8), "qty": _f8(f.qty_e8),
             "commission": _f8(f.commission_e8), "commissionAsset": f.commission_asset,
             "tradeId": f.trade_id}
            for f in fills
        ]
        return result

    # control API -------------------------------------------------------------------------

    async def _ctl_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.clear_faults()
            return Response(b"[]", media_type="application/json")
        if request.method == "POST":
            try:
                fault = msgspec.json.decode(await request.body(), type=Fault)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                return Response(_json.encode({"detail": str(exc)}), 422,
                                media_type="application/json")
            return Response(_json.encode(self.inject(fault)), 201,
                            media_type="application/json")
        return Response(_json.encode(self.faults), media_type="application/json")

    async def _ctl_ledger(self, request: Request) -> Response:
        body = {"orders": list(self.orders.values()), "fills": self.fills,
                "balances": {a: {"free": _f8(f), "locked": _f8(lk)}
                             for a, (f, lk) in sorted(self.balances.items())}}
        return Response(_json.encode(body), media_type="application/json")

    async def _ctl_stats(self, request: Request) -> Response:
        return Response(_json.encode(self.stats), media_type="application/json")

    async def _ctl_trades(self, request: Request) -> Response:
        """``[{"symbol": "BTCUSDT", "price": "42000.5", "qty": "0.01"}, ...]``."""
        try:
            rows = msgspec.json.decode(await request.body(), type=list[dict[str, str]])
            trades = [self.trade(r["symbol"], r["price"], r.get("qty", "0.01")) for r in rows]
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError, ValueError) as exc:
            return Response(_json.encode({"detail": str(exc)}), 422,
                            media_type="application/json")
        await self.publish(trades)
        return Response(_json.encode({"published": len(trades)}), 201,
                        media_type="application/json")

    async def _ctl_drop(self, request: Request) -> Response:
        return Response(_json.encode({"dropped": self.drop_streams()}),
                        media_type="application/json")


# helpers -----------------------------------------------------------------------------------


def _matches(pattern: str, method: str, path: str) -> bool:
    if pattern in ("*", ""):
        return True
    want_method, _, want_path = pattern.rpartition(" ")
    return want_path == path and want_method in ("", method)


def _retry_after(seconds: float) -> str:
    """Whole seconds as Binance sends them; below 1 s kept fractional so tests run fast."""
    if seconds >= 1:
        return str(math.ceil(seconds))
    return f"{max(seconds, 0.0):.3f}"


def _strip_signature(text: str) -> str:
    return "&".join(p for p in text.split("&") if p and not p.startswith("signature="))


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise _ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was "
                                    "empty/null, or malformed.")
    return value


def _decimal(params: dict[str, str], name: str) -> int:
    text = _required(params, name)
    if not re.fullmatch(r"[0-9]{1,20}(\.[0-9]{1,20})?", text):
        raise _ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal "
                                    "range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.")
    try:
        return parse_e8(text)
    except ValueError as exc:
        raise _ApiError(400, -1111, f"Parameter '{name}' has too much precision.") from exc


def _split(total: int, parts: int, step: int) -> list[int]:
    """``total`` in up to ``parts`` positive multiples of ``step``."""
    if total <= 0:
        return []
    lots = total // step
    parts = min(parts, lots)
    base, extra = divmod(lots, parts)
    return [(base + (1 if i < extra else 0)) * step for i in range(parts)]


def _symbol_json(s: SymbolInfo) -> dict[str, object]:
    return {
        "symbol": s.symbol, "status": "TRADING", "baseAsset": s.base, "baseAssetPrecision": 8,
        "quoteAsset": s.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT",
                       "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
        "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": _f8(parse_e8(s.tick)),
             "maxPrice": "1000000.00000000", "tickSize": _f8(parse_e8(s.tick))},
            {"filterType": "LOT_SIZE", "minQty": _f8(parse_e8(s.min_qty)),
             "maxQty": _f8(parse_e8(s.max_qty)), "stepSize": _f8(parse_e8(s.step))},
            {"filterType": "NOTIONAL", "minNotional": _f8(parse_e8(s.min_notional)),
             "applyMinToMarket": True, "maxNotional": "9000000.00000000",
             "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _order_json(o: FakeOrder) -> dict[str, object]:
    return {
        "symbol": o.symbol, "orderId": o.order_id, "orderListId": -1,
        "clientOrderId": o.client_order_id, "price": _f8(o.price_e8),
        "origQty": _f8(o.orig_qty_e8), "executedQty": _f8(o.executed_e8),
        "cummulativeQuoteQty": _f8(o.quote_e8), "status": o.status,
        "timeInForce": o.time_in_force, "type": o.type, "side": o.side,
        "stopPrice": "0.00000000", "icebergQty": "0.00000000", "time": o.time_ms,
        "updateTime": o.update_ms, "isWorking": o.type == "LIMIT",
        "workingTime": o.time_ms, "origQuoteOrderQty": "0.00000000",
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def _fill_json(f: FakeFill) -> dict[str, object]:
    return {
        "symbol": f.symbol, "id": f.trade_id, "orderId": f.order_id, "orderListId": -1,
        "price": _f8(f.price_e8), "qty": _f8(f.qty_e8), "quoteQty": _f8(f.quote_e8),
        "commission": _f8(f.commission_e8), "commissionAsset": f.commission_asset,
        "time": f.time_ms, "isBuyer": f.side == "BUY", "isMaker": f.maker,
        "isBestMatch": True,
    }


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
    args = parser.parse_args(argv)
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]

    async def run() -> None:
        async with FakeBinance(symbols=symbols, host=args.host, port=args.port,
                               api_key=args.api_key, api_secret=args.api_secret,
                               weight_limit=args.weight_limit) as fake:
            source = SyntheticSource(seed=args.seed, symbols=symbols, duration_s=86_400.0,
                                     start_ns=time.time_ns(), venue="binance")
            print(f"fake binance listening on {fake.url} (streams {fake.ws_url})", flush=True)
            await fake.feed(source.batches(), speed=1.0)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
