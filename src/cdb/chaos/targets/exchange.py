"""The fake Binance a distributed target's pipeline trades on, and its ledger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cdb.chaos.scenario.registry import Unavailable

if TYPE_CHECKING:
    from cdb.events import Trade
    from cdb.testing.fake_binance import FakeBinance


class FakeExchange:
    """The fake Binance a target's pipeline trades on: started with the target (in its
    event loop), the services' settings to reach it, and its ledger for the invariants.

    Args:
        symbols: the scenario market's symbols.
    """

    def __init__(self, symbols: tuple[str, ...] | list[str]) -> None:
        self.symbols = list(symbols)
        self.fake: FakeBinance | None = None
        self._feed: asyncio.Task[None] | None = None

    async def start(self, *, venue: bool, market: bool) -> dict[str, str]:
        """Start the fake; the environment that points execution (``venue``) and ws's
        market data (``market``) at it."""
        from cdb.testing.fake_binance import FakeBinance

        # A generous weight budget: the scenario's faults, not polling, rate-limit it.
        self.fake = FakeBinance(symbols=self.symbols, weight_limit=100_000)
        await self.fake.start()
        env = {"BINANCE_URL": self.fake.url}
        if venue:
            env.update({"EXECUTION_VENUE": "binance-testnet",
                        "BINANCE_API_KEY": self.fake.api_key,
                        "BINANCE_API_SECRET": self.fake.api_secret})
        if market:
            env["WS_SOURCE"] = "binance"
        return env

    def feed(self, batches: Iterable[list[Trade]], start_ns: int) -> None:
        """Print ``batches`` on the fake in real time from the wall time ``start_ns``."""
        fake = self.fake
        if fake is None:
            raise Unavailable("the fake exchange is not running")

        async def run() -> None:
            await asyncio.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9))
            await fake.feed(batches, speed=1.0)

        self._feed = asyncio.create_task(run(), name="chaos.fake_binance.market")

    @property
    def url(self) -> str:
        if self.fake is None:
            raise Unavailable("the fake exchange is not running")
        return self.fake.url

    def ledger(self) -> list[dict[str, Any]] | None:
        """Every execution of the fake, as the invariants read a venue's ledger (the
        venue knows client order ids only: they stand for the order ids)."""
        if self.fake is None:
            return None
        return [
            {"order_id": f.client_order_id, "client_order_id": f.client_order_id,
             "venue_fill_id": f"{f.symbol}-{f.trade_id}", "ts": f.time_ms * 1_000_000,
             "price_e8": f.price_e8, "qty_e8": f.qty_e8, "symbol": f.symbol, "side": f.side}
            for f in self.fake.fills
        ]

    async def stop(self) -> None:
        if self._feed is not None:
            self._feed.cancel()
            # Its end (cancelled or failed) is collected; a cancellation of stop itself
            # still propagates.
            await asyncio.gather(self._feed, return_exceptions=True)
        if self.fake is not None:
            await self.fake.stop()
