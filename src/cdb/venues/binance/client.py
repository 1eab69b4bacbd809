"""Talking to Binance through ccxt: the client class, request weights, and what each
error means for cdb.

ccxt does the transport (signing, the aiohttp session, timeouts) and maps Binance's codes
to its exception classes; ``CdbBinance`` adds what ccxt drops (the HTTP status, so a 418
ban is told from a 429, and ``Retry-After``) and reports the venue's weight count.
``classify`` turns an error into the decision cdb takes; Binance's code decides first,
because ccxt maps some codes differently by URL (-1015 is a rate limit on one map and an
invalid order on another).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Final, Literal

from cdb.errors import ConfigError, OrderNotPlacedError, VenueError

TESTNET_URL: Final = "https://testnet.binance.vision"
LIVE_URL: Final = "https://api.binance.com"

# Binance spot request weights (IP limit): (method, path) -> weight.
WEIGHTS: Final = {
    ("GET", "ping"): 1, ("GET", "time"): 1, ("GET", "exchangeInfo"): 20,
    ("POST", "order"): 1, ("GET", "order"): 4, ("DELETE", "order"): 1,
    ("GET", "openOrders"): 6, ("GET", "account"): 20, ("GET", "myTrades"): 20,
}
PUBLIC: Final = frozenset({"ping", "time", "exchangeInfo"})


class VenueRateLimitedError(OrderNotPlacedError):
    """The venue kept answering 429/-1003/-1015 after every backoff; nothing was placed."""

    def __init__(self, message: str, *, code: int | None, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.code, self.retry_after_s = code, retry_after_s


class VenueBannedError(OrderNotPlacedError):
    """The venue banned this client (HTTP 418); no request is sent until ``until``.

    Args:
        until: ``time.monotonic()`` at which the ban ends.
    """

    def __init__(self, message: str, *, until: float) -> None:
        super().__init__(message)
        self.until = until


class VenueUnavailableError(OrderNotPlacedError):
    """5xx, timeouts or connection failures outlasted the bounded retries."""


class VenueAuthError(OrderNotPlacedError):
    """Key, signature or permissions refused (-1022, -2014, -2015); check the API key."""


class VenueRejectedError(OrderNotPlacedError):
    """The venue refused the order (filters, balance, symbol); it was not placed.

    Args:
        client_order_id: the order's client id ("" for other requests).
        code: Binance's error code (0 when cdb refused it before sending).
    """

    def __init__(self, message: str, *, client_order_id: str = "", code: int = 0) -> None:
        super().__init__(message)
        self.client_order_id, self.code = client_order_id, code


class OrderUnknownError(VenueError):
    """An order's submission outcome could not be established; it is not sent again
    until ``reconcile`` or a later poll finds out."""

    def __init__(self, message: str, *, client_order_id: str) -> None:
        super().__init__(message)
        self.client_order_id = client_order_id


class OutcomeUnknown(Exception):
    """A request may or may not have taken effect (timeout, 5xx, -1007, lost connection)."""


class NotFound(Exception):
    """-2013 / -2011: no such order."""


class Duplicate(VenueRejectedError):
    """-2010 "Duplicate order sent.": an open order already has this client id."""


@functools.cache
def exchange_class() -> Any:
    """ccxt's async Binance with cdb's hooks (imported here: ccxt takes a second to load)."""
    try:
        import ccxt.async_support as ccxt_async
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            ["VENUE: the binance venue needs ccxt: pip install 'cdb[binance]'"]
        ) from exc
    from ccxt.base.errors import BaseError

    class CdbBinance(ccxt_async.binance):  # type: ignore[misc]
        """Tags every ccxt error with Binance's code, HTTP status and Retry-After, and
        reports the venue's weight count: ccxt maps 418 and 429 alike and drops headers."""

        cdb_observe: Callable[[dict[str, str]], None] | None = None

        def handle_errors(self, code: int, reason: str, url: str, method: str,
                          headers: dict[str, str], body: str, response: object,
                          request_headers: object, request_body: object) -> Any:
            lowered = {k.lower(): v for k, v in (headers or {}).items()}
            if self.cdb_observe is not None:
                self.cdb_observe(lowered)
            try:
                return super().handle_errors(code, reason, url, method, headers, body,
                                             response, request_headers, request_body)
            except BaseError as exc:
                exc.cdb_status = code
                exc.cdb_retry_after = _seconds(lowered.get("retry-after"))
                exc.cdb_code = (response.get("code") if isinstance(response, dict) else None)
                raise

    return CdbBinance


def _seconds(text: str | None) -> float | None:
    try:
        return max(0.0, float(text)) if text else None
    except ValueError:
        return None  # an HTTP date: Binance sends seconds


Kind = Literal["ban", "rate_limit", "clock", "unknown", "not_found", "duplicate",
               "rejected", "auth", "error"]
_CODE_KINDS: Final[dict[int, Kind]] = {
    -1003: "rate_limit", -1015: "rate_limit", -1021: "clock", -1022: "auth",
    -2014: "auth", -2015: "auth", -1007: "unknown", -1001: "unknown", -1006: "unknown",
    -2013: "not_found", -2011: "not_found",
}


def classify(exc: BaseException) -> tuple[Kind, int | None, float | None]:
    """What a ccxt error means for cdb: (kind, Binance code, Retry-After seconds).

    Binance's code decides first (ccxt maps some codes differently by URL: -1015 is a
    rate limit on one map and an invalid order on another), then the HTTP status, then
    ccxt's class.
    """
    from ccxt.base import errors as ccxt

    status: int | None = getattr(exc, "cdb_status", None)
    code: int | None = getattr(exc, "cdb_code", None)
    retry: float | None = getattr(exc, "cdb_retry_after", None)
    text = str(exc)
    if status == 418:
        return "ban", code, retry
    if code in _CODE_KINDS:
        return _CODE_KINDS[code], code, retry
    if code == -2010 and "Duplicate order" in text:
        return "duplicate", code, retry
    if status == 429 or isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
        return "rate_limit", code, retry
    if isinstance(exc, ccxt.InvalidNonce):
        return "clock", code, retry
    if isinstance(exc, ccxt.OrderNotFound):
        return "not_found", code, retry
    if isinstance(exc, ccxt.AuthenticationError):
        return "auth", code, retry
    if isinstance(exc, ccxt.InsufficientFunds | ccxt.InvalidOrder | ccxt.BadRequest
                  | ccxt.OperationRejected):
        return "rejected", code, retry
    if (status is not None and status >= 500) or isinstance(
        exc, ccxt.RequestTimeout | ccxt.ExchangeNotAvailable | ccxt.NetworkError
        | ccxt.BadResponse
    ):
        return "unknown", code, retry
    return "error", code, retry


def mapped(kind: Kind, code: int | None, exc: Exception, params: dict[str, str]) -> Exception:
    cid = params.get("newClientOrderId") or params.get("origClientOrderId") or ""
    if kind == "not_found":
        return NotFound(str(exc))
    if kind == "duplicate":
        return Duplicate(str(exc), client_order_id=cid, code=code or 0)
    if kind in ("rejected", "clock"):
        return VenueRejectedError(f"refused: {exc}", client_order_id=cid, code=code or 0)
    if kind == "auth":
        return VenueAuthError(f"authentication refused (check BINANCE_API_KEY/SECRET): {exc}")
    return VenueError(str(exc))
