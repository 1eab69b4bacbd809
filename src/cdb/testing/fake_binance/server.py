"""The fake Binance's server: REST and trade streams on one local port, and a control API.

Starlette on uvicorn serves both faces, so one URL (``--exchange-url``) points a REST
client and a stream client at it. ``FakeBinance`` owns the engine (``exchange``), the
faults (``faults``) and the lifecycle, and composes the jobs in front of them: the REST
front (``rest``: limits, bans, signatures, REST faults), the trade streams
(``streams``) and the control API under ``/_fake`` (``control``). The control API
listens on loopback unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import socket
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Final, Literal

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute

from cdb.errors import LifecycleError
from cdb.events import Trade, parse_e8
from cdb.testing.fake_binance.control import Control
from cdb.testing.fake_binance.exchange import Exchange
from cdb.testing.fake_binance.faults import Fault, FaultBook, FaultState
from cdb.testing.fake_binance.records import FakeFill, FakeOrder, SymbolInfo
from cdb.testing.fake_binance.rest import RestFront
from cdb.testing.fake_binance.streams import Streams

State = Literal["created", "running", "stopping", "stopped"]
_MS_NS: Final = 1_000_000
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
                                 now_ms=self.server_ms, rate_limits=self._rate_limits)
        self.faults = FaultBook()
        self.stats = FakeStats()
        self.order_arrivals: list[str] = []
        """``newClientOrderId`` of every order request received, whatever became of it."""
        self.rest = RestFront(self)
        self.streams = Streams(self)
        self._trade_ids: dict[str, Iterator[int]] = {}
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
        self.streams.drop(1001)
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
            *Control(self).routes(),
            Route("/api/{rest:path}", self.rest.serve, methods=methods),
            WebSocketRoute("/ws", self.streams.serve),
            WebSocketRoute("/ws/{streams:path}", self.streams.serve),
            WebSocketRoute("/stream", self.streams.serve),
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

    async def hold(self, seconds: float) -> None:
        """Wait ``seconds`` (0: until the fake stops), released early by ``stop``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds or None)

    # market data -----------------------------------------------------------------------

    async def publish(self, trades: Iterable[Trade]) -> None:
        """Trades print: prices move, resting orders fill, stream subscribers are told."""
        for trade in trades:
            self.exchange.match(trade)
            for out in self.streams.filter(trade):
                self.streams.broadcast(out)
        await asyncio.sleep(0)

    def trade(self, symbol: str, price: str, qty: str = "0.01", trade_id: int | None = None,
              ts_ms: int | None = None, buyer_maker: bool = False) -> Trade:
        """A market trade for ``publish`` (ids count up per symbol from 1)."""
        if trade_id is None:
            trade_id = next(self._trade_ids.setdefault(symbol, itertools.count(1)))
        ts = (ts_ms if ts_ms is not None else self.server_ms()) * _MS_NS
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
        return self.streams.drop(code)

    # the server's clock and limits ------------------------------------------------------

    def server_ms(self) -> int:
        """The server time in ms (``clock_ms`` moved by ``skew_ms``)."""
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
