"""Exchange faults on the fake Binance: error codes, rate limits, bans, timeouts,
partial fills, dropped streams.

They go through FakeBinance's control API (``POST /_fake/faults``, one fault for the
step's duration; ``GET /_fake/faults`` tells how often it fired, which is the effect
check; ``DELETE`` clears). That needs a pipeline whose execution venue is the fake
(``pipeline.venue: fake-binance``) and a target that started one (``exchange_url``):
the distributed target runs ``FakeExchange`` beside its services, which trade on it
through ``EXECUTION_VENUE=binance-testnet`` and ``BINANCE_URL``; with
``pipeline.market.source: fake-binance`` the scenario's market prints on the fake and
ws reads it from the websocket (``WS_SOURCE=binance``), so ``disconnect`` reaches it.
The embedded
target has none (its venue runs on simulated time, the fake on the wall clock): the
fault is distributed-only, and a target without a fake makes it ``Unavailable``, so the
run ends ``unknown`` with that reason: never a pass on a fault that was not injected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import httpx

from cdb.chaos.faults.base import ScenarioFault
from cdb.chaos.run.recording import Effect
from cdb.chaos.scenario.registry import FAULTS, P, Unavailable

if TYPE_CHECKING:
    from cdb.events import Trade
    from cdb.testing.fake_binance import FakeBinance

CONTROL_PATH: Final = "/_fake/faults"


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


ERRORS: Final[dict[str, dict[str, Any]]] = {
    "-1003": {"kind": "rate_limit"},
    "-1015": {"kind": "order_rate_limit"},
    "429": {"kind": "rate_limit"},
    "418": {"kind": "ban"},
    "5xx": {"kind": "server_error", "status": 503},
    "timeout": {"kind": "timeout"},
    "partial_fill": {"kind": "partial_fill", "fill_ratio": 0.5, "parts": 2},
    "disconnect": {"kind": "ws_drop"},
}


@FAULTS.register("exchange", summary="a fault of the (fake) exchange: Binance error codes "
                 "-1003/-1015, HTTP 429 with Retry-After, 418 ban, 5xx, timeouts, partial "
                 "fills, dropped streams",
                 params={"error": P.string("which fault", enum=list(ERRORS)),
                         "endpoint": P.string("'*' or 'METHOD /path' (default every request)"),
                         "retry_after": P.duration("Retry-After of 429/418"),
                         "delay": P.duration("how long a timeout holds the request"),
                         "fill_ratio": P.number("share of the quantity a partial fill fills",
                                                exclusive_minimum=0, maximum=1)},
                 required=("error",), modes=("distributed",))
class ExchangeFault(ScenarioFault):
    def _fault(self) -> dict[str, Any]:
        body: dict[str, Any] = {**ERRORS[self.p.text("error")], "times": None,
                                "endpoint": self.p.text("endpoint", "*")}
        if self.ctx.duration is not None:
            body["duration_s"] = self.ctx.duration
        if "retry_after" in self.p.raw:
            body["retry_after_s"] = self.p.duration("retry_after")
        if "delay" in self.p.raw:
            body["delay_s"] = self.p.duration("delay")
        if "fill_ratio" in self.p.raw:
            body["fill_ratio"] = self.p.number("fill_ratio")
        return body

    async def apply(self) -> Any:
        pipe = self.ctx.plan.scenario.pipeline
        if pipe.venue != "fake-binance" and pipe.market.source != "fake-binance":
            raise Unavailable("exchange faults need pipeline.venue or pipeline.market.source "
                              "fake-binance")
        url = self.ctx.target.exchange_url()
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            r = await client.post(CONTROL_PATH, json=self._fault())
            r.raise_for_status()
            self.fault_id = int(r.json()["id"])
        self.evidence.append(f"exchange fault {self.p.text('error')} injected")
        return self.evidence[-1]

    async def _fired(self) -> int:
        async with httpx.AsyncClient(base_url=self.ctx.target.exchange_url(), timeout=5) as c:
            r = await c.get(CONTROL_PATH)
            r.raise_for_status()
        return sum(int(s.get("fired", 0)) for s in r.json() if s.get("id") == self.fault_id)

    async def undo(self) -> Any:
        async with httpx.AsyncClient(base_url=self.ctx.target.exchange_url(), timeout=5) as c:
            (await c.delete(CONTROL_PATH)).raise_for_status()
        return "exchange faults cleared"

    async def effect(self) -> Effect:
        fired = await self._fired()
        return Effect(took_effect=fired > 0 or None,
                      evidence=f"the fake exchange applied it to {fired} request(s)")
