"""Binance trade streams as a market data source: websocket in, batches of ``Trade`` out.

One combined-stream connection (``/stream?streams=btcusdt@trade/...``) carries every
symbol; after a dropped connection, the 24 h disconnect or a silent feed the client
reconnects to the same URL (which resubscribes) after an exponential backoff with
jitter, reset once a connection delivers again. Pings are answered by the websocket
library, and the client pings too (``ping_interval_s``), so a half-open connection
fails within ``ping_interval_s + ping_timeout_s``.

Each trade is decoded with msgspec and its decimals parsed exactly into e8; its id is
``trade_event_id("binance", symbol, t)``, so a trade received twice (a reconnect's
overlap, a duplicated message) has one id, and within ``dedup_window`` ids per symbol
it is not published twice. Trade ids are consecutive per symbol on Binance, so a jump
is a gap (trades missed while disconnected): counted, and reported to ``on_gap``. A
trade older than the newest seen (out of order) is published and counted as late.

Staleness is measured on arrival, not on trade timestamps: a symbol without a trade for
``stale_after_s`` is stale (``stale_symbols``, a gauge, and ``on_stale``, which the
ws service turns into a ``stale_feed`` alert for the ESS); a connection silent for
``reconnect_after_s`` is presumed dead and replaced.

``batches()`` is an async generator: a reader task fills a bounded queue (the
back-pressure: a slow consumer slows reading, it does not grow memory), and each
batch is whatever arrived since the last one, up to ``batch_max``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Final, Literal, TypeVar

import msgspec
import structlog
from prometheus_client import Counter, Gauge
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from cdb.errors import DecodeError, LifecycleError
from cdb.events import Level, Trade, parse_e8, trade_event_id
from cdb.observability import metrics
from cdb.resilience.backoff import Backoff

LIVE_WS_URL: Final = "wss://stream.binance.com:9443"
TESTNET_WS_URL: Final = "wss://stream.testnet.binance.vision"
State = Literal["created", "running", "stopped"]
_T = TypeVar("_T")

_log = structlog.get_logger(component="binance_ws")
_L = ("service", "instance")
reconnects = Counter("cdb_ws_reconnects", "Websocket reconnections of the market data feed",
                     _L, registry=metrics.REGISTRY)
connected_gauge = Gauge("cdb_ws_connected", "1 while the market data websocket is connected",
                        _L, registry=metrics.REGISTRY)
gaps = Counter("cdb_ws_trade_gaps", "Jumps in exchange trade ids (trades missed)",
               (*_L, "symbol"), registry=metrics.REGISTRY)
missing = Counter("cdb_ws_missing_trades", "Trade ids skipped by the jumps", (*_L, "symbol"),
                  registry=metrics.REGISTRY)
duplicates = Counter("cdb_ws_duplicate_trades", "Trades received again and not republished",
                     (*_L, "symbol"), registry=metrics.REGISTRY)
late = Counter("cdb_ws_late_trades", "Trades received after a newer one (out of order)",
               (*_L, "symbol"), registry=metrics.REGISTRY)
stale_gauge = Gauge("cdb_ws_feed_stale", "1 while a symbol has had no trade for too long",
                    (*_L, "symbol"), registry=metrics.REGISTRY)


class Gap(msgspec.Struct, frozen=True, kw_only=True):
    """Trade ids ``after_id + 1`` to ``next_id - 1`` of ``symbol`` never arrived."""

    symbol: str
    after_id: int
    next_id: int

    @property
    def missing(self) -> int:
        return self.next_id - self.after_id - 1


class Staleness(msgspec.Struct, frozen=True, kw_only=True):
    """The set of stale symbols changed: ``symbols`` are stale now (empty: all fresh)."""

    symbols: tuple[str, ...]
    silent_s: float
    """Longest silence among them (s)."""


Hook = Callable[[Gap], Awaitable[None] | None]
AlertFn = Callable[[Level, str, str], Awaitable[object]]
StaleHook = Callable[[Staleness], Awaitable[None] | None]


class _RawTrade(msgspec.Struct, frozen=True):
    """The ``trade`` event (``M``, and the ``b``/``a`` order ids older streams carried,
    are ignored)."""

    e: str
    E: int
    s: str
    t: int
    p: str
    q: str
    T: int
    m: bool


class _Combined(msgspec.Struct, frozen=True):
    stream: str
    data: _RawTrade


class _Reply(msgspec.Struct, frozen=True):
    """A reply to a SUBSCRIBE-style request: not market data."""

    id: int | str | None
    result: object = None


_raw = msgspec.json.Decoder(_RawTrade)
_combined = msgspec.json.Decoder(_Combined)
_reply = msgspec.json.Decoder(_Reply)
_US_BELOW: Final = 10**14
"""``T`` below this is in ms; above, µs (streams opened with ``timeUnit=MICROSECOND``)."""


def to_trade(raw: _RawTrade, *, venue: str = "binance", source: str = "ws") -> Trade:
    """A decoded ``trade`` event as a ``Trade`` (exact e8; ids as in the replay source)."""
    if raw.e != "trade":
        raise DecodeError(f"not a trade event: {raw.e!r}")
    try:
        price, qty = parse_e8(raw.p), parse_e8(raw.q)
    except ValueError as exc:
        raise DecodeError(f"bad decimal in trade {raw.s}/{raw.t}: {exc}") from exc
    ts = raw.T * 1_000_000 if raw.T < _US_BELOW else raw.T * 1_000
    tid = trade_event_id(venue, raw.s, raw.t)
    return Trade(id=tid, ts=ts, correlation_id=tid, causation_id=tid, source=source,
                 venue=venue, symbol=raw.s, trade_id=raw.t, price_e8=price, qty_e8=qty,
                 buyer_maker=raw.m)


def decode_trade(payload: bytes | str, *, venue: str = "binance", source: str = "ws") -> Trade:
    """Decode a raw-stream message (``/ws/<symbol>@trade``)."""
    try:
        raw = _raw.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeError(str(exc), "binance trade stream") from exc
    return to_trade(raw, venue=venue, source=source)


def decode_combined(payload: bytes | str, *, venue: str = "binance",
                    source: str = "ws") -> Trade | None:
    """Decode a combined-stream message; None for a request's reply (not market data)."""
    try:
        raw = _combined.decode(payload).data
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        try:
            _reply.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise DecodeError(str(exc), "binance combined stream") from exc
        return None
    return to_trade(raw, venue=venue, source=source)


def stream_url(base: str, symbols: Iterable[str]) -> str:
    """The combined trade stream URL of ``symbols`` at ``base`` (``ws://``/``wss://``;
    ``http://``/``https://`` are turned into their websocket schemes)."""
    base = base.rstrip("/")
    for plain, secure in (("http://", "ws://"), ("https://", "wss://")):
        if base.startswith(plain):
            base = secure + base[len(plain):]
    streams = "/".join(f"{s.lower()}@trade" for s in symbols)
    return f"{base}/stream?streams={streams}"


class _Seen:
    """Trade ids seen of one symbol: the newest, and a window of recent ones."""

    __slots__ = ("ids", "newest", "order", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.newest = -1
        self.ids: set[int] = set()
        self.order: deque[int] = deque()

    def add(self, tid: int) -> None:
        self.ids.add(tid)
        self.order.append(tid)
        if len(self.order) > self.window:
            self.ids.discard(self.order.popleft())
        self.newest = max(self.newest, tid)


class BinanceTradeSource:
    """Binance ``<symbol>@trade`` streams as an async iterable of ``Trade`` batches.

    Args:
        symbols: the symbols to subscribe to (``BTCUSDT``).
        url: stream base URL (live by default; ``TESTNET_WS_URL``; FakeBinance's).
        venue: venue of the trades (part of their ids); source: the events' ``source``.
        batch_max: most trades per batch; queue_max: trades buffered ahead of the consumer.
        backoff_base_s, backoff_cap_s, jitter: reconnect backoff.
        stale_after_s: a symbol without trades this long is stale (0 disables).
        reconnect_after_s: a connection without any message this long is replaced.
        dedup_window: trade ids remembered per symbol to drop duplicates.
        ping_interval_s, ping_timeout_s, open_timeout_s: websocket keepalive and handshake.
        on_gap, on_stale: hooks (sync or async) for gaps and staleness changes.
        clock: monotonic seconds; rng: backoff jitter.
        service, instance: metric labels.
    """

    def __init__(
        self, symbols: Iterable[str], *, url: str = LIVE_WS_URL, venue: str = "binance",
        source: str = "ws", batch_max: int = 1000, queue_max: int = 100_000,
        backoff_base_s: float = 0.5, backoff_cap_s: float = 30.0, jitter: float = 0.5,
        stale_after_s: float = 30.0, reconnect_after_s: float = 60.0,
        dedup_window: int = 10_000, ping_interval_s: float | None = 20.0,
        ping_timeout_s: float | None = 20.0, open_timeout_s: float = 10.0,
        on_gap: Hook | None = None, on_stale: StaleHook | None = None,
        clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
        service: str = "ws", instance: str = "",
    ) -> None:
        self.symbols = tuple(dict.fromkeys(s.upper() for s in symbols))
        if not self.symbols:
            raise ValueError("BinanceTradeSource needs at least one symbol")
        self.url = stream_url(url, self.symbols)
        self.venue, self.source = venue, source
        self.batch_max, self.queue_max = batch_max, queue_max
        self.stale_after_s, self.reconnect_after_s = stale_after_s, reconnect_after_s
        self.dedup_window = dedup_window
        self.ping_interval_s, self.ping_timeout_s = ping_interval_s, ping_timeout_s
        self.open_timeout_s = open_timeout_s
        self.on_gap, self.on_stale = on_gap, on_stale
        self._clock = clock
        self._backoff = Backoff(backoff_base_s, backoff_cap_s, jitter=jitter, rng=rng)
        self._labels = (service, instance or source)
        self.state: State = "created"
        self.connected = False
        self.connects = 0
        self.decode_errors = 0
        self.duplicates = 0
        self.late = 0
        self.gaps: list[Gap] = []
        self.stale_symbols: frozenset[str] = frozenset()
        self.last_error = ""
        self._seen = {s: _Seen(dedup_window) for s in self.symbols}
        self._arrived: dict[str, float] = {}

    def attach_alerts(self, alert: AlertFn) -> None:
        """Report gaps and staleness as alerts (``ServiceContext.alert``): a stale feed is
        a ``stale_feed`` warning, which the risk service's ESS trips on; fresh again is
        ``market_data_fresh`` (info); a gap is ``market_data_gap`` (warning)."""

        async def on_gap(gap: Gap) -> None:
            await alert("warning", "market_data_gap",
                        f"{gap.missing} {gap.symbol} trade(s) missed after id {gap.after_id}")

        async def on_stale(change: Staleness) -> None:
            if change.symbols:
                await alert("warning", "stale_feed",
                            f"no trade for {change.silent_s:.1f} s on "
                            f"{', '.join(change.symbols)} (binance stream)")
            else:
                await alert("info", "market_data_fresh", "binance stream: trades again")

        self.on_gap, self.on_stale = on_gap, on_stale

    def __aiter__(self) -> AsyncIterator[list[Trade]]:
        return self.batches()

    async def batches(self) -> AsyncIterator[list[Trade]]:
        """Connect and yield batches of new trades until the consumer stops (one use)."""
        if self.state != "created":
            raise LifecycleError(f"BinanceTradeSource is {self.state}; make a new one")
        self.state = "running"
        queue: asyncio.Queue[Trade] = asyncio.Queue(self.queue_max)
        now = self._clock()
        self._arrived = dict.fromkeys(self.symbols, now)
        tasks = [asyncio.create_task(self._read(queue), name="binance_ws.read"),
                 asyncio.create_task(self._watch(), name="binance_ws.watch")]
        try:
            while True:
                first = await queue.get()
                drained = [first]
                while len(drained) < self.batch_max and not queue.empty():
                    drained.append(queue.get_nowait())
                batch = await self._accept(drained)
                if batch:
                    yield batch
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.state = "stopped"
            self._set_connected(False)

    async def probe(self) -> None:
        """Health probe: raises while disconnected or stale."""
        if not self.connected:
            raise ConnectionError(f"binance stream disconnected: {self.last_error or 'starting'}")
        if self.stale_symbols:
            raise ConnectionError(f"no trades for {', '.join(sorted(self.stale_symbols))}")

    # consumer side ---------------------------------------------------------------------------

    async def _accept(self, drained: list[Trade]) -> list[Trade]:
        """Drop duplicates, detect gaps and late trades; the trades to publish."""
        # Within one read, order by exchange id so an adjacent swap is no gap.
        drained.sort(key=lambda t: (t.ts, t.trade_id))
        out: list[Trade] = []
        found: list[Gap] = []
        for trade in drained:
            seen = self._seen.get(trade.symbol)
            if seen is None:
                seen = self._seen[trade.symbol] = _Seen(self.dedup_window)
            tid = trade.trade_id
            if tid in seen.ids or (seen.newest >= 0 and tid <= seen.newest - self.dedup_window):
                self.duplicates += 1
                duplicates.labels(*self._labels, trade.symbol).inc()
                continue
            if seen.newest >= 0:
                if tid > seen.newest + 1:
                    found.append(Gap(symbol=trade.symbol, after_id=seen.newest, next_id=tid))
                elif tid < seen.newest:
                    self.late += 1
                    late.labels(*self._labels, trade.symbol).inc()
            seen.add(tid)
            out.append(trade)
        for gap in found:
            self.gaps.append(gap)
            gaps.labels(*self._labels, gap.symbol).inc()
            missing.labels(*self._labels, gap.symbol).inc(gap.missing)
            _log.warning("trade ids skipped", symbol=gap.symbol, after=gap.after_id,
                         next=gap.next_id, missing=gap.missing)
            await _call(self.on_gap, gap)
        return out

    # reader side -----------------------------------------------------------------------------

    async def _read(self, queue: asyncio.Queue[Trade]) -> None:
        failures = 0
        while True:
            delivered = False
            try:
                async with connect(
                    self.url, ping_interval=self.ping_interval_s,
                    ping_timeout=self.ping_timeout_s, open_timeout=self.open_timeout_s,
                    close_timeout=1.0, max_size=2**20,
                ) as ws:
                    self.connects += 1
                    if self.connects > 1:
                        reconnects.labels(*self._labels).inc()
                    self._set_connected(True)
                    _log.info("connected", url=self.url, connects=self.connects)
                    async with contextlib.aclosing(self._messages(ws)) as messages:
                        async for message in messages:
                            delivered = True
                            trade = self._receive(message)
                            if trade is not None:
                                await queue.put(trade)  # waits while the consumer is behind
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, InvalidURI) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self._set_connected(False)
            if delivered:
                failures = 0  # a connection that worked starts the backoff afresh
            failures += 1
            delay = self._backoff.compute(failures)
            _log.warning("disconnected; reconnecting", error=self.last_error,
                         delay_s=round(delay, 3), failures=failures)
            await asyncio.sleep(delay)

    async def _messages(self, ws: ClientConnection) -> AsyncGenerator[str | bytes, None]:
        """Messages until the connection ends or stays silent ``reconnect_after_s``."""
        while True:
            try:
                yield await asyncio.wait_for(ws.recv(), self.reconnect_after_s)
            except TimeoutError:
                self.last_error = f"no message for {self.reconnect_after_s:g} s"
                return

    def _receive(self, message: str | bytes) -> Trade | None:
        try:
            trade = decode_combined(message, venue=self.venue, source=self.source)
        except DecodeError as exc:
            self.decode_errors += 1
            metrics.decode_errors.labels(*self._labels).inc()
            _log.warning("undecodable message skipped", error=str(exc))
            return None
        if trade is not None:
            self._arrived[trade.symbol] = self._clock()
        return trade

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        connected_gauge.labels(*self._labels).set(1 if up else 0)

    async def _watch(self) -> None:
        """Staleness: checked on a timer, so it is seen while disconnected too."""
        if self.stale_after_s <= 0:
            return
        tick = min(1.0, self.stale_after_s / 4)
        while True:
            await asyncio.sleep(tick)
            now = self._clock()
            silent = {s: now - t for s, t in self._arrived.items()}
            stale = frozenset(s for s, quiet in silent.items() if quiet > self.stale_after_s)
            if stale == self.stale_symbols:
                continue
            for symbol in stale ^ self.stale_symbols:
                stale_gauge.labels(*self._labels, symbol).set(1 if symbol in stale else 0)
            self.stale_symbols = stale
            longest = max((silent[s] for s in stale), default=0.0)
            _log.warning("feed stale" if stale else "feed fresh again",
                         symbols=sorted(stale), silent_s=round(longest, 1))
            await _call(self.on_stale, Staleness(symbols=tuple(sorted(stale)), silent_s=longest))


async def _call(hook: Callable[[_T], Awaitable[None] | None] | None, arg: _T) -> None:
    """Run a hook; its failure is logged, never the reader's end."""
    if hook is None:
        return
    try:
        result = hook(arg)
        if inspect.isawaitable(result):
            await result
    except Exception:
        _log.exception("hook failed", hook=getattr(hook, "__name__", repr(hook)))


def make_binance_source(
    symbols: Iterable[str], *, exchange_url: str | None = None, testnet: bool = False,
    source: str = "ws", alert: AlertFn | None = None, **overrides: Any,
) -> BinanceTradeSource:
    """The ``binance`` market data source of ``cdb run --source binance``.

    Args:
        symbols: ``Settings.symbols()``.
        exchange_url: ``--exchange-url`` (FakeBinance's ``http://`` URL works as is);
            otherwise Binance's live streams, or the testnet's with ``testnet``.
        source: the service instance (events' ``source``, metric label).
        alert: ``ServiceContext.alert`` to report gaps and stale feeds (or attach later
            with ``attach_alerts``).
        overrides: other ``BinanceTradeSource`` keywords (stale_after_s, ...).
    """
    url = exchange_url or (TESTNET_WS_URL if testnet else LIVE_WS_URL)
    made = BinanceTradeSource(symbols, url=url, source=source, instance=source, **overrides)
    if alert is not None:
        made.attach_alerts(alert)
    return made
