"""Momentum: a signal when price moves at least ``threshold_pct`` within the lookback
window and the quote volume traded in that window reaches ``min_volume``.

Per symbol the window holds (ts, price, quote volume) of its trades; the move is
measured from the oldest price still inside the window. After a signal the window
restarts at the triggering trade, so one move gives one signal, not one per trade.
All arithmetic is on integers: exact and cheap.

Speed: a batch whose whole price range (window and batch together) is narrower than
the threshold cannot trigger, whatever the order of its trades; it is absorbed with
list operations that run in C. Only batches that could trigger take the trade-by-trade
path, which is the definition above written out.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from operator import attrgetter, mul
from typing import Final

from cdb.events import SCALE, Trade
from cdb.strategies.base import Intent, StrategyParams

_SYMBOL: Final = attrgetter("symbol")
_TS: Final = attrgetter("ts")
_PRICE: Final = attrgetter("price_e8")
_QTY: Final = attrgetter("qty_e8")


class _Window:
    """One symbol's recent trades, as columns (cheap to extend, trim and scan)."""

    __slots__ = ("bounds", "notional", "px", "ts", "volume")

    def __init__(self) -> None:
        self.ts: list[int] = []
        self.px: list[int] = []
        self.notional: list[int] = []  # e16: price_e8 x qty_e8, no division needed
        self.volume = 0
        self.bounds: tuple[int, int] | None = None
        """A low and high enclosing every price in ``px`` (maybe of prices trimmed
        since: a wider range only sends a batch to the exact test), or None."""


class MomentumStrategy:
    """The built-in momentum strategy (``SIGNAL_STRATEGY_ID=momentum``)."""

    def __init__(self, params: StrategyParams) -> None:
        self.params = params
        # Threshold as an integer ratio: |p - p0| * 10_000 >= bp * p0, no floats.
        self._threshold_bp = round(params.threshold_pct * 100)
        self._min_volume_e16 = round(params.min_volume * SCALE) * SCALE
        self._lookback_ns = round(params.lookback_s * 1_000_000_000)
        self._windows: dict[str, _Window] = {}

    def on_trades(self, trades: Sequence[Trade]) -> list[Intent]:
        if not trades:
            return []
        if len(dict.fromkeys(map(_SYMBOL, trades))) == 1:
            return self._symbol(trades[0].symbol, trades)
        by_symbol: dict[str, list[Trade]] = {}
        for trade in trades:
            by_symbol.setdefault(trade.symbol, []).append(trade)
        intents = [i for s, group in by_symbol.items() for i in self._symbol(s, group)]
        if len(by_symbol) > 1:
            order = {id(t): n for n, t in enumerate(trades)}
            intents.sort(key=lambda i: order[id(i.trade)])
        return intents

    def _symbol(self, symbol: str, trades: Sequence[Trade]) -> list[Intent]:
        window = self._windows.get(symbol)
        if window is None:
            window = self._windows[symbol] = _Window()
        px = list(map(_PRICE, trades))
        low, high = min(px), max(px)
        if window.px:
            bounds = window.bounds
            if (bounds is None or self._threshold_bp <= 0
                    or not self._narrow(min(low, bounds[0]), max(high, bounds[1]))):
                bounds = (min(window.px), max(window.px))  # the kept ones may be stale
            low, high = min(low, bounds[0]), max(high, bounds[1])
        ts = list(map(_TS, trades))
        notional = list(map(mul, px, map(_QTY, trades)))
        if self._narrow(low, high):
            self._absorb(window, ts, px, notional)
            window.bounds = (low, high)
            return []
        window.bounds = None
        return self._scan(window, trades, ts, px, notional)

    def _narrow(self, low: int, high: int) -> bool:
        """Whether prices within [low, high] cannot move by the threshold."""
        return (high - low) * 10_000 < self._threshold_bp * low

    def _absorb(self, w: _Window, ts: list[int], px: list[int], notional: list[int]) -> None:
        """Append a batch that cannot trigger and drop what left the lookback."""
        w.ts += ts
        w.px += px
        w.notional += notional
        w.volume += sum(notional)
        cut = bisect_left(w.ts, ts[-1] - self._lookback_ns)
        if cut:
            w.volume -= sum(w.notional[:cut])
            del w.ts[:cut], w.px[:cut], w.notional[:cut]

    def _scan(
        self, w: _Window, trades: Sequence[Trade], ts: list[int], px: list[int],
        notional: list[int],
    ) -> list[Intent]:
        """Trade by trade: the definition of the strategy."""
        intents: list[Intent] = []
        lookback, bp, min_volume = self._lookback_ns, self._threshold_bp, self._min_volume_e16
        wts, wpx, wn = w.ts, w.px, w.notional
        head, volume = 0, w.volume
        for n, trade in enumerate(trades):
            t, price, value = ts[n], px[n], notional[n]
            wts.append(t)
            wpx.append(price)
            wn.append(value)
            volume += value
            horizon = t - lookback
            while wts[head] < horizon:
                volume -= wn[head]
                head += 1
            start = wpx[head]
            move = price - start
            if volume >= min_volume and abs(move) * 10_000 >= bp * start:
                intents.append(
                    Intent(
                        trade=trade, side="BUY" if move > 0 else "SELL",
                        move_bp=move * 10_000 // start, volume_e8=volume // SCALE,
                    )
                )
                # The window restarts at the triggering trade.
                del wts[:], wpx[:], wn[:]
                wts.append(t)
                wpx.append(price)
                wn.append(value)
                head, volume = 0, value
        del wts[:head], wpx[:head], wn[:head]
        w.volume = volume
        return intents
