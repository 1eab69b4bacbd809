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
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec
import structlog
from prometheus_client import Counter, Gauge

from cdb.errors import ConfigError, VenueError
from cdb.events import Level, Order, OrderStatus, Trade, fmt_e8, mul_e8, parse_e8
from cdb.observability import metrics
from cdb.resilience.backoff import Backoff
from cdb.venues.base import Execution
from cdb.venues.limiter import Sleep, WindowLimiter

TESTNET_URL: Final = "https://testnet.binance.vision"
LIVE_URL: Final = "https://api.binance.com"
Mode = Literal["testnet", "live"]
AlertHook = Callable[[Level, str, str], Awaitable[object]]

_log = structlog.get_logger(component="binance_venue")
_L = ("service", "instance")
requests_total = Counter(
    "cdb_venue_requests", "Requests to the exchange, by endpoint and outcome",
    (*_L, "endpoint", "outcome"), registry=metrics.REGISTRY,
)
unknown_orders_total = Counter(
    "cdb_venue_unknown_orders", "Order submissions with an unknown outcome, by resolution",
    (*_L, "resolution"), registry=metrics.REGISTRY,
)
weight_used = Gauge(
    "cdb_venue_weight_used", "Request weight used in the current window (client side)", _L,
    registry=metrics.REGISTRY,
)
banned_gauge = Gauge(
    "cdb_venue_banned", "1 while the exchange bans this client (HTTP 418)", _L,
    registry=metrics.REGISTRY,
)

# Binance spot request weights (IP limit): (method, path) -> weight.
_WEIGHTS: Final = {
    ("GET", "ping"): 1, ("GET", "time"): 1, ("GET", "exchangeInfo"): 20,
    ("POST", "order"): 1, ("GET", "order"): 4, ("DELETE", "order"): 1,
    ("GET", "openOrders"): 6, ("GET", "account"): 20, ("GET", "myTrades"): 20,
}
_PUBLIC: Final = frozenset({"ping", "time", "exchangeInfo"})
_FINAL: Final = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})
_STATUS: Final[dict[str, OrderStatus]] = {
    "NEW": "NEW", "PARTIALLY_FILLED": "PARTIALLY_FILLED", "FILLED": "FILLED",
    "CANCELED": "CANCELED", "PENDING_CANCEL": "CANCELED", "REJECTED": "REJECTED",
    "EXPIRED": "EXPIRED", "EXPIRED_IN_MATCH": "EXPIRED",
}
_MS: Final = 1_000_000


# errors --------------------------------------------------------------------------------


class VenueRateLimitedError(VenueError):
    """The venue kept answering 429/-1003/-1015 after every backoff; nothing was placed."""

    def __init__(self, message: str, *, code: int | None, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.code, self.retry_after_s = code, retry_after_s


class VenueBannedError(VenueError):
    """The venue banned this client (HTTP 418); no request is sent until ``until``.

    Args:
        until: ``time.monotonic()`` at which the ban ends.
    """

    def __init__(self, message: str, *, until: float) -> None:
        super().__init__(message)
        self.until = until


class VenueUnavailableError(VenueError):
    """5xx, timeouts or connection failures outlasted the bounded retries."""


class VenueAuthError(VenueError):
    """Key, signature or permissions refused (-1022, -2014, -2015); check the API key."""


class VenueRejectedError(VenueError):
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


class _OutcomeUnknown(Exception):
    """A request may or may not have taken effect (timeout, 5xx, -1007, lost connection)."""


class _NotFound(Exception):
    """-2013 / -2011: no such order."""


# configuration and records -------------------------------------------------------------


class BinanceVenueConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How the Binance venue connects and behaves. Credentials are passed separately
    so they never sit in a printable struct.

    Args:
        mode: ``testnet`` (default) or ``live``: live trading needs this said explicitly.
        rest_url: base URL overriding the mode's (FakeBinance: ``http://127.0.0.1:PORT``).
        weight_limit, weight_window_s: client-side request weight budget (the venue's
            own ``exchangeInfo`` limit lowers it further).
        order_limit, order_window_s: client-side new-order budget.
        timeout_s: one request's timeout.
        recv_window_ms: how long a signed request stays valid.
        max_retries: retries of a repeatable request on 5xx/timeouts.
        max_rate_limit_retries: retries after 429/-1003/-1015 before giving up.
        backoff_base_s, backoff_cap_s: exponential backoff (with jitter) bounds.
        resolve_window_s: how long an unknown order may still appear on the venue.
        resolve_interval_s: pause between look-ups of an unknown order.
        resolve_give_up_s: after this, an order that cannot be looked up stays unknown.
        max_sends: most submissions of one order (each after proof it was not placed).
        poll_interval_s: how often open orders are polled for fills.
        name: the venue's name on fills.
    """

    mode: Mode = "testnet"
    rest_url: str | None = None
    weight_limit: int = 1200
    weight_window_s: float = 60.0
    weight_margin_s: float = 1.0
    order_limit: int = 50
    order_window_s: float = 10.0
    timeout_s: float = 10.0
    recv_window_ms: int = 5000
    max_retries: int = 3
    max_rate_limit_retries: int = 5
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    resolve_window_s: float = 10.0
    resolve_interval_s: float = 1.0
    resolve_give_up_s: float = 60.0
    max_sends: int = 2
    poll_interval_s: float = 2.0
    name: str = ""


class VenueOrder(msgspec.Struct, frozen=True, kw_only=True):
    """An order as the venue reports it (exact)."""

    symbol: str
    venue_order_id: int
    client_order_id: str
    side: str
    type: str
    status: str
    orig_qty_e8: int
    executed_qty_e8: int
    price_e8: int
    time_ms: int


class VenueUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """An order that ended other than filled (expired, cancelled, rejected)."""

    order: Order
    status: OrderStatus
    reason: str
    filled_qty_e8: int
    ts: int


class ReconcileReport(msgspec.Struct, kw_only=True):
    """What reconciliation found.

    ``adopted``: orders cdb knows, found on the venue (now tracked). ``not_on_venue``:
    client ids cdb knows that the venue never saw (safe to send). ``unknown_open``: open
    on the venue, unknown to cdb. ``missing_fills``: executions cdb had not recorded
    (publish them). ``unresolved``: client ids that could not be looked up.
    """

    adopted: list[VenueOrder] = msgspec.field(default_factory=list)
    not_on_venue: list[str] = msgspec.field(default_factory=list)
    unknown_open: list[VenueOrder] = msgspec.field(default_factory=list)
    missing_fills: list[Execution] = msgspec.field(default_factory=list)
    unresolved: list[str] = msgspec.field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing differs between cdb and the venue."""
        return not (self.not_on_venue or self.unknown_open or self.missing_fills
                    or self.unresolved)


class _Fill(msgspec.Struct, frozen=True, kw_only=True):
    trade_id: int
    price_e8: int
    qty_e8: int
    commission_e8: int
    commission_asset: str
    time_ms: int


@dataclass(frozen=True, slots=True)
class _Symbol:
    base: str
    quote: str
    step_e8: int
    tick_e8: int
    min_qty_e8: int
    min_notional_e8: int


@dataclass(slots=True)
class _Tracked:
    order: Order
    status: OrderStatus | Literal["PENDING", "UNKNOWN"] = "PENDING"
    venue_id: int = 0
    cum_e8: int = 0
    fill_ids: set[str] = field(default_factory=set)
    sends: int = 0
    sent_at: float = float("-inf")
    """When it was last sent (clock); a not-found answer proves absence only after
    ``resolve_window_s`` from then."""


# the ccxt client -----------------------------------------------------------------------


@functools.cache
def _exchange_class() -> Any:
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


# the venue -----------------------------------------------------------------------------


class BinanceVenue:
    """Binance spot orders for the execution service (``Venue`` protocol).

    Args:
        config: connection and behaviour.
        api_key, api_secret: the account's credentials (from secrets).
        alert: async ``(level, code, message)`` hook, e.g. ``ServiceContext.alert``.
        service, instance: metric labels.
        clock: monotonic seconds; sleep: waits seconds (tests shorten time).
        now_ns: wall time in ns (event timestamps of reports).
        rng: jitter of backoffs.
    """

    def __init__(
        self, config: BinanceVenueConfig, *, api_key: str, api_secret: str,
        alert: AlertHook | None = None, service: str = "execution", instance: str = "",
        clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep,
        now_ns: Callable[[], int] = time.time_ns, rng: random.Random | None = None,
    ) -> None:
        if not api_key or not api_secret:
            raise ConfigError([
                "BINANCE_API_KEY and BINANCE_API_SECRET: required by the binance venue "
                "(secret files /run/secrets/binance_api_key and binance_api_secret)"
            ])
        self.config = config
        self.name = config.name or ("binance" if config.mode == "live" else "binance-testnet")
        self.alert = alert
        self._key, self._secret = api_key, api_secret
        self._clock, self._sleep, self._now_ns = clock, sleep, now_ns
        self._backoff_policy = Backoff(config.backoff_base_s, config.backoff_cap_s, jitter=0.5,
                                       rng=rng)
        self._weights = WindowLimiter(
            config.weight_limit, config.weight_window_s, margin_s=config.weight_margin_s,
            name="request weight", clock=clock, sleep=sleep,
        )
        self._orders = WindowLimiter(config.order_limit, config.order_window_s,
                                     name="orders", clock=clock, sleep=sleep)
        self._labels = (service, instance or self.name)
        self._exchange: Any = None
        self._start_lock = asyncio.Lock()
        self._symbols: dict[str, _Symbol] = {}
        self._by_cid: dict[str, _Tracked] = {}
        self._by_oid: dict[str, _Tracked] = {}
        self._banned_until = 0.0
        self._last_poll = float("-inf")
        self._backlog: list[Execution] = []
        self.updates: list[VenueUpdate] = []
        """Orders that ended other than filled; ``take_updates`` hands them over."""
        self.started_ns = 0
        self.closed = False

    @property
    def limiter(self) -> WindowLimiter:
        """The request-weight limiter (its ``history`` measures a burst)."""
        return self._weights

    # lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> BinanceVenue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Connect: exchange info (filters, the venue's limits) and the clock offset."""
        async with self._start_lock:
            if self.closed:
                raise VenueError(f"{self.name} venue is closed; make a new one")
            if self._exchange is not None:
                return
            self._exchange = self._make_exchange()
            try:
                info = await self._request("GET", "exchangeInfo", {})
                self._load_info(info)
                await self._sync_time()
            except BaseException:
                exchange, self._exchange = self._exchange, None
                await exchange.close()
                raise
            self.started_ns = self._now_ns()

    def _make_exchange(self) -> Any:
        cfg = self.config
        exchange = _exchange_class()({
            "apiKey": self._key, "secret": self._secret, "enableRateLimit": False,
            "timeout": int(cfg.timeout_s * 1000),
            "options": {"defaultType": "spot", "recvWindow": cfg.recv_window_ms,
                        "adjustForTimeDifference": False, "fetchCurrencies": False,
                        "timeDifference": 0},
        })
        if cfg.mode == "testnet":
            exchange.set_sandbox_mode(True)
        if cfg.rest_url:
            base = cfg.rest_url.rstrip("/")
            exchange.urls["api"].update({"public": f"{base}/api/v3", "private": f"{base}/api/v3",
                                         "v1": f"{base}/api/v1"})
        exchange.cdb_observe = self._observe
        return exchange

    async def aclose(self) -> None:
        """Close the HTTP session (idempotent)."""
        self.closed = True
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            await exchange.close()

    def _load_info(self, info: Any) -> None:
        for limit in info.get("rateLimits", []):
            if limit.get("rateLimitType") == "REQUEST_WEIGHT" and limit.get("interval") == "MINUTE":
                per_window = int(limit["limit"] * self.config.weight_window_s / 60
                                 / limit.get("intervalNum", 1))
                self._weights.limit = max(1, min(self._weights.limit, per_window))
        for row in info.get("symbols", []):
            filters = {f["filterType"]: f for f in row.get("filters", [])}
            lot, price = filters.get("LOT_SIZE", {}), filters.get("PRICE_FILTER", {})
            notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
            self._symbols[row["symbol"]] = _Symbol(
                base=row["baseAsset"], quote=row["quoteAsset"],
                step_e8=parse_e8(lot.get("stepSize", "0.00000001")) or 1,
                tick_e8=parse_e8(price.get("tickSize", "0.00000001")) or 1,
                min_qty_e8=parse_e8(lot.get("minQty", "0")),
                min_notional_e8=parse_e8(notional.get("minNotional", "0")),
            )

    async def _sync_time(self) -> None:
        before = self._now_ns() // _MS
        body = await self._request("GET", "time", {})
        after = self._now_ns() // _MS
        self._exchange.options["timeDifference"] = (before + after) // 2 - int(body["serverTime"])

    async def balances(self) -> dict[str, tuple[int, int]]:
        """``(free, locked)`` e8 of every asset of the account (weight 20)."""
        await self.start()
        body = await self._request("GET", "account", {})
        return {str(b["asset"]): (parse_e8(str(b["free"])), parse_e8(str(b["locked"])))
                for b in body.get("balances", [])}

    async def ping(self) -> None:
        """Health probe: one ``/api/v3/ping``; raises ``VenueError`` when unreachable."""
        await self.start()
        await self._request("GET", "ping", {}, retries=0)

    # requests ----------------------------------------------------------------------------

    def _observe(self, headers: dict[str, str]) -> None:
        used = headers.get("x-mbx-used-weight-1m")
        if used is not None and used.isdigit():
            self._weights.observe(int(used))
        weight_used.labels(*self._labels).set(self._weights.used)

    def _check_ban(self) -> None:
        left = self._banned_until - self._clock()
        if left > 0:
            raise VenueBannedError(
                f"{self.name}: banned by the exchange (HTTP 418) for {left:.0f} s more; no "
                "request is sent until then", until=self._banned_until)

    def _backoff(self, attempt: int) -> float:
        return self._backoff_policy.compute(attempt)

    async def _request(
        self, method: str, path: str, params: dict[str, str], *, outcome_matters: bool = False,
        retries: int | None = None,
    ) -> Any:
        """One Binance call under the limiters, with backoff and bounded retries.

        Args:
            outcome_matters: a failure that may have taken effect raises ``_OutcomeUnknown``
                instead of being retried (order placement).
            retries: retries on 5xx/timeouts (default ``max_retries``).
        """
        weight = _WEIGHTS[(method, path)]
        if path == "openOrders" and "symbol" not in params:
            weight = 80
        elif path == "myTrades" and "orderId" in params:
            weight = 5
        api = ["public" if path in _PUBLIC else "private"]
        tries = _Tries(self.config.max_retries if retries is None else retries)
        while True:
            self._check_ban()
            await self._weights.acquire(weight)
            if method == "POST":
                await self._orders.acquire(1)
            try:
                result = await self._exchange.request(path, api, method, dict(params))
            except Exception as exc:
                kind, code, retry_after = classify(exc)
                requests_total.labels(*self._labels, path, kind).inc()
                if kind == "unknown" and outcome_matters:
                    raise _OutcomeUnknown(str(exc)) from exc
                await self._recover(f"{method} {path}", kind, code, retry_after, exc, tries)
                if kind not in ("rate_limit", "clock", "unknown"):
                    raise _mapped(kind, code, exc, params) from exc
            else:
                requests_total.labels(*self._labels, path, "ok").inc()
                return result

    async def _recover(self, what: str, kind: Kind, code: int | None,
                       retry_after: float | None, exc: Exception, tries: _Tries) -> None:
        """Wait out a failure worth retrying, or raise when retrying cannot help."""
        if kind == "ban":
            await self._banned(retry_after, exc)
        elif kind == "rate_limit":
            tries.limited += 1
            if tries.limited > self.config.max_rate_limit_retries:
                await self._alert("warning", "venue_rate_limited",
                                  f"{self.name} {what}: still rate limited after "
                                  f"{tries.limited - 1} backoffs: {exc}")
                raise VenueRateLimitedError(f"{self.name} {what}: rate limited: {exc}",
                                            code=code, retry_after_s=retry_after) from exc
            delay = retry_after if retry_after is not None else self._backoff(tries.limited)
            _log.warning("rate limited; backing off", venue=self.name, request=what, code=code,
                         delay_s=round(delay, 3))
            self._weights.pause(delay)  # every caller waits, not just this one
            if code == -1015:
                self._orders.pause(delay)
        elif kind == "clock":
            if tries.resynced:
                raise _mapped(kind, code, exc, {}) from exc
            tries.resynced = True
            await self._sync_time()
        elif kind == "unknown":
            tries.failures += 1
            if tries.failures > tries.retries:
                raise VenueUnavailableError(
                    f"{self.name} {what}: failed {tries.failures} times: {exc}") from exc
            await self._sleep(self._backoff(tries.failures))

    async def _banned(self, retry_after: float | None, exc: Exception) -> None:
        seconds = retry_after if retry_after is not None else 120.0
        self._banned_until = max(self._banned_until, self._clock() + seconds)
        banned_gauge.labels(*self._labels).set(1)
        message = f"{self.name}: the exchange banned this client (HTTP 418) for {seconds:g} s"
        _log.error("banned by the exchange", venue=self.name, seconds=seconds, error=str(exc))
        await self._alert("critical", "venue_banned", message)
        raise VenueBannedError(message, until=self._banned_until) from exc

    async def _alert(self, level: Level, code: str, message: str) -> None:
        if self.alert is None:
            return
        try:
            await self.alert(level, code, message)
        except Exception:  # an alert that cannot be sent must not change the order's fate
            _log.exception("alert failed", code=code)

    # the Venue protocol --------------------------------------------------------------------

    async def submit(self, order: Order) -> list[Execution]:
        """Place ``order`` once (idempotent on its client order id); executions so far.

        Raises:
            VenueRejectedError: refused (filters, balance); not placed.
            OrderUnknownError: placed or not, it could not be established; kept as
                unknown and resolved by a later poll or ``reconcile``, never resent.
            VenueBannedError, VenueRateLimitedError: not placed; a redelivery may retry.
        """
        tracked = self._by_cid.get(order.client_order_id)
        if tracked is not None and tracked.status != "UNKNOWN":
            return self._take_backlog()  # a resend of a known order never trades twice
        await self.start()
        if tracked is None:
            tracked = self._track(order, "PENDING")
        try:
            body = None
            if tracked.status == "UNKNOWN":
                body = await self._resolve(tracked)
            elif order.ts < self.started_ns:
                body = await self._lookup(order)  # a predecessor may have sent it
            if body is None:
                body = await self._place(tracked)
        except VenueRejectedError as exc:
            self._close(tracked, "REJECTED", str(exc))
            raise
        except (VenueBannedError, VenueRateLimitedError, VenueAuthError):
            if tracked.status != "UNKNOWN":
                self._forget(tracked)  # refused for sure, never placed: a redelivery may retry
            raise
        except BaseException:
            tracked.status = "UNKNOWN"  # sent or not, only a look-up may tell now
            raise
        return self._take_backlog() + await self._adopt(tracked, body)

    def _track(self, order: Order, status: Literal["PENDING", "UNKNOWN"]) -> _Tracked:
        tracked = _Tracked(order, status=status)
        self._by_cid[order.client_order_id] = tracked
        self._by_oid[order.id] = tracked
        return tracked

    async def cancel(self, order_id: str) -> bool:
        """Cancel an open order by cdb order id; False when it was not open."""
        tracked = self._by_oid.get(order_id)
        if tracked is None or tracked.status in _FINAL or tracked.status == "PENDING":
            return False
        params = {"symbol": tracked.order.symbol,
                  "origClientOrderId": tracked.order.client_order_id}
        try:
            body = await self._request("DELETE", "order", params)
        except _NotFound:
            body = await self._query(tracked.order)  # filled or gone meanwhile: learn which
            self._backlog.extend(await self._adopt(tracked, body))
            return False
        # The caller reports a cancel it asked for; only fills found here are new.
        self._backlog.extend(await self._adopt(tracked, body, report=False))
        return True

    async def on_trades(self, trades: Sequence[Trade]) -> list[Execution]:
        """Poll open orders for fills every ``poll_interval_s`` (trades pace it)."""
        if not self._open() or self._clock() - self._last_poll < self.config.poll_interval_s:
            return self._take_backlog()
        return await self.poll()

    def open_orders(self) -> list[Order]:
        return [t.order for t in self._by_cid.values()
                if t.status in ("NEW", "PARTIALLY_FILLED", "UNKNOWN")]

    def take_updates(self) -> list[VenueUpdate]:
        """Orders that ended other than filled since the last call."""
        updates, self.updates = self.updates, []
        return updates

    def _open(self) -> list[_Tracked]:
        return [t for t in self._by_cid.values()
                if t.status in ("NEW", "PARTIALLY_FILLED", "UNKNOWN")]

    def _take_backlog(self) -> list[Execution]:
        backlog, self._backlog = self._backlog, []
        return backlog

    async def poll(self) -> list[Execution]:
        """Look at every open or unknown order; new executions (errors are logged, not
        raised: polling runs on the market data path)."""
        self._last_poll = self._clock()
        executions = self._take_backlog()
        for tracked in self._open():
            try:
                body = await self._query(tracked.order)
            except _NotFound:
                if tracked.status != "UNKNOWN":
                    self._close(tracked, "EXPIRED", "vanished from the venue")
                elif self._clock() - tracked.sent_at >= self.config.resolve_window_s:
                    # Proven absent: closed, not sent late at a price decided long ago.
                    unknown_orders_total.labels(*self._labels, "absent").inc()
                    self._close(tracked, "EXPIRED", "never reached the venue")
                continue
            except VenueError as exc:
                _log.warning("poll failed", venue=self.name, error=str(exc))
                break
            if tracked.status == "UNKNOWN":
                unknown_orders_total.labels(*self._labels, "adopted_later").inc()
            executions.extend(await self._adopt(tracked, body))
        return executions

    # placement and resolution --------------------------------------------------------------

    def _order_params(self, order: Order) -> dict[str, str]:
        info = self._symbols.get(order.symbol)
        cid = order.client_order_id
        if info is None:
            raise VenueRejectedError(f"{self.name}: unknown symbol {order.symbol}",
                                     client_order_id=cid)
        qty = order.qty_e8 // info.step_e8 * info.step_e8  # never more than risk approved
        price = order.price_e8 if order.order_type == "LIMIT" else order.ref_price_e8
        if order.order_type == "LIMIT":
            price = price // info.tick_e8 * info.tick_e8
        if qty < max(info.min_qty_e8, 1) or mul_e8(qty, price) < info.min_notional_e8:
            raise VenueRejectedError(
                f"{self.name}: {cid} quantity {fmt_e8(order.qty_e8)} {order.symbol} is below the "
                f"venue's minimum (step {fmt_e8(info.step_e8)}, min notional "
                f"{fmt_e8(info.min_notional_e8)})", client_order_id=cid)
        params = {"symbol": order.symbol, "side": order.side, "type": order.order_type,
                  "quantity": fmt_e8(qty), "newClientOrderId": cid, "newOrderRespType": "FULL"}
        if order.order_type == "LIMIT":
            params.update(timeInForce="GTC", price=fmt_e8(price))
        return params

    async def _place(self, tracked: _Tracked) -> Any:
        order = tracked.order
        params = self._order_params(order)
        while True:
            if tracked.sends >= self.config.max_sends:
                raise OrderUnknownError(
                    f"{self.name}: {order.client_order_id} not placed after {tracked.sends} "
                    "sends", client_order_id=order.client_order_id)
            tracked.sends += 1
            tracked.sent_at = self._clock()
            try:
                return await self._request("POST", "order", params, outcome_matters=True)
            except _OutcomeUnknown as exc:
                _log.warning("order outcome unknown; resolving by client order id",
                             venue=self.name, client_order_id=order.client_order_id,
                             error=str(exc))
            except _Duplicate:
                pass  # open on the venue already: adopt it
            tracked.status = "UNKNOWN"
            found = await self._resolve(tracked)
            if found is not None:
                return found
            _log.info("order proven absent; sending it once more", venue=self.name,
                      client_order_id=order.client_order_id)

    async def _query(self, order: Order) -> Any:
        return await self._request(
            "GET", "order", {"symbol": order.symbol, "origClientOrderId": order.client_order_id}
        )

    async def _lookup(self, order: Order) -> Any:
        """The order if the venue has it, None if it says it has not."""
        try:
            return await self._query(order)
        except _NotFound:
            return None

    async def _resolve(self, tracked: _Tracked) -> Any:
        """Find an order of unknown outcome: its venue record, or None once a not-found
        answer comes ``resolve_window_s`` after its last send (it never reached the
        matching engine)."""
        cfg = self.config
        order = tracked.order
        started = self._clock()
        while True:
            try:
                found = await self._query(order)
                unknown_orders_total.labels(*self._labels, "adopted").inc()
                return found
            except _NotFound:
                if self._clock() - tracked.sent_at >= cfg.resolve_window_s:
                    unknown_orders_total.labels(*self._labels, "absent").inc()
                    return None
            except (VenueUnavailableError, VenueRateLimitedError) as exc:
                if self._clock() - started >= cfg.resolve_give_up_s:
                    unknown_orders_total.labels(*self._labels, "unresolved").inc()
                    await self._alert("warning", "venue_order_unknown",
                                      f"{self.name}: cannot tell whether "
                                      f"{order.client_order_id} was placed: {exc}")
                    raise OrderUnknownError(
                        f"{self.name}: outcome of {order.client_order_id} unknown: {exc}",
                        client_order_id=order.client_order_id) from exc
            await self._sleep(cfg.resolve_interval_s)

    async def _adopt(self, tracked: _Tracked, body: Any, *, report: bool = True
                     ) -> list[Execution]:
        """Take the venue's record of an order: its status and any fills not yet reported."""
        order = tracked.order
        tracked.venue_id = int(body["orderId"])
        status = _STATUS.get(str(body.get("status")), "NEW")
        executed = parse_e8(str(body.get("executedQty", "0")))
        stamp = int(body.get("transactTime") or body.get("updateTime") or 0)
        fills = [_fill(f, stamp) for f in body.get("fills") or ()]
        if executed > sum(f.qty_e8 for f in fills):
            rows = await self._request("GET", "myTrades", {
                "symbol": order.symbol, "orderId": str(tracked.venue_id)})
            fills = [_trade_row(r) for r in rows]
        executions = self._executions(tracked, fills, status)
        if status in _FINAL:
            self._close(tracked, status, f"{status.lower()} on the venue", report=report)
        elif tracked.status in ("PENDING", "UNKNOWN", "NEW", "PARTIALLY_FILLED"):
            tracked.status = status
        return executions

    def _executions(self, tracked: _Tracked, fills: Iterable[_Fill],
                    status: OrderStatus) -> list[Execution]:
        order = tracked.order
        info = self._symbols.get(order.symbol)
        ordered = sorted(fills, key=lambda f: f.trade_id)
        cum = 0
        out: list[Execution] = []
        for i, f in enumerate(ordered):
            cum += f.qty_e8
            fill_id = f"{order.symbol}-{f.trade_id}"
            if fill_id in tracked.fill_ids:
                continue
            tracked.fill_ids.add(fill_id)
            last = i == len(ordered) - 1
            out.append(Execution(
                order=order, ts=f.time_ms * _MS, price_e8=f.price_e8, qty_e8=f.qty_e8,
                fee_e8=_fee(f, info), venue_fill_id=fill_id,
                status=status if last and status != "NEW" else "PARTIALLY_FILLED",
                cum_qty_e8=cum,
            ))
        tracked.cum_e8 = max(tracked.cum_e8, cum)
        return out

    def _close(self, tracked: _Tracked, status: OrderStatus, reason: str, *,
               report: bool = True) -> None:
        previous = tracked.status
        tracked.status = status
        if report and status != "FILLED" and previous not in _FINAL:
            self.updates.append(VenueUpdate(order=tracked.order, status=status, reason=reason,
                                            filled_qty_e8=tracked.cum_e8, ts=self._now_ns()))

    def _forget(self, tracked: _Tracked) -> None:
        self._by_cid.pop(tracked.order.client_order_id, None)
        self._by_oid.pop(tracked.order.id, None)

    # reconciliation ----------------------------------------------------------------------

    async def reconcile(
        self, orders: Iterable[Order], *, known_fill_ids: Collection[str] = (),
    ) -> ReconcileReport:
        """Compare what cdb knows with the venue; adopt known orders, report differences.

        Args:
            orders: orders cdb has sent or may have sent and not seen finish.
            known_fill_ids: ``venue_fill_id`` of every fill cdb has recorded for them.
        """
        await self.start()
        report = ReconcileReport()
        known = {o.client_order_id: o for o in orders}
        for cid, order in known.items():
            tracked = self._by_cid.get(cid) or self._track(order, "UNKNOWN")
            tracked.fill_ids.update(f for f in known_fill_ids
                                    if f.startswith(f"{order.symbol}-"))
            try:
                body = await self._query(order)
            except _NotFound:
                report.not_on_venue.append(cid)
                self._forget(tracked)  # never placed: submitting it is safe
                continue
            except VenueError as exc:
                _log.warning("reconcile: lookup failed", client_order_id=cid, error=str(exc))
                report.unresolved.append(cid)
                continue
            report.missing_fills.extend(await self._adopt(tracked, body))
            report.adopted.append(_venue_order(body))
        for row in await self._request("GET", "openOrders", {}):
            if row.get("clientOrderId") not in known:
                report.unknown_open.append(_venue_order(row))
        if report.unknown_open:
            await self._alert(
                "warning", "venue_unknown_open_orders",
                f"{self.name}: {len(report.unknown_open)} open order(s) unknown to cdb: "
                + ", ".join(o.client_order_id for o in report.unknown_open[:10]))
        _log.info("reconciled", venue=self.name, adopted=len(report.adopted),
                  not_on_venue=len(report.not_on_venue), unknown_open=len(report.unknown_open),
                  missing_fills=len(report.missing_fills), unresolved=len(report.unresolved))
        return report


@dataclass(slots=True)
class _Tries:
    retries: int
    failures: int = 0
    limited: int = 0
    resynced: bool = False


class _Duplicate(VenueRejectedError):
    """-2010 "Duplicate order sent.": an open order already has this client id."""


def _mapped(kind: Kind, code: int | None, exc: Exception, params: dict[str, str]) -> Exception:
    cid = params.get("newClientOrderId") or params.get("origClientOrderId") or ""
    if kind == "not_found":
        return _NotFound(str(exc))
    if kind == "duplicate":
        return _Duplicate(str(exc), client_order_id=cid, code=code or 0)
    if kind in ("rejected", "clock"):
        return VenueRejectedError(f"refused: {exc}", client_order_id=cid, code=code or 0)
    if kind == "auth":
        return VenueAuthError(f"authentication refused (check BINANCE_API_KEY/SECRET): {exc}")
    return VenueError(str(exc))


def _fill(row: Any, time_ms: int) -> _Fill:
    return _Fill(trade_id=int(row["tradeId"]), price_e8=parse_e8(row["price"]),
                 qty_e8=parse_e8(row["qty"]), commission_e8=parse_e8(row["commission"]),
                 commission_asset=str(row["commissionAsset"]), time_ms=time_ms)


def _trade_row(row: Any) -> _Fill:
    return _Fill(trade_id=int(row["id"]), price_e8=parse_e8(row["price"]),
                 qty_e8=parse_e8(row["qty"]), commission_e8=parse_e8(row["commission"]),
                 commission_asset=str(row["commissionAsset"]), time_ms=int(row["time"]))


def _fee(fill: _Fill, info: _Symbol | None) -> int:
    if info is None or fill.commission_asset == info.quote:
        return fill.commission_e8
    if fill.commission_asset == info.base:
        return mul_e8(fill.commission_e8, fill.price_e8)
    return 0


def _venue_order(row: Any) -> VenueOrder:
    return VenueOrder(
        symbol=str(row["symbol"]), venue_order_id=int(row["orderId"]),
        client_order_id=str(row["clientOrderId"]), side=str(row["side"]),
        type=str(row["type"]), status=str(row["status"]),
        orig_qty_e8=parse_e8(str(row["origQty"])),
        executed_qty_e8=parse_e8(str(row["executedQty"])),
        price_e8=parse_e8(str(row["price"])), time_ms=int(row.get("time") or 0),
    )


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
