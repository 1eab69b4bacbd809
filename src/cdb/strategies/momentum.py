"""Momentum: a signal when price moves at least ``threshold_pct`` within the lookback
window and the quote volume traded in that window reaches ``min_volume``.

Per symbol the window holds (ts, price, quote volume) of its trades; the move is
measured from the oldest price still inside the window. After a signal the window
restarts at the triggering trade, so one move gives one signal, not one per trade.
All arithmetic is on e8 integers: exact and cheap.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from cdb.events import SCALE, Trade
from cdb.strategies.base import Intent, StrategyParams


class _Window:
    __slots__ = ("items", "volume")

    def __init__(self) -> None:
        self.items: deque[tuple[int, int, int]] = deque()
        self.volume = 0


class MomentumStrategy:
    """The built-in momentum strategy (``SIGNAL_STRATEGY_ID=momentum``)."""

    def __init__(self, params: StrategyParams) -> None:
        self.params = params
        # Threshold as an integer ratio: |p - p0| * 10_000 >= bp * p0, no floats.
        self._threshold_bp = round(params.threshold_pct * 100)
        self._min_volume_e8 = round(params.min_volume * SCALE)
        self._lookback_ns = round(params.lookback_s * 1_000_000_000)
        self._windows: dict[str, _Window] = {}

    def on_trades(self, trades: Sequence[Trade]) -> list[Intent]:
        intents: list[Intent] = []
        windows = self._windows
        lookback = self._lookback_ns
        bp = self._threshold_bp
        min_volume = self._min_volume_e8
        for trade in trades:
            window = windows.get(trade.symbol)
            if window is None:
                window = windows[trade.symbol] = _Window()
            items = window.items
            ts = trade.ts
            price = trade.price_e8
            notional = price * trade.qty_e8 // SCALE
            items.append((ts, price, notional))
            volume = window.volume + notional
            horizon = ts - lookback
            while items[0][0] < horizon:
                volume -= items.popleft()[2]
            window.volume = volume
            first = items[0][1]
            move = price - first
            if volume >= min_volume and abs(move) * 10_000 >= bp * first:
                intents.append(
                    Intent(
                        trade=trade,
                        side="BUY" if move > 0 else "SELL",
                        move_bp=move * 10_000 // first,
                        volume_e8=volume,
                    )
                )
                items.clear()
                items.append((ts, price, notional))
                window.volume = notional
        return intents
