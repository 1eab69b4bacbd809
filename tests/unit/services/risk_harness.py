"""Test helpers for the risk service: a bus that records what is published, and a
harness driving a ``RiskService`` on the simulated clock."""

from __future__ import annotations

from collections.abc import Sequence

from cdb.bus.keys import ALERTS_STREAM, FILLS, MARKET_DATA, ORDERS, RISK_EVENTS, SIGNALS
from cdb.clock import SimClock
from cdb.errors import BusError
from cdb.events import (
    SCALE,
    Alert,
    AnyEvent,
    Fill,
    Order,
    OrderUpdate,
    RiskDecision,
    Signal,
    Trade,
)
from cdb.risk.ess import EssConfig
from cdb.risk.limits import RiskLimits
from cdb.risk.persistence import MemoryEssStore
from cdb.services.base import ServiceContext
from cdb.services.risk import RiskService

S = 1_000_000_000
T0 = 1_704_067_200 * S


class RecordingBus:
    """Publishes into lists; optionally fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.topics: dict[str, list[AnyEvent]] = {}
        self.failing = False

    async def publish(self, topic: str, events: Sequence[AnyEvent]) -> None:
        if self.failing:
            raise BusError("bus down")
        self.topics.setdefault(topic, []).extend(events)

    def of(self, topic: str) -> list[AnyEvent]:
        return self.topics.get(topic, [])

    def subscribe(self, *a: object) -> object:
        raise NotImplementedError

    async def pending(self, topic: str, group: str) -> int:
        return 0

    async def close(self) -> None:
        return None


class Harness:
    def __init__(self, *, store: MemoryEssStore | None = None, cash: float = 100_000,
                 config: EssConfig | None = None, instance: str = "risk-1",
                 limits: RiskLimits | None = None) -> None:
        self.clock = SimClock(T0)
        self.bus = RecordingBus()
        ctx = ServiceContext(name="risk", instance=instance, bus=self.bus,  # type: ignore[arg-type]
                             clock=self.clock)
        self.store = store if store is not None else MemoryEssStore()
        self.risk = RiskService(
            ctx, limits or RiskLimits(), round(cash * SCALE),
            ess=config or EssConfig(cooldown_ns=300 * S), ess_store=self.store,
            api_token="secret",
        )
        self.n = 0

    def _next(self) -> int:
        self.n += 1
        return self.n

    async def trades(self, *prices: float, symbol: str = "BTCUSDT", at: float = 0.0,
                     step: float = 0.1) -> list[Trade]:
        batch = []
        for k, price in enumerate(prices):
            n = self._next()
            batch.append(Trade(
                id=f"x:{symbol}:{n}", ts=T0 + round((at + k * step) * S),
                correlation_id=f"x:{symbol}:{n}", causation_id=f"x:{symbol}:{n}", source="ws",
                venue="x", symbol=symbol, trade_id=n, price_e8=round(price * SCALE),
                qty_e8=SCALE,
            ))
        self.clock.advance(batch[-1].ts)
        await self.risk.handle(MARKET_DATA, list(batch))
        return batch

    async def signal(self, side: str = "BUY", price: float = 100.0, symbol: str = "BTCUSDT",
                     at: float | None = None) -> AnyEvent:
        n = self._next()
        ts = self.clock.now() if at is None else T0 + round(at * S)
        sig = Signal(id=f"s{n}", ts=ts, correlation_id="t", causation_id="t", source="signal",
                     strategy_id="m", symbol=symbol, side=side,  # type: ignore[arg-type]
                     price_e8=round(price * SCALE), trade_id=n, move_bp=300, volume_e8=0)
        orders, events = len(self.bus.of(ORDERS)), len(self.bus.of(RISK_EVENTS))
        await self.risk.handle(SIGNALS, [sig])
        out = self.bus.of(ORDERS)[orders:] + self.bus.of(RISK_EVENTS)[events:]
        decisions = [e for e in out if isinstance(e, Order | RiskDecision)]
        assert len(decisions) == 1, out
        return decisions[0]

    async def fill(self, order: Order, price: float) -> None:
        n = self._next()
        fill = Fill(id=f"f{n}", ts=self.clock.now(), correlation_id=order.correlation_id,
                    causation_id=order.id, source="execution", order_id=order.id,
                    client_order_id=order.client_order_id, venue="paper", symbol=order.symbol,
                    side=order.side, price_e8=round(price * SCALE), qty_e8=order.qty_e8,
                    fee_e8=0, venue_fill_id=f"v{n}", order_status="FILLED",
                    cum_qty_e8=order.qty_e8)
        await self.risk.handle(FILLS, [fill])

    async def rejected(self, at: float) -> None:
        n = self._next()
        update = OrderUpdate(id=f"u{n}", ts=T0 + round(at * S), correlation_id="t",
                             causation_id="o", source="execution", order_id=f"o{n}",
                             client_order_id=f"c{n}", symbol="BTCUSDT", status="REJECTED",
                             reason="-2010 insufficient balance", filled_qty_e8=0)
        self.clock.advance(update.ts)
        await self.risk.handle(FILLS, [update])

    async def alert(self, code: str, at: float, source: str = "execution",
                    level: str = "warning") -> None:
        n = self._next()
        alert = Alert(id=f"a{n}", ts=T0 + round(at * S), correlation_id="", causation_id="",
                      source=source, level=level, code=code, message="-1003 too much weight")  # type: ignore[arg-type]
        self.clock.advance(alert.ts)
        await self.risk.handle(ALERTS_STREAM, [alert])
