"""The base of every part's settings model (``bus/settings.py``, ``risk/settings.py`` ...).

Each part declares the variables it reads; ``cdb.config.Settings`` composes them all.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class PartSettings(BaseSettings):
    """Settings of one part; field ``x_y`` is variable ``X_Y``."""

    # allow_inf_nan=False: RISK_MAX_POSITION=inf or ESS_COOLDOWN_S=nan is refused at start,
    # naming the setting, instead of failing later (or never tripping) in arithmetic.
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False,
                                      allow_inf_nan=False)
