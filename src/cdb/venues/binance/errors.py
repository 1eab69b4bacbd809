"""What Binance's errors mean for cdb: the exceptions callers see, and ``classify``.

Binance's code decides first, because ccxt maps some codes differently by URL (-1015 is
a rate limit on one map and an invalid order on another), then the HTTP status, then
ccxt's class.
"""

from __future__ import annotations

from typing import Final, Literal

from cdb.errors import OrderNotPlacedError, VenueError


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
    """The cdb exception for an error that retrying did not (or cannot) cure."""
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
