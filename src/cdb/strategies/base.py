"""The strategy seam and its plug-in registry.

A strategy is a deterministic object fed batches of trades; it returns intents and
does no I/O, so it is tested alone. Users add their own by declaring an entry point
in the ``cdb.strategies`` group whose name is the ``SIGNAL_STRATEGY_ID``::

    [project.entry-points."cdb.strategies"]
    mine = "my_package.strategy:MyStrategy"

The class is called with a ``StrategyParams``.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Protocol

import msgspec

from cdb.errors import InputError
from cdb.events import Side, Trade

GROUP = "cdb.strategies"


class StrategyParams(msgspec.Struct, frozen=True, kw_only=True):
    """Settings every strategy receives."""

    strategy_id: str
    threshold_pct: float = 3.0
    min_volume: float = 100_000.0
    lookback_s: float = 60.0


class Intent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A strategy's wish to trade, triggered by ``trade``."""

    trade: Trade
    side: Side
    move_bp: int
    volume_e8: int


class Strategy(Protocol):
    """What the signal service drives."""

    def on_trades(self, trades: Sequence[Trade]) -> list[Intent]:
        """Feed trades in event order; return the intents they trigger."""
        ...


def available() -> list[str]:
    """Names of the installed strategies."""
    return sorted(ep.name for ep in entry_points(group=GROUP))


def load(params: StrategyParams) -> Strategy:
    """Instantiate the strategy named by ``params.strategy_id``.

    Raises:
        InputError: no strategy of that name is installed (the message lists them).
    """
    for ep in entry_points(group=GROUP):
        if ep.name == params.strategy_id:
            factory = ep.load()
            strategy: Strategy = factory(params)
            return strategy
    raise InputError(
        f"unknown strategy {params.strategy_id!r} (SIGNAL_STRATEGY_ID); "
        f"installed: {', '.join(available()) or 'none'}"
    )
