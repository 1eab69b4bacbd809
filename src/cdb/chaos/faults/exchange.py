"""Exchange faults on the fake Binance: error codes, rate limits, bans, timeouts,
partial fills.

These need ``cdb.testing.fake_binance`` (issue 6) and a pipeline whose execution
venue is that fake. Until both exist the fault raises ``Unavailable`` and the run
ends ``unknown`` with that reason: never a pass on a fault that was not injected.
When FakeBinance lands, ``CONTROL`` is the one place to connect its fault control
API: a coroutine function ``(target, error, params) -> undo coroutine function``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from cdb.chaos.faults.base import Fault
from cdb.chaos.journal import Effect
from cdb.chaos.registry import CAPABILITIES, FAULTS, P, Unavailable

ERRORS: Final = ["-1003", "-1015", "429", "418", "5xx", "timeout", "partial_fill", "disconnect"]

UndoFn = Callable[[], Awaitable[Any]]
Control = Callable[[Any, str, dict[str, Any]], Awaitable[UndoFn]]
CONTROL: Control | None = None
"""How to inject one fault into the fake exchange; set when issue 6 lands."""


@FAULTS.register("exchange", summary="a fault of the (fake) exchange: Binance error codes "
                 "-1003/-1015, HTTP 429 with Retry-After, 418 ban, 5xx, timeouts, partial "
                 "fills, dropped sockets",
                 params={"error": P.string("which fault", enum=ERRORS),
                         "retry_after": P.duration("Retry-After of 429/418"),
                         "rate": P.number("share of requests affected", minimum=0, maximum=1),
                         "fill_ratio": P.number("share of the quantity a partial fill fills",
                                                exclusive_minimum=0, maximum=1)},
                 required=("error",), requires=("fake_binance",))
class ExchangeFault(Fault):
    async def apply(self) -> Any:
        missing = CAPABILITIES.missing(["fake_binance"])
        if missing:
            raise Unavailable("; ".join(missing))
        if self.ctx.plan.scenario.pipeline.venue != "fake-binance":
            raise Unavailable("exchange faults need pipeline.venue: fake-binance")
        if CONTROL is None:
            raise Unavailable("FakeBinance exists but the coordinator has no fault control "
                              "for it yet (cdb.chaos.faults.exchange.CONTROL)")
        self._undo = await CONTROL(self.ctx.target, self.p.str("error"), dict(self.p.raw))
        self.evidence.append(f"exchange fault {self.p.str('error')} injected")
        return self.evidence[-1]

    async def undo(self) -> Any:
        undo = getattr(self, "_undo", None)
        return await undo() if undo is not None else None

    async def effect(self) -> Effect:
        # Until the fake reports which requests it failed, the effect cannot be shown.
        return Effect(took_effect=None, evidence="the fake exchange reports no fault counts")
