"""Binance spot as a cdb venue, through ccxt's asyncio client.

ccxt does the transport: signing (HMAC-SHA256, ``timestamp``, ``recvWindow``), the
aiohttp session, timeouts, and the mapping of Binance's error codes to its exception
classes. cdb calls Binance's *raw* endpoints through it (``request("order", ...)``), not
ccxt's unified methods, because the unified structures carry prices and quantities as
floats, and cdb keeps them exact (e8 integers parsed from Binance's decimal strings).
ccxt's own throttle is off: ``WindowLimiter`` counts Binance's request weights instead.

What this venue guarantees, whatever the exchange does:

- **Never sent twice.** An order whose submission timed out, hit a 5xx or -1007, or lost
  its connection is *unknown*: it is looked up by its client order id (derived from
  cdb's order id) until it is found (adopted) or until a not-found answer arrives after
  ``resolve_window_s`` (it never reached the matching engine: sent once more, at most
  ``max_sends`` in all). Binance accepts a client order id again once its first order
  is closed, so a blind resend of a filled market order would trade twice.
- **Limits honoured.** Request weight and order count stay under the venue's limits on
  the client side; a 429, -1003 or -1015 pauses every request for ``Retry-After`` (or
  an exponential backoff with jitter) and retries, a bounded number of times. A 418 ban
  stops the venue until it ends: every call raises ``VenueBannedError`` at once and a
  critical alert goes out.
- **Bounded retries** for 5xx, timeouts and dropped connections on requests that are
  safe to repeat (queries, cancels); a clock rejected by -1021 is re-synchronised once.
- **Reconciliation.** ``reconcile`` compares what cdb knows with the venue's open orders
  and fills: known orders are adopted with the fills cdb has not recorded, orders that
  never reached the venue are reported as safe to send, unknown open orders reported.

Fills of resting orders are learnt by polling (``on_trades`` polls every
``poll_interval_s`` while orders are open); the user data stream would be the
lower-latency alternative.

Fees: Binance charges a buy's commission in the base asset and a sell's in the quote
asset; both are converted to quote at the fill price, exactly. Commissions in a third
asset (BNB discounts) are recorded as 0.

Layout: ``client`` (ccxt and the request policy: weights, limits, retries, bans),
``errors`` (what each error means), ``records`` (configuration, symbol filters and the
exact records handed out), ``venue`` (the order state machine and reconciliation),
``factory`` (the venue from its name and settings).
"""

from cdb.venues.base import ReconcileReport, VenueOrder, VenueUpdate
from cdb.venues.binance.client import LIVE_URL, TESTNET_URL, AlertHook, BinanceClient
from cdb.venues.binance.errors import (
    OrderUnknownError,
    VenueAuthError,
    VenueBannedError,
    VenueRateLimitedError,
    VenueRejectedError,
    VenueUnavailableError,
    classify,
)
from cdb.venues.binance.factory import make_binance_venue, venue_from_settings
from cdb.venues.binance.records import BinanceVenueConfig, Mode
from cdb.venues.binance.venue import BinanceVenue

__all__ = [
    "LIVE_URL",
    "TESTNET_URL",
    "AlertHook",
    "BinanceClient",
    "BinanceVenue",
    "BinanceVenueConfig",
    "Mode",
    "OrderUnknownError",
    "ReconcileReport",
    "VenueAuthError",
    "VenueBannedError",
    "VenueOrder",
    "VenueRateLimitedError",
    "VenueRejectedError",
    "VenueUnavailableError",
    "VenueUpdate",
    "classify",
    "make_binance_venue",
    "venue_from_settings",
]
