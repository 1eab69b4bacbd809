"""The signal service's strategy settings (SIGNAL_*)."""

from __future__ import annotations

from pydantic import Field

from cdb.partsettings import PartSettings
from cdb.strategies.base import StrategyParams


class SignalSettings(PartSettings):
    """Strategy settings; field ``x_y`` is variable ``X_Y``."""


    signal_strategy_id: str | None = None
    signal_port: int = Field(8001, ge=1, le=65535)
    signal_threshold_pct: float = Field(3.0, gt=0, le=100)
    signal_min_volume: float = Field(100_000.0, ge=0)
    signal_lookback_s: float = Field(60.0, gt=0)

    def strategy_params(self, default_id: str | None = None) -> StrategyParams:
        return StrategyParams(
            strategy_id=self.signal_strategy_id or default_id or "",
            threshold_pct=self.signal_threshold_pct,
            min_volume=self.signal_min_volume,
            lookback_s=self.signal_lookback_s,
        )
