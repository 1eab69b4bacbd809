"""Exchange faults on the fake Binance: error codes, rate limits, bans, timeouts,
partial fills, dropped streams.

They go through FakeBinance's control API (``POST /_fake/faults``, one fault for the
step's duration; ``GET /_fake/faults`` tells how often it fired, which is the effect
check; ``DELETE`` clears). That needs a pipeline whose execution venue is the fake
(``pipeline.venue: fake-binance``) and a target that started one (``exchange_url``):
the distributed target runs ``targets.exchange.FakeExchange`` beside its services, which trade on it
through ``EXECUTION_VENUE=binance-testnet`` and ``BINANCE_URL``; with
``pipeline.market.source: fake-binance`` the scenario's market prints on the fake and
ws reads it from the websocket (``WS_SOURCE=binance``), so ``disconnect`` reaches it.
The embedded
target has none (its venue runs on simulated time, the fake on the wall clock): the
fault is distributed-only, and a target without a fake makes it ``Unavailable``, so the
run ends ``unknown`` with that reason: never a pass on a fault that was not injected.
"""

from __future__ import annotations

from typing import Any, Final

import httpx

from cdb.chaos.faults.base import ScenarioFault
from cdb.chaos.history.recording import Effect
from cdb.chaos.scenario.registry import FAULTS, P, Unavailable

CONTROL_PATH: Final = "/_fake/faults"


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
