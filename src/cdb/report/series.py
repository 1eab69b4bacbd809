"""Prices and equity over a run, sampled as it goes and kept small.

The pipeline records one point per symbol and batch (the batch's last price) and the
equity after the batch. ``downsample`` keeps a
series under a bound by buckets that keep each bucket's first, lowest, highest and
last point, so a spike survives: a 1M-trade run needs a few thousand points, not a
million.
"""

from __future__ import annotations

from typing import Final

import msgspec

MAX_POINTS: Final = 4000
"""Points per series kept in the database and drawn in a report."""

Point = tuple[int, int]
"""(ts ns, value e8)."""


class RunSeries(msgspec.Struct, kw_only=True):
    """What a report draws that the event tables do not hold (trades are not stored)."""

    prices: dict[str, list[Point]] = msgspec.field(default_factory=dict)
    equity: list[Point] = msgspec.field(default_factory=list)


def downsample(points: list[Point], limit: int = MAX_POINTS) -> list[Point]:
    """At most about ``limit`` points of ``points`` (sorted by ts), extremes kept."""
    if len(points) <= limit:
        return points
    per = max(1, limit // 4)
    size = -(-len(points) // per)
    kept: list[Point] = []
    for start in range(0, len(points), size):
        bucket = points[start:start + size]
        chosen = {0, len(bucket) - 1,
                  min(range(len(bucket)), key=lambda i: bucket[i][1]),
                  max(range(len(bucket)), key=lambda i: bucket[i][1])}
        kept.extend(bucket[i] for i in sorted(chosen))
    return kept


class SeriesRecorder:
    """Collects a run's series batch by batch, compacting when it grows."""

    def __init__(self, limit: int = MAX_POINTS) -> None:
        self.limit = limit
        self.series = RunSeries()

    def add_price(self, symbol: str, ts: int, price_e8: int) -> None:
        """The last price of ``symbol`` in one batch."""
        points = self.series.prices.get(symbol)
        if points is None:
            points = self.series.prices[symbol] = []
        points.append((ts, price_e8))
        if len(points) > 4 * self.limit:
                self.series.prices[symbol] = downsample(points, self.limit)

    def add_equity(self, ts: int, equity_e8: int) -> None:
        points = self.series.equity
        if points and points[-1][0] == ts:
            points[-1] = (ts, equity_e8)
        else:
            points.append((ts, equity_e8))
        if len(points) > 4 * self.limit:
            self.series.equity = downsample(points, self.limit)

    def result(self) -> RunSeries:
        """The series, each at most about ``limit`` points."""
        s = self.series
        return RunSeries(prices={k: downsample(v, self.limit) for k, v in s.prices.items()},
                         equity=downsample(s.equity, self.limit))
