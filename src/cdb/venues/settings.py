"""The execution venues' settings (EXECUTION_VENUE, PAPER_*, BINANCE_*)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from cdb.partsettings import PartSettings


class VenueSettings(PartSettings):
    """Venue settings; field ``x_y`` is variable ``X_Y``."""


    paper_taker_fee_bps: int = Field(10, ge=0, le=1000)
    paper_maker_fee_bps: int = Field(2, ge=0, le=1000)
    paper_slippage_bps: int = Field(5, ge=0, le=1000)

    execution_venue: Literal["paper", "binance-testnet", "binance-live"] = "paper"
    """Where execution places orders; binance-live trades real money (named explicitly)."""
    binance_url: str | None = None
    """Base URL of Binance's REST API and trade streams instead of the venue's own (a
    FakeBinance in tests: one ``http://`` URL serves both)."""
    binance_resolve_window_s: float = Field(10.0, gt=0)
    """An order whose submission outcome is unknown, not found this long after it was
    sent, never reached the venue (it is then sent once more, never twice)."""
    binance_api_key: SecretStr | None = None
    binance_api_secret: SecretStr | None = None
