"""Market data sources: Binance replay files and a seeded synthetic market.

Every source has the same shape, ``MarketSource``: ``batches()`` yields lists of
``Trade`` in event-time order. It is a plain generator, so the caller (the ws service)
sets the pace: as fast as it can publish for a replay on a simulated clock, or paced
to the wall clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from cdb.events import Trade
from cdb.marketdata.replay import ReplayFile, ReplaySource, ReplayStats, RowError
from cdb.marketdata.synthetic import (
    DEFAULT_SPECS,
    START_NS,
    Shape,
    ShapeKind,
    SymbolSpec,
    SyntheticSource,
    flash_crash,
    flat,
    gap,
    spike,
    stale,
)


class MarketSource(Protocol):
    """A source of trades."""

    def batches(self) -> Iterator[list[Trade]]:
        """Yield non-empty lists of trades in event-time order."""
        ...


__all__ = [
    "DEFAULT_SPECS",
    "START_NS",
    "MarketSource",
    "ReplayFile",
    "ReplaySource",
    "ReplayStats",
    "RowError",
    "Shape",
    "ShapeKind",
    "SymbolSpec",
    "SyntheticSource",
    "flash_crash",
    "flat",
    "gap",
    "spike",
    "stale",
]
