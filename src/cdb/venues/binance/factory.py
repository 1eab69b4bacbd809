"""The Binance venue built from its name on the command line and from settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from cdb.errors import ConfigError
from cdb.venues.binance.client import AlertHook
from cdb.venues.binance.records import BinanceVenueConfig, Mode
from cdb.venues.binance.venue import BinanceVenue

if TYPE_CHECKING:
    from cdb.venues.settings import VenueSettings


def make_binance_venue(
    venue: str, *, api_key: str | None, api_secret: str | None, exchange_url: str | None = None,
    alert: AlertHook | None = None, instance: str = "", **overrides: Any,
) -> BinanceVenue:
    """The venue named on the command line (``binance-testnet`` or ``binance-live``).

    Args:
        venue: ``binance-testnet`` (sandbox) or ``binance-live`` (real money: only
            when named explicitly).
        api_key, api_secret: from ``Settings.binance_api_key``/``binance_api_secret``.
        exchange_url: REST base overriding the mode's (``--exchange-url``).
        overrides: ``BinanceVenueConfig`` fields.
    """
    modes: dict[str, Mode] = {"binance-testnet": "testnet", "binance-live": "live",
                              "binance": "testnet"}
    if venue not in modes:
        raise ConfigError([f"VENUE: unknown venue {venue!r}; one of paper, binance-testnet, "
                           "binance-live"])
    try:
        config = msgspec.convert({"mode": modes[venue], "rest_url": exchange_url, **overrides},
                                 BinanceVenueConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError([f"VENUE: {exc}"]) from exc
    return BinanceVenue(config, api_key=api_key or "", api_secret=api_secret or "",
                        alert=alert, instance=instance)


def venue_from_settings(
    settings: VenueSettings, venue: str, *, exchange_url: str | None, alert: AlertHook | None,
    instance: str,
) -> BinanceVenue:
    """``make_binance_venue`` with the key, secret and resolve window of ``settings``."""
    key, secret = settings.binance_api_key, settings.binance_api_secret
    return make_binance_venue(
        venue, api_key=key.get_secret_value() if key else None,
        api_secret=secret.get_secret_value() if secret else None,
        exchange_url=exchange_url, alert=alert, instance=instance,
        resolve_window_s=settings.binance_resolve_window_s,
    )
