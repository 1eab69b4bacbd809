"""How ccxt's errors map to cdb's decisions, and the venue's configuration guards."""

from __future__ import annotations

import pytest

from cdb.errors import ConfigError
from cdb.venues.binance import (
    BinanceVenue,
    BinanceVenueConfig,
    classify,
    make_binance_venue,
)

try:
    import ccxt
except ImportError:  # pragma: no cover - depends on the install
    pytest.exit("the Binance venue tests need ccxt: pip install -e '.[binance]' "
                "-c constraints.txt", returncode=3)


def tagged(exc: Exception, status: int | None = None, code: int | None = None,
           retry: float | None = None) -> Exception:
    exc.cdb_status = status  # type: ignore[attr-defined]
    exc.cdb_code = code  # type: ignore[attr-defined]
    exc.cdb_retry_after = retry  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (tagged(ccxt.DDoSProtection("418"), 418, -1003, 120.0), "ban"),
        (tagged(ccxt.DDoSProtection("429"), 429, -1003, 2.0), "rate_limit"),
        (tagged(ccxt.RateLimitExceeded("x"), 400, -1003), "rate_limit"),
        # Binance's spot map calls -1015 an invalid order: the code decides, not the class.
        (tagged(ccxt.InvalidOrder("Too many new orders"), 429, -1015, 1.0), "rate_limit"),
        (tagged(ccxt.BadRequest("recvWindow"), 400, -1021), "clock"),
        (tagged(ccxt.BadRequest("signature"), 400, -1022), "auth"),
        (tagged(ccxt.AuthenticationError("key"), 401, -2015), "auth"),
        (tagged(ccxt.BadResponse("backend timeout"), 503, -1007), "unknown"),
        (tagged(ccxt.OrderNotFound("no"), 400, -2013), "not_found"),
        (tagged(ccxt.OperationRejected("cancel"), 400, -2011), "not_found"),
        (tagged(ccxt.InvalidOrder("Duplicate order sent."), 400, -2010), "duplicate"),
        (tagged(ccxt.InsufficientFunds("balance"), 400, -2010), "rejected"),
        (tagged(ccxt.InvalidOrder("LOT_SIZE"), 400, -1013), "rejected"),
        (ccxt.RequestTimeout("binance POST url"), "unknown"),
        (ccxt.ExchangeNotAvailable("connection refused"), "unknown"),
        (tagged(ccxt.ExchangeNotAvailable("503"), 503), "unknown"),
        (ccxt.OnMaintenance("maintenance"), "unknown"),
        (ccxt.ExchangeError("something else"), "error"),
    ],
)
def test_errors_are_classified_by_code_status_then_class(exc: Exception, kind: str) -> None:
    assert classify(exc)[0] == kind


def test_retry_after_and_code_travel_with_the_classification() -> None:
    exc = tagged(ccxt.DDoSProtection("429"), 429, -1003, 2.5)
    assert classify(exc) == ("rate_limit", -1003, 2.5)


def test_missing_credentials_name_the_settings() -> None:
    with pytest.raises(ConfigError, match="BINANCE_API_KEY"):
        BinanceVenue(BinanceVenueConfig(), api_key="", api_secret="s")


def test_factory_defaults_to_testnet_and_names_live_explicitly() -> None:
    testnet = make_binance_venue("binance-testnet", api_key="k", api_secret="s")
    live = make_binance_venue("binance-live", api_key="k", api_secret="s")
    assert (testnet.config.mode, testnet.name) == ("testnet", "binance-testnet")
    assert (live.config.mode, live.name) == ("live", "binance")


def test_factory_refuses_unknown_venues_and_bad_overrides() -> None:
    with pytest.raises(ConfigError, match="unknown venue"):
        make_binance_venue("binance-prod", api_key="k", api_secret="s")
    with pytest.raises(ConfigError, match="weight_limit"):
        make_binance_venue("binance-testnet", api_key="k", api_secret="s", weight_limit="x")


def test_credentials_never_appear_in_the_config() -> None:
    venue = make_binance_venue("binance-testnet", api_key="KEY123", api_secret="SECRET456")
    assert "SECRET456" not in repr(venue.config)
    assert "KEY123" not in repr(venue.config)
