"""Properties of risk over any sequence of signals, fills, prices, trips and resets:

- exposure, as computed right after each decision, never exceeds its limits (total
  and per symbol) when the decision let a non-reducing order out;
- between a trip (by a guard or by hand) and its reset, every order that leaves risk
  only reduces a position: a SELL no larger than what is held and not already for sale.

Driven through the real ``RiskService`` (simulated clock, a recording bus), so the
wiring of the ESS into decisions is what is tested, not a model of it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.services.risk_harness import RecordingBus

from cdb.bus.keys import FILLS, MARKET_DATA, ORDERS, SIGNALS
from cdb.events import SCALE, EssChange, Fill, Order, OrderUpdate, Signal, Trade
from cdb.risk.ess import EssConfig
from cdb.risk.limits import RiskLimits
from cdb.risk.persistence import MemoryEssStore
from cdb.services.base import ServiceContext
from cdb.services.risk import RiskService

S = 1_000_000_000
T0 = 1_704_067_200 * S
SYMBOLS = ("AAA", "BBB")
LIMITS = RiskLimits(
    order_notional_e8=1_000 * SCALE, max_order_notional_e8=5_000 * SCALE,
    max_position_e8=3_000 * SCALE, max_exposure_e8=5_000 * SCALE, max_open_orders=4,
    max_orders_per_window=6, rate_window_ns=10 * S,
)


@dataclass(frozen=True)
class Price:
    symbol: int
    price: int  # whole units, 1..400
    dt: float


@dataclass(frozen=True)
class Sig:
    symbol: int
    buy: bool
    offset_pct: int  # signal price relative to the mark: signals can be stale
    dt: float


@dataclass(frozen=True)
class FillSome:
    pick: int
    share_pct: int  # of the order's remaining quantity
    price: int


@dataclass(frozen=True)
class Cancel:
    pick: int
    rejected: bool


@dataclass(frozen=True)
class Trip:
    pass


@dataclass(frozen=True)
class Reset:
    wait_s: int


ops = st.one_of(
    st.builds(Price, st.integers(0, 1), st.integers(1, 400), st.floats(0, 90)),
    st.builds(Sig, st.integers(0, 1), st.booleans(), st.integers(-50, 50), st.floats(0, 5)),
    st.builds(FillSome, st.integers(0, 50), st.integers(1, 100), st.integers(1, 400)),
    st.builds(Cancel, st.integers(0, 50), st.booleans()),
    st.just(Trip()),
    st.builds(Reset, st.integers(0, 400)),
)


class World:
    """A risk service and the bookkeeping to check it against."""

    def __init__(self) -> None:
        from cdb.clock import SimClock

        self.clock = SimClock(T0)
        self.bus = RecordingBus()
        ctx = ServiceContext(name="risk", instance="prop", bus=self.bus,  # type: ignore[arg-type]
                             clock=self.clock)
        self.risk = RiskService(
            ctx, LIMITS, 10_000 * SCALE,
            ess=EssConfig(cooldown_ns=120 * S, stale_after_ns=60 * S, error_burst_count=3),
            ess_store=MemoryEssStore(),
        )
        self.now = T0
        self.n = 0
        self.marks: dict[str, int] = {}
        self.seen_orders = 0
        self.seen_changes = 0
        self.halted = False  # as the recorded EssChange events say

    def id(self) -> int:
        self.n += 1
        return self.n

    def tick(self, dt: float) -> int:
        self.now += round(dt * S)
        self.clock.advance(self.now)
        return self.now

    def open_orders(self) -> list[str]:
        return sorted(self.risk.book.open_orders)

    async def apply(self, op: object) -> None:
        risk = self.risk
        if isinstance(op, Price):
            symbol, n, ts = SYMBOLS[op.symbol], self.id(), self.tick(op.dt)
            self.marks[symbol] = op.price * SCALE
            await risk.handle(MARKET_DATA, [Trade(
                id=f"t{n}", ts=ts, correlation_id=f"t{n}", causation_id=f"t{n}", source="ws",
                venue="x", symbol=symbol, trade_id=n, price_e8=op.price * SCALE, qty_e8=SCALE)])
        elif isinstance(op, Sig):
            symbol = SYMBOLS[op.symbol]
            mark = self.marks.get(symbol, 100 * SCALE)
            price = max(SCALE, mark * (100 + op.offset_pct) // 100)
            n, ts = self.id(), self.tick(op.dt)
            await risk.handle(SIGNALS, [Signal(
                id=f"s{n}", ts=ts, correlation_id="c", causation_id="c", source="sig",
                strategy_id="m", symbol=symbol, side="BUY" if op.buy else "SELL", price_e8=price,
                trade_id=n, move_bp=0, volume_e8=0)])
        elif isinstance(op, FillSome | Cancel):
            open_ids = self.open_orders()
            if not open_ids:
                return
            order_id = open_ids[op.pick % len(open_ids)]
            order = risk.book.open_orders[order_id]
            n = self.id()
            if isinstance(op, FillSome):
                qty = max(1, order.remaining_e8 * op.share_pct // 100)
                done = qty >= order.remaining_e8
                await risk.handle(FILLS, [Fill(
                    id=f"f{n}", ts=self.now, correlation_id="c", causation_id=order_id,
                    source="ex", order_id=order_id, client_order_id="c", venue="paper",
                    symbol=order.symbol, side=order.side, price_e8=op.price * SCALE,
                    qty_e8=min(qty, order.remaining_e8), fee_e8=0, venue_fill_id=f"v{n}",
                    order_status="FILLED" if done else "PARTIALLY_FILLED", cum_qty_e8=qty)])
            else:
                await risk.handle(FILLS, [OrderUpdate(
                    id=f"u{n}", ts=self.now, correlation_id="c", causation_id=order_id,
                    source="ex", order_id=order_id, client_order_id="c", symbol=order.symbol,
                    status="REJECTED" if op.rejected else "CANCELED", reason="x",
                    filled_qty_e8=0)])
        elif isinstance(op, Trip):
            await risk.trip_manually("tester", "property")
        elif isinstance(op, Reset):
            self.tick(op.wait_s)
            await risk.reset("tester", "property")

    def check(self, before_open: dict[str, tuple[str, str, int]],
              before_positions: dict[str, int]) -> None:
        """Check what the last operation published against the properties."""
        changes = [e for e in self.bus.of("stream.risk_events") if isinstance(e, EssChange)]
        orders = [e for e in self.bus.of(ORDERS) if isinstance(e, Order)]
        new_orders = orders[self.seen_orders:]
        new_changes = changes[self.seen_changes:]
        self.seen_orders, self.seen_changes = len(orders), len(changes)
        book = self.risk.book
        for order in new_orders:
            if order.reduce_only:
                assert order.side == "SELL"
                held = before_positions.get(order.symbol, 0)
                for_sale = sum(q for s, side, q in before_open.values()
                               if s == order.symbol and side == "SELL")
                assert order.qty_e8 <= held - for_sale, "a reduce-only order must only reduce"
            else:
                # Signals are handled alone in a step and no guard runs on them, so the
                # decision saw the state the step started in.
                assert not new_changes
                assert not self.halted, \
                    f"non-reducing order {order.id} between a trip and its reset"
                assert book.exposure_e8() <= LIMITS.max_exposure_e8
                assert book.symbol_exposure_e8(order.symbol) <= LIMITS.max_position_e8
        if new_changes:
            self.halted = new_changes[-1].state == "HALTED"
        assert self.halted == self.risk.halted


async def run(sequence: list[object]) -> None:
    world = World()
    for op in sequence:
        book = world.risk.book
        before_open = {k: (o.symbol, o.side, o.remaining_e8) for k, o in book.open_orders.items()}
        before_positions = {s: p.qty_e8 for s, p in book.positions.items()}
        await world.apply(op)
        world.check(before_open, before_positions)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=60))
def test_exposure_stays_within_limits_and_no_increasing_order_while_halted(
    sequence: list[object],
) -> None:
    asyncio.run(run(sequence))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=2, max_size=40), st.lists(st.booleans(),
       min_size=1, max_size=40))
def test_a_crash_in_any_price_path_blocks_every_buy_until_reset(
    prices: list[int], buys: list[bool]
) -> None:
    """Whatever the path, once a guard tripped no BUY gets through (no reset here)."""

    async def scenario() -> None:
        world = World()
        for price in prices:
            await world.apply(Price(0, price, 5.0))
        tripped = world.risk.halted
        for buy in buys:
            await world.apply(Sig(0, buy, 0, 0.5))
        if tripped:
            assert all(o.reduce_only for o in world.bus.of(ORDERS) if isinstance(o, Order))

    asyncio.run(scenario())
