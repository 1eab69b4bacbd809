"""Signal floods: N signals in T seconds, published on the bus as a strategy would.

Each flood signal is a real ``Signal`` event (strategy ``chaos-flood``) priced at the
last trade the coordinator saw and chained to that trade (correlation and causation
ids), so risk decides on it like on any other and its audit chain is complete. The
effect is that all N were published.
"""

from __future__ import annotations

from typing import Any

from cdb.bus.keys import SIGNALS
from cdb.chaos.faults.base import ScenarioFault
from cdb.chaos.history.recording import Effect
from cdb.chaos.scenario.registry import FAULTS, P, Unavailable
from cdb.events import AnyEvent, IdGen, Signal

FLOOD_STRATEGY = "chaos-flood"


@FAULTS.register("signal_flood", summary="publish `count` signals spread evenly over `over`",
                 params={"count": P.integer(minimum=1, maximum=100_000),
                         "over": P.duration("the flood's length"),
                         "symbol": P.string("the symbol (default: the first market symbol)"),
                         "side": P.string("BUY, SELL or alternate",
                                          enum=["BUY", "SELL", "alternate"]),
                         "strategy_id": P.string()},
                 required=("count", "over"))
class SignalFlood(ScenarioFault):
    def effect_delay(self) -> float:
        return self.p.duration("over")

    async def apply(self) -> Any:
        ctx = self.ctx
        target = ctx.target
        count = self.p.integer("count")
        over = self.p.duration("over")
        symbol = self.p.text("symbol", ctx.plan.scenario.pipeline.market.symbols[0])
        side_mode = self.p.text("side", "BUY")
        strategy = self.p.text("strategy_id", FLOOD_STRATEGY)
        ids = IdGen(f"{target.namespace}.chaos")
        start = ctx.clock.now()
        self.published = 0
        self.ids: list[str] = []
        for i in range(count):
            await ctx.clock.sleep_until(start + over * i / count)
            trade = ctx.recording.last_trade.get(symbol)
            if trade is None:
                raise Unavailable(f"no {symbol} trade seen yet to price the flood on")
            # The pipeline's time now: in distributed mode a batch of trades can run
            # ahead of the wall clock, and a signal is made now, not in the future.
            ts = target.now_ns()
            side: Any = side_mode if side_mode != "alternate" else ("BUY", "SELL")[i % 2]
            signal = Signal(
                id=ids.next(ts), ts=ts, correlation_id=trade.correlation_id,
                causation_id=trade.id, source=f"{target.namespace}.chaos",
                strategy_id=strategy, symbol=symbol, side=side, price_e8=trade.price_e8,
                trade_id=trade.trade_id, move_bp=0, volume_e8=0,
            )
            events: list[AnyEvent] = [signal]
            await target.publish(SIGNALS, events)
            self.published += 1
            self.ids.append(signal.id)
        self.evidence.append(f"published {self.published} {symbol} signals over {over:g}s")
        return self.evidence[-1]

    async def effect(self) -> Effect:
        count = self.p.integer("count")
        published = getattr(self, "published", 0)
        return Effect(took_effect=published == count,
                      evidence=f"{published} of {count} flood signals published")
