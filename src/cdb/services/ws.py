"""ws: market data in. Pulls batches of trades from a source and publishes them.

The source is any iterator of trade batches (synthetic, replay, Binance); ``before``
and ``pace`` (around each publish) decide how fast it is drained: in a simulated run
it advances the clock and waits for the pipeline to absorb the batch; live or at a
replay speed it waits for time.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import ClassVar

from cdb.bus.keys import MARKET_DATA
from cdb.events import Trade
from cdb.observability import metrics
from cdb.services.base import Service, ServiceContext

Pace = Callable[[list[Trade]], Awaitable[None]]


async def no_pace(batch: list[Trade]) -> None:
    """Publish as fast as the bus accepts."""


class WsService(Service):
    """Publishes the trades of a source on ``stream.market_data``."""

    name: ClassVar[str] = "ws"

    def __init__(
        self, ctx: ServiceContext, source: Iterable[list[Trade]] | AsyncIterable[list[Trade]],
        pace: Pace = no_pace, before: Pace = no_pace,
    ) -> None:
        super().__init__(ctx)
        self._source = source
        self._pace = pace
        self._before = before
        self.trades = 0
        self.last_trade_ts = 0
        self.done = False
        self._decoded = metrics.decoded_messages.labels(ctx.name, ctx.instance)
        self._published = metrics.redis_publish.labels(ctx.name, ctx.instance)

    async def produce(self) -> None:
        source = self._source
        if isinstance(source, AsyncIterable):
            # A live feed (Binance websocket) awaits its trades; files and the
            # synthetic market are produced in the loop, a batch at a time.
            async for batch in source:
                await self._emit(batch)
        else:
            for batch in source:
                await self._emit(batch)
        self.done = True
        # Tell risk the silence that follows is the end of the data, not a stale feed.
        await self.ctx.alert("info", "market_data_end",
                             f"market data source finished after {self.trades} trades")

    async def _emit(self, batch: list[Trade]) -> None:
        if not batch:
            return
        n = len(batch)
        await self._before(batch)
        self._decoded.inc(n)
        await self.ctx.publish(MARKET_DATA, batch)
        self._published.inc(n)
        self.trades += n
        self.last_trade_ts = batch[-1].ts
        await self._pace(batch)

    def status(self) -> dict[str, object]:
        return {"trades": self.trades, "last_trade_ts": self.last_trade_ts, "done": self.done}
