"""signal: runs the configured strategy over market data and publishes its signals."""

from __future__ import annotations

from typing import ClassVar

from cdb.bus.keys import MARKET_DATA, SIGNALS
from cdb.events import AnyEvent, IdGen, Signal, Trade
from cdb.observability import metrics
from cdb.services.base import Service, ServiceContext
from cdb.strategies.base import Strategy


class SignalService(Service):
    """Feeds trades to a strategy; each intent becomes a ``Signal`` event."""

    name: ClassVar[str] = "signal"
    inputs: ClassVar[tuple[str, ...]] = (MARKET_DATA,)

    def __init__(self, ctx: ServiceContext, strategy: Strategy, strategy_id: str) -> None:
        super().__init__(ctx)
        self.strategy = strategy
        self.strategy_id = strategy_id
        self.signals = 0
        self._generated = metrics.signals_generated.labels(ctx.name, ctx.instance)
        self._status = metrics.signal_engine_status.labels(ctx.name, ctx.instance)

    async def on_start(self) -> None:
        self._status.set(1)

    async def on_stop(self) -> None:
        self._status.set(0)

    async def handle(self, topic: str, events: list[AnyEvent]) -> None:
        trades: list[Trade] = events  # type: ignore[assignment]  # market_data holds trades
        intents = self.strategy.on_trades(trades)
        if not intents:
            return
        derived, source, sid = IdGen.derived, self.ctx.instance, self.strategy_id
        signals = [
            Signal(
                id=derived(i.trade.ts, f"{sid}:{i.trade.id}"), ts=i.trade.ts,
                correlation_id=i.trade.correlation_id, causation_id=i.trade.id, source=source,
                strategy_id=sid,
                symbol=i.trade.symbol, side=i.side, price_e8=i.trade.price_e8,
                trade_id=i.trade.trade_id, move_bp=i.move_bp, volume_e8=i.volume_e8,
            )
            for i in intents
        ]
        await self.ctx.publish(SIGNALS, signals)
        self.signals += len(signals)
        self._generated.inc(len(signals))

    def status(self) -> dict[str, object]:
        return {"strategy": self.strategy_id, "signals": self.signals}
