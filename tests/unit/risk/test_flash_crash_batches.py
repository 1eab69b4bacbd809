"""The flash-crash guard's batch fast path changes nothing: over any trades, cut into any
batches, it gives the same alarm per batch and keeps the same highs as the guard's
definition applied one trade at a time (written out below as it stood before the fast
path), whatever the limits, symbols mixed, prices flat, crashing or tiny, time running
forward or back."""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from cdb.events import SCALE, Trade
from cdb.risk.ess import PPM, Alarm, FlashCrashGuard

S = 1_000_000_000
T0 = 1_704_067_200 * S


class Reference:
    """The trade-by-trade definition."""

    def __init__(self, guard: FlashCrashGuard) -> None:
        self.guard = guard  # for the alarm text only
        self.highs: dict[str, deque[tuple[int, int]]] = {}

    def on_trades(self, trades: list[Trade]) -> Alarm | None:
        alarm = None
        window, drop = self.guard.window_ns, self.guard.drop_ppm
        for trade in trades:
            highs = self.highs.setdefault(trade.symbol, deque())
            ts, price = trade.ts, trade.price_e8
            while highs and highs[0][0] < ts - window:
                highs.popleft()
            if highs:
                top = highs[0][1]
                if (top - price) * PPM >= drop * top and alarm is None:
                    alarm = self.guard._alarm(trade.symbol, highs[0][0], top, trade)
                while highs and highs[-1][1] <= price:
                    highs.pop()
            highs.append((ts, price))
        return alarm


@st.composite
def tapes(draw: st.DrawFn) -> tuple[list[list[Trade]], int, int]:
    drop = draw(st.sampled_from([150_000, 150_000, 10_000, 0, -5, PPM, 2 * PPM]))
    window = draw(st.sampled_from([60 * S, 5 * S, 0]))
    steps = draw(st.lists(st.tuples(
        st.sampled_from([S, S, S, 0, S // 10, 3 * S, -S]),
        st.sampled_from([0, 1, -1, 10**6, -(10**6), 10**8, -(20 * 10**8)]),
        st.integers(0, 3),
        st.sampled_from(["AAA", "AAA", "AAA", "BBB"]),
    ), min_size=1, max_size=120))
    n = len(steps)
    ts, price = T0, 100 * SCALE
    trades = []
    for k, (dt, move, times, symbol) in enumerate(steps):
        ts += dt
        price = max(1, price + move * times)  # a zero high divides by zero in the text
        trades.append(Trade(
            id=f"t{k}", ts=ts, correlation_id="c", causation_id="c", source="ws", venue="x",
            symbol=symbol, trade_id=k, price_e8=price, qty_e8=SCALE,
        ))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=8)))
    batches = [trades[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
    return batches, drop, window


@settings(max_examples=500, deadline=None)
@given(tapes())
def test_batches_give_the_same_alarms_and_highs_as_trade_by_trade(
    tape: tuple[list[list[Trade]], int, int],
) -> None:
    batches, drop, window = tape
    guard = FlashCrashGuard(drop_ppm=drop, window_ns=window)
    reference = Reference(FlashCrashGuard(drop_ppm=drop, window_ns=window))
    for batch in batches:
        assert guard.on_trades(batch) == reference.on_trades(batch)
        assert {s: list(h) for s, h in guard._highs.items() if h or s in reference.highs} == {
            s: list(h) for s, h in reference.highs.items()
        }


def test_a_quiet_batch_is_absorbed_with_the_same_highs() -> None:
    """A rising then falling batch well inside the limit (the fast path) keeps the
    highs strictly falling, inside the window, ending with the last trade."""
    guard = FlashCrashGuard(drop_ppm=150_000, window_ns=10 * S)
    prices = [100, 101, 103, 102, 104, 99, 98, 100, 97]
    batch = [Trade(id=f"t{k}", ts=T0 + k * 2 * S, correlation_id="c", causation_id="c",
                   source="ws", venue="x", symbol="AAA", trade_id=k, price_e8=p * SCALE,
                   qty_e8=SCALE) for k, p in enumerate(prices)]
    assert guard.on_trades(batch) is None
    assert list(guard._highs["AAA"]) == [(T0 + 8 * S, 104 * SCALE), (T0 + 14 * S, 100 * SCALE),
                                         (T0 + 16 * S, 97 * SCALE)]
