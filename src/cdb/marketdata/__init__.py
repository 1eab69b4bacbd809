"""Market data sources: Binance replay files and a seeded synthetic market.

Every source has the same shape, ``MarketSource``: ``batches()`` yields lists of
``Trade`` in event-time order. It is a plain generator, so the caller (the ws service)
sets the pace: as fast as it can publish for a replay on a simulated clock, or paced
to the wall clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from cdb.events import Trade
from cdb.marketdata.pricepath import DEFAULT_SPECS, SymbolSpec
from cdb.marketdata.replay import ReplayFile, ReplaySource, ReplayStats, RowError
from cdb.marketdata.shapes import Shape, ShapeKind, flash_crash, flat, gap, spike, stale
from cdb.marketdata.synthetic import START_NS, SyntheticSource

if TYPE_CHECKING:
    from cdb.marketdata.binance import AlertFn


class MarketSource(Protocol):
    """A source of trades."""

    def batches(self) -> Iterator[list[Trade]]:
        """Yield non-empty lists of trades in event-time order."""
        ...


@runtime_checkable
class ReportsFeedHealth(Protocol):
    """A source that reports gaps and a stale feed as alerts once told where to."""

    def attach_alerts(self, alert: AlertFn) -> None:
        """Send its alerts to ``alert`` (``ServiceContext.alert``)."""
        ...


__all__ = [
    "DEFAULT_SPECS",
    "START_NS",
    "MarketSource",
    "ReplayFile",
    "ReplaySource",
    "ReplayStats",
    "ReportsFeedHealth",
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
