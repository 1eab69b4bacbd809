"""The retry and circuit-breaker policy's settings (CDB_BACKOFF_*, CDB_BREAKER_*)."""

from __future__ import annotations

from pydantic import Field

from cdb.partsettings import PartSettings


class ResilienceSettings(PartSettings):
    """Backoff and breaker settings; field ``x_y`` is variable ``X_Y``."""


    cdb_backoff_base_s: float = Field(1.0, gt=0)
    """Retries wait 1, 2, 4, 8, 16 ... s (this, doubling), less up to CDB_BACKOFF_JITTER."""
    cdb_backoff_cap_s: float = Field(30.0, gt=0)
    """Longest wait between retries."""
    cdb_backoff_jitter: float = Field(0.2, ge=0, le=1)
    """Fraction of each wait taken off at random, so processes do not retry in step."""
    cdb_breaker_failures: int = Field(3, ge=1)
    """Consecutive Redis failures that open the circuit breaker."""
    cdb_breaker_open_s: float = Field(60.0, gt=0)
    """How long the breaker stays open before one trial call (half-open)."""
