"""The market source's settings (WS_*): which source, which symbols, how fast, which shapes."""

from __future__ import annotations

from typing import Literal

import msgspec
from pydantic import Field, field_validator

from cdb.marketdata.shapes import Shape
from cdb.partsettings import PartSettings


class MarketSettings(PartSettings):
    """Market source settings; field ``x_y`` is variable ``X_Y``."""


    ws_source: Literal["synthetic", "replay", "binance"] = "synthetic"
    """binance: live trade streams of WS_SYMBOLS (at BINANCE_URL when set)."""
    ws_seed: int = 7
    ws_symbols: str = "BTCUSDT,ETHUSDT,SOLUSDT"
    ws_duration_s: float = Field(86_400.0, gt=0)
    ws_speed: str = "realtime"
    """max (as fast as consumers keep up), realtime, or a factor such as 60."""
    ws_replay: str = ""
    """Comma-separated replay files (WS_SOURCE=replay)."""
    ws_start_ns: int | None = Field(None, ge=0)
    """Event time (ns since the epoch) at which the synthetic market starts. Unset: now
    for a paced market (realtime or a factor), 2024-01-01 for ``max``. When set and the
    market is paced, each trade is published once the wall clock reaches its time (its
    offset from this start divided by the speed): a start in the past is caught up at
    once, one in the future is waited for. This is how a coordinator lines the market
    up with its own timeline."""
    ws_trades_per_s: float = Field(50.0, gt=0)
    """Synthetic market: mean trades per second over all symbols."""
    ws_bursts_per_hour: float = Field(2.0, ge=0)
    """Synthetic market: natural momentum moves per symbol per hour (0: none)."""
    ws_shapes: str = ""
    """Synthetic market: shapes to inject, a JSON array of objects ``{"kind":
    "flash_crash"|"spike"|"gap"|"flat"|"stale", "symbol": "BTCUSDT" or "*", "at_s":
    seconds after the market's start, "duration_s": ..., "magnitude_pct": ...}`` (see
    ``cdb.marketdata.shapes.Shape``); empty: none."""

    @field_validator("ws_shapes")
    @classmethod
    def _valid_shapes(cls, value: str) -> str:
        _decode_shapes(value)  # a bad shape stops the service at start, naming WS_SHAPES
        return value

    def market_shapes(self) -> tuple[Shape, ...]:
        """The synthetic market's shapes (``WS_SHAPES``)."""
        return _decode_shapes(self.ws_shapes)

    def symbols(self) -> tuple[str, ...]:
        return tuple(s.strip().upper() for s in self.ws_symbols.split(",") if s.strip())


def _decode_shapes(text: str) -> tuple[Shape, ...]:
    """``WS_SHAPES`` as shapes; ValueError says what is wrong."""
    if not text.strip():
        return ()
    try:
        return msgspec.json.decode(text, type=tuple[Shape, ...])
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a JSON array of shapes ({exc}); e.g. "
                         '[{"kind": "flash_crash", "symbol": "BTCUSDT", "at_s": 15, '
                         '"duration_s": 60, "magnitude_pct": 15}]') from None
