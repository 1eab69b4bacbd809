"""Market shapes as faults: flash crash, spike, gap, stale feed, flat price.

A shape is part of the synthetic market, so it is planned before the pipeline
starts (``plan`` adds it at the step's time) and ``apply`` has nothing to do. Its
effect is checked on what the coordinator saw on the bus: the price really fell by
the percentage within the window, the feed really went silent.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cdb.chaos.faults.base import ScenarioFault
from cdb.chaos.history.recording import Effect, PricePoint
from cdb.chaos.scenario.registry import FAULTS, P, Unavailable
from cdb.chaos.targets.base import Plan
from cdb.marketdata.shapes import Shape, ShapeKind

_SYMBOL = P.string("the symbol (or * for every symbol)")
_HOLD_MIN_S = 1.0


class _ShapeFault(ScenarioFault):
    kind: ClassVar[ShapeKind]
    magnitude_key: ClassVar[str | None] = None
    sign: ClassVar[float] = 1.0
    unavailable: str = ""
    """Why it cannot be injected in this run (a running pipeline's market is its own)."""

    def _over(self) -> float:
        return self.p.duration("over")

    def effect_delay(self) -> float:
        over = self._over()
        return over + max(_HOLD_MIN_S, 0.2 * over) / 2

    def plan(self, plan: Plan) -> None:
        magnitude = self.sign * self.p.number(self.magnitude_key) if self.magnitude_key else 0.0
        plan.shapes.append(Shape(
            kind=self.kind, symbol=self.p.text("symbol"), at_s=plan.warmup + self.ctx.at,
            duration_s=self._over(), magnitude_pct=magnitude,
        ))

    async def apply(self) -> Any:
        if self.unavailable:
            raise Unavailable(self.unavailable)
        return f"{self.kind} of {self.p.text('symbol')} at t={self.ctx.at:g}s (in the market)"

    def _points(self, symbol: str) -> list[PricePoint]:
        return self.ctx.recording.prices.get(symbol, [])

    def _symbols(self) -> list[str]:
        symbol = self.p.text("symbol")
        if symbol == "*":
            return list(self.ctx.plan.scenario.pipeline.market.symbols)
        return [symbol]

    def _reference(self, points: list[PricePoint]) -> int | None:
        before = [p for p in points if p.t < self.ctx.at]
        return before[-1].close if before else None

    def _window(self, points: list[PricePoint], start: float, end: float) -> list[PricePoint]:
        return [p for p in points if start <= p.t <= end]

    async def effect(self) -> Effect:
        results = [self._check(s) for s in self._symbols()]
        ok = all(r[0] for r in results)
        unknown = any(r[0] is None for r in results)
        return Effect(took_effect=None if unknown else ok,
                      evidence="; ".join(r[1] for r in results))

    def _check(self, symbol: str) -> tuple[bool | None, str]:
        raise NotImplementedError


@FAULTS.register("flash_crash", summary="the price falls drop_pct % over `over`, then "
                 "recovers half", params={"symbol": _SYMBOL, "drop_pct": P.number(
                     exclusive_minimum=0, maximum=99), "over": P.duration("the fall's length")},
                 required=("symbol", "drop_pct", "over"))
class FlashCrash(_ShapeFault):
    kind = "flash_crash"
    magnitude_key = "drop_pct"

    def _check(self, symbol: str) -> tuple[bool | None, str]:
        points = self._points(symbol)
        ref = self._reference(points)
        window = self._window(points, self.ctx.at, self.ctx.at + self.effect_delay())
        if ref is None or not window:
            return None, f"{symbol}: no trades seen around the crash"
        low = min(p.low for p in window)
        drop = (ref - low) * 100 / ref
        want = self.p.number("drop_pct")
        return drop >= want * 0.99, f"{symbol} fell {drop:.2f}% (from {ref / 1e8:g} to " \
                                    f"{low / 1e8:g}); asked {want:g}%"


@FAULTS.register("spike", summary="the price rises rise_pct % over `over`, then falls back",
                 params={"symbol": _SYMBOL, "rise_pct": P.number(exclusive_minimum=0),
                         "over": P.duration()}, required=("symbol", "rise_pct", "over"))
class Spike(_ShapeFault):
    kind = "spike"
    magnitude_key = "rise_pct"

    def _check(self, symbol: str) -> tuple[bool | None, str]:
        points = self._points(symbol)
        ref = self._reference(points)
        window = self._window(points, self.ctx.at, self.ctx.at + self.effect_delay())
        if ref is None or not window:
            return None, f"{symbol}: no trades seen around the spike"
        high = max(p.high for p in window)
        rise = (high - ref) * 100 / ref
        want = self.p.number("rise_pct")
        return rise >= want * 0.99, f"{symbol} rose {rise:.2f}%; asked {want:g}%"


class _SilentFault(_ShapeFault):
    def effect_delay(self) -> float:
        return self._over() + 1.0

    def _check(self, symbol: str) -> tuple[bool | None, str]:
        points = self._points(symbol)
        start, end = self.ctx.at + 0.5, self.ctx.at + self._over() - 0.5
        if not points or points[-1].t < end:
            return None, f"{symbol}: the recording does not reach the end of the silence"
        inside = sum(p.trades for p in self._window(points, start, end - 0.5))
        return inside == 0, f"{symbol}: {inside} trades during the {self._over():g}s silence"


@FAULTS.register("gap", summary="no trades for `over`, then the price has jumped jump_pct %",
                 params={"symbol": _SYMBOL, "over": P.duration(), "jump_pct": P.number(
                     exclusive_minimum=-99)}, required=("symbol", "over"))
class Gap(_SilentFault):
    kind = "gap"
    magnitude_key = "jump_pct"

    def plan(self, plan: Plan) -> None:
        if "jump_pct" not in self.p.raw:
            self.p.raw["jump_pct"] = 0.0
        super().plan(plan)


@FAULTS.register("stale", summary="the feed goes silent for `over` (no trades at all)",
                 params={"symbol": _SYMBOL, "over": P.duration()}, required=("symbol", "over"))
class Stale(_SilentFault):
    kind = "stale"


@FAULTS.register("flat", summary="trades go on at one constant price for `over`",
                 params={"symbol": _SYMBOL, "over": P.duration()}, required=("symbol", "over"))
class Flat(_ShapeFault):
    kind = "flat"

    def _check(self, symbol: str) -> tuple[bool | None, str]:
        window = self._window(self._points(symbol), self.ctx.at + 0.5,
                              self.ctx.at + self._over() - 0.5)
        if not window:
            return None, f"{symbol}: no trades during the flat period"
        prices = {p.low for p in window} | {p.high for p in window}
        return len(prices) == 1, f"{symbol}: {len(prices)} distinct prices while flat"
