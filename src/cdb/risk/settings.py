"""The risk limits' and the emergency stop's settings (RISK_*, ESS_*)."""

from __future__ import annotations

from pydantic import Field

from cdb.events import SCALE
from cdb.partsettings import PartSettings
from cdb.risk.ess import EssConfig, pct_to_ppm
from cdb.risk.limits import RiskLimits


class RiskSettings(PartSettings):
    """Risk limits and ESS thresholds; field ``x_y`` is variable ``X_Y``."""


    risk_order_notional: float = Field(1_000.0, gt=0)
    risk_max_order_notional: float = Field(5_000.0, gt=0)
    risk_max_position: float = Field(5_000.0, gt=0)
    risk_max_exposure: float = Field(20_000.0, gt=0)
    risk_max_open_orders: int = Field(5, ge=1)
    risk_max_orders_per_window: int = Field(10, ge=1)
    risk_rate_window_s: float = Field(10.0, gt=0)
    risk_initial_cash: float = Field(100_000.0, gt=0)

    ess_drawdown_limit_pct: float = Field(10.0, gt=0, le=100)
    """The ESS trips when equity is more than this below its peak."""
    ess_flash_crash_pct: float = Field(15.0, gt=0, le=100)
    ess_flash_crash_window_s: float = Field(60.0, gt=0)
    """The ESS trips when a price falls at least ESS_FLASH_CRASH_PCT within this."""
    ess_error_burst_count: int = Field(5, ge=1)
    ess_error_burst_window_s: float = Field(60.0, gt=0)
    """The ESS trips on ESS_ERROR_BURST_COUNT exchange errors or rejections within this."""
    ess_stale_data_s: float = Field(30.0, ge=0)
    """New orders on a symbol without a trade for longer pause until it trades again
    (0: the stale-data guard is off, pause and trip)."""
    ess_stale_halt_s: float = Field(300.0, ge=0)
    """The ESS trips (latched) when a symbol stays silent this long while the bus is
    up; time cdb's own Redis was down does not count (0: never)."""
    ess_cooldown_s: float = Field(300.0, ge=0)
    """A reset is refused until this long after the trip."""

    def risk_limits(self) -> RiskLimits:
        return RiskLimits(
            order_notional_e8=round(self.risk_order_notional * SCALE),
            max_order_notional_e8=round(self.risk_max_order_notional * SCALE),
            max_position_e8=round(self.risk_max_position * SCALE),
            max_exposure_e8=round(self.risk_max_exposure * SCALE),
            max_open_orders=self.risk_max_open_orders,
            max_orders_per_window=self.risk_max_orders_per_window,
            rate_window_ns=round(self.risk_rate_window_s * 1e9),
        )

    def ess_config(self) -> EssConfig:
        return EssConfig(
            drawdown_limit_ppm=pct_to_ppm(self.ess_drawdown_limit_pct),
            flash_crash_drop_ppm=pct_to_ppm(self.ess_flash_crash_pct),
            flash_crash_window_ns=round(self.ess_flash_crash_window_s * 1e9),
            error_burst_count=self.ess_error_burst_count,
            error_burst_window_ns=round(self.ess_error_burst_window_s * 1e9),
            stale_after_ns=round(self.ess_stale_data_s * 1e9),
            stale_halt_after_ns=round(self.ess_stale_halt_s * 1e9),
            cooldown_ns=round(self.ess_cooldown_s * 1e9),
        )
