"""Signal strategies: pure functions of events, loaded through an entry point group."""

from cdb.strategies.base import Intent, Strategy, StrategyParams, available, load

__all__ = ["Intent", "Strategy", "StrategyParams", "available", "load"]
