"""Fixtures of the Binance tests: a FakeBinance on a free port per test, venue and stream
clients pointed at it (short timeouts and backoffs, so every fault resolves in a
second or two), and an ``eventually`` helper."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from cdb.events import SCALE, Order, Trade, parse_e8
from cdb.marketdata.binance import BinanceTradeSource
from cdb.testing.fake_binance import FakeBinance
from cdb.venues.binance import BinanceVenue, BinanceVenueConfig

Eventually = Callable[..., Awaitable[object]]

try:
    import ccxt  # noqa: F401 - only whether it is there
except ImportError:  # pragma: no cover - depends on the install
    pytest.exit("the Binance tests need ccxt: pip install -e '.[binance]' -c constraints.txt",
                returncode=3)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(symbols=["BTCUSDT", "ETHUSDT"]) as server:
        yield server


@pytest.fixture
def eventually() -> Eventually:
    """``await eventually(fn, within)``: call ``fn`` (sync or async) until truthy."""

    async def wait(fn: Callable[[], Any], within: float = 5.0) -> object:
        deadline = time.monotonic() + within
        while True:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {within} s: {result!r}")
            await asyncio.sleep(0.01)

    return wait


class Alerts(list[tuple[str, str, str]]):
    """Records ``(level, code, message)`` of a venue's alerts."""

    async def __call__(self, level: str, code: str, message: str) -> None:
        self.append((level, code, message))

    def codes(self) -> list[str]:
        return [code for _, code, _ in self]


@pytest.fixture
def alerts() -> Alerts:
    return Alerts()


@pytest.fixture
async def make_venue(
    fake: FakeBinance, alerts: Alerts,
) -> AsyncIterator[Callable[..., Awaitable[BinanceVenue]]]:
    """Started venues against ``fake`` (closed at teardown); keywords override config."""
    made: list[BinanceVenue] = []

    async def make(**overrides: Any) -> BinanceVenue:
        fields: dict[str, Any] = {
            "rest_url": fake.url, "timeout_s": 0.5, "backoff_base_s": 0.02,
            "backoff_cap_s": 0.1, "resolve_window_s": 0.6, "resolve_interval_s": 0.1,
            "resolve_give_up_s": 3.0, "poll_interval_s": 0.0, **overrides,
        }
        venue = BinanceVenue(BinanceVenueConfig(**fields), api_key=fake.api_key,
                             api_secret=fake.api_secret, alert=alerts)
        made.append(venue)
        await venue.start()
        return venue

    yield make
    for venue in made:
        await venue.aclose()


@pytest.fixture
async def make_source() -> AsyncIterator[Callable[..., tuple[BinanceTradeSource, list[Trade]]]]:
    """Stream sources consumed by a background task into a list (stopped at teardown)."""
    tasks: list[asyncio.Task[None]] = []

    def make(url: str, symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
             **kwargs: Any) -> tuple[BinanceTradeSource, list[Trade]]:
        options: dict[str, Any] = {"backoff_base_s": 0.02, "backoff_cap_s": 0.1,
                                   "stale_after_s": 5.0, **kwargs}
        source = BinanceTradeSource(symbols, url=url, **options)
        received: list[Trade] = []

        async def consume() -> None:
            async with contextlib.aclosing(source.batches()) as batches:
                async for batch in batches:
                    received.extend(batch)

        tasks.append(asyncio.create_task(consume(), name="test.consume"))
        return source, received

    yield make
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def order(n: int | str, qty: str = "0.01", *, side: str = "BUY", kind: str = "MARKET",
          price: str = "0", symbol: str = "BTCUSDT", ts: int = 2**62) -> Order:
    """A cdb order as risk makes them (``ts`` far ahead: no predecessor look-up)."""
    return Order(
        id=f"o{n}", ts=ts, correlation_id="t", causation_id="s", source="risk",
        client_order_id=f"cdb-test-{n}", symbol=symbol, side=side, order_type=kind,  # type: ignore[arg-type]
        qty_e8=parse_e8(qty), price_e8=parse_e8(price), ref_price_e8=42_000 * SCALE,
    )
