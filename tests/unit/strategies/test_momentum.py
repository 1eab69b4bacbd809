"""Momentum: signals on a threshold move within the lookback, with enough volume."""

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdb.errors import InputError
from cdb.events import SCALE, Trade, trade_event_id
from cdb.strategies import StrategyParams, available, load
from cdb.strategies.momentum import MomentumStrategy

S = 1_000_000_000


def trade(n: int, price: float, qty: float = 10.0, t: float | None = None, sym: str = "BTCUSDT"):
    tid = trade_event_id("test", sym, n)
    return Trade(
        id=tid, ts=int((n if t is None else t) * S), correlation_id=tid, causation_id=tid,
        source="t", venue="test", symbol=sym, trade_id=n, price_e8=round(price * SCALE),
        qty_e8=round(qty * SCALE),
    )


def strategy(threshold: float = 3.0, volume: float = 1000.0, lookback: float = 60.0):
    return MomentumStrategy(
        StrategyParams(strategy_id="momentum", threshold_pct=threshold, min_volume=volume,
                       lookback_s=lookback)
    )


def test_a_move_of_exactly_the_threshold_signals_buy() -> None:
    intents = strategy().on_trades([trade(1, 100.0), trade(2, 103.0)])
    assert [(i.side, i.move_bp, i.trade.trade_id) for i in intents] == [("BUY", 300, 2)]


def test_just_under_the_threshold_does_not_signal() -> None:
    assert strategy().on_trades([trade(1, 100.0), trade(2, 102.99)]) == []


def test_a_fall_signals_sell() -> None:
    (intent,) = strategy().on_trades([trade(1, 100.0), trade(2, 96.0)])
    assert intent.side == "SELL"
    assert intent.move_bp == -400


def test_not_enough_volume_means_no_signal() -> None:
    # 100 * 1 + 103 * 1 = 203 quote traded < 1000.
    assert strategy().on_trades([trade(1, 100.0, qty=1), trade(2, 103.0, qty=1)]) == []


def test_moves_slower_than_the_lookback_do_not_signal() -> None:
    trades = [trade(1, 100.0, t=0), trade(2, 101.5, t=40), trade(3, 103.0, t=80)]
    assert strategy().on_trades(trades) == []


def test_one_move_gives_one_signal_not_one_per_trade() -> None:
    trades = [trade(1, 100.0), trade(2, 103.0), trade(3, 103.5), trade(4, 104.0)]
    assert len(strategy().on_trades(trades)) == 1


def test_symbols_are_independent_and_batches_split_anywhere_agree() -> None:
    trades = [trade(1, 100.0), trade(2, 50.0, qty=20, sym="ETHUSDT"), trade(3, 103.0),
              trade(4, 48.0, qty=20, sym="ETHUSDT")]
    whole = strategy().on_trades(trades)
    split = strategy()
    parts = split.on_trades(trades[:1]) + split.on_trades(trades[1:3]) + split.on_trades(trades[3:])
    assert [(i.trade.symbol, i.side) for i in whole] == [("BTCUSDT", "BUY"), ("ETHUSDT", "SELL")]
    assert parts == whole


def test_strategies_are_plugins_and_an_unknown_id_is_a_clear_error() -> None:
    assert "momentum" in available()
    assert isinstance(load(StrategyParams(strategy_id="momentum")), MomentumStrategy)
    with pytest.raises(InputError, match=r"unknown strategy 'nope'.*momentum"):
        load(StrategyParams(strategy_id="nope"))


def reference(trades: list[Trade], threshold_bp: int, min_volume_e16: int,
              lookback_ns: int) -> list[tuple[int, str, int]]:
    """The strategy's definition, trade by trade with no shortcut."""
    windows: dict[str, deque[tuple[int, int, int]]] = {}
    out = []
    for t in trades:
        w = windows.setdefault(t.symbol, deque())
        w.append((t.ts, t.price_e8, t.price_e8 * t.qty_e8))
        while w[0][0] < t.ts - lookback_ns:
            w.popleft()
        start = w[0][1]
        move = t.price_e8 - start
        if sum(x[2] for x in w) >= min_volume_e16 and abs(move) * 10_000 >= threshold_bp * start:
            out.append((t.trade_id, "BUY" if move > 0 else "SELL", move * 10_000 // start))
            w.clear()
            w.append((t.ts, t.price_e8, t.price_e8 * t.qty_e8))
    return out


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 20), st.integers(-250, 250), st.integers(1, 50),
                  st.sampled_from(["BTCUSDT", "ETHUSDT"])),
        min_size=1, max_size=300,
    ),
    cuts=st.lists(st.integers(1, 60), max_size=10),
)
def test_the_fast_path_gives_exactly_the_signals_of_the_definition(
    steps: list[tuple[int, int, int, str]], cuts: list[int]
) -> None:
    """Whatever the prices, timing, symbols and batch boundaries."""
    trades, t, prices = [], 0.0, {"BTCUSDT": 10_000, "ETHUSDT": 10_000}
    for n, (dt, dp, qty, sym) in enumerate(steps, start=1):
        t += dt
        prices[sym] = max(1, prices[sym] + dp)
        trades.append(trade(n, prices[sym] / 100, qty=qty, t=t, sym=sym))
    s = strategy(threshold=3.0, volume=1000.0, lookback=60.0)
    got, at = [], 0
    for size in [*cuts, len(trades)]:
        got += s.on_trades(trades[at : at + size])
        at += size
        if at >= len(trades):
            break
    expected = reference(trades, 300, 1000 * SCALE * SCALE, 60 * S)
    assert [(i.trade.trade_id, i.side, i.move_bp) for i in got] == expected
