"""Talking to Binance: ccxt for the transport, cdb's request policy on top.

ccxt does the transport (signing, the aiohttp session, timeouts) and maps Binance's codes
to its exception classes; ``CdbBinance`` adds what ccxt drops (the HTTP status, so a 418
ban is told from a 429, and ``Retry-After``) and reports the venue's weight count.

``BinanceClient.request`` is the one way to call Binance: request weight and order count
stay under the venue's limits on the client side; a 429, -1003 or -1015 pauses every
request for ``Retry-After`` (or an exponential backoff with jitter) and retries, a bounded
number of times; a 418 ban stops every request until it ends, with a critical alert; 5xx,
timeouts and dropped connections are retried on requests safe to repeat; a clock
rejected by -1021 is re-synchronised once; what is left is raised as cdb's error
(``errors``).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog
from prometheus_client import Counter, Gauge

from cdb.errors import ConfigError
from cdb.events import Level
from cdb.observability import metrics
from cdb.resilience.backoff import Backoff
from cdb.venues.binance.errors import (
    Kind,
    OutcomeUnknown,
    VenueBannedError,
    VenueRateLimitedError,
    VenueUnavailableError,
    classify,
    mapped,
)
from cdb.venues.limiter import Sleep, WindowLimiter

if TYPE_CHECKING:
    from cdb.venues.binance.records import BinanceVenueConfig

AlertHook = Callable[[Level, str, str], Awaitable[object]]

TESTNET_URL: Final = "https://testnet.binance.vision"
LIVE_URL: Final = "https://api.binance.com"

# Binance spot request weights (IP limit): (method, path) -> weight.
WEIGHTS: Final = {
    ("GET", "ping"): 1, ("GET", "time"): 1, ("GET", "exchangeInfo"): 20,
    ("POST", "order"): 1, ("GET", "order"): 4, ("DELETE", "order"): 1,
    ("GET", "openOrders"): 6, ("GET", "account"): 20, ("GET", "myTrades"): 20,
}
PUBLIC: Final = frozenset({"ping", "time", "exchangeInfo"})

_log = structlog.get_logger(component="binance_venue")
_L = ("service", "instance")
requests_total = Counter(
    "cdb_venue_requests", "Requests to the exchange, by endpoint and outcome",
    (*_L, "endpoint", "outcome"), registry=metrics.REGISTRY,
)
weight_used = Gauge(
    "cdb_venue_weight_used", "Request weight used in the current window (client side)", _L,
    registry=metrics.REGISTRY,
)
banned_gauge = Gauge(
    "cdb_venue_banned", "1 while the exchange bans this client (HTTP 418)", _L,
    registry=metrics.REGISTRY,
)

_MS: Final = 1_000_000


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


@dataclass(slots=True)
class _Tries:
    retries: int
    failures: int = 0
    limited: int = 0
    resynced: bool = False


class BinanceClient:
    """One account's connection to Binance, under the request policy (module docstring).

    Args:
        config: connection and limits.
        api_key, api_secret: the account's credentials.
        name: the venue's name (messages).
        alert: async ``(level, code, message)`` hook; a failing hook is logged.
        labels: ``(service, instance)`` of the metrics.
        clock: monotonic seconds; sleep: waits seconds (tests shorten time).
        now_ns: wall time in ns (clock offset).
        rng: jitter of backoffs.
    """

    def __init__(
        self, config: BinanceVenueConfig, *, api_key: str, api_secret: str, name: str,
        alert: AlertHook | None = None, labels: tuple[str, str] = ("execution", ""),
        clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep,
        now_ns: Callable[[], int] = time.time_ns, rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self._alert_hook = alert
        self._key, self._secret = api_key, api_secret
        self._clock, self._sleep, self._now_ns = clock, sleep, now_ns
        self._backoff = Backoff(config.backoff_base_s, config.backoff_cap_s, jitter=0.5, rng=rng)
        self.weights = WindowLimiter(
            config.weight_limit, config.weight_window_s, margin_s=config.weight_margin_s,
            name="request weight", clock=clock, sleep=sleep,
        )
        self.orders = WindowLimiter(config.order_limit, config.order_window_s,
                                    name="orders", clock=clock, sleep=sleep)
        self._labels = labels
        self._exchange: Any = None
        self._banned_until = 0.0

    @property
    def connected(self) -> bool:
        """Whether ``connect`` succeeded and ``aclose`` has not been called since."""
        return self._exchange is not None

    async def connect(self) -> Any:
        """Open the session, take the venue's limits and clock offset; exchange info."""
        self._exchange = self._make_exchange()
        try:
            info = await self.request("GET", "exchangeInfo", {})
            self._take_limits(info)
            await self._sync_time()
        except BaseException:
            exchange, self._exchange = self._exchange, None
            await exchange.close()
            raise
        return info

    def _make_exchange(self) -> Any:
        cfg = self.config
        exchange = exchange_class()({
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
            if base.startswith("http://"):
                exchange.timeout_on_exit = 0  # ccxt's wait on close lets TLS shut down cleanly
        exchange.cdb_observe = self._observe
        return exchange

    async def aclose(self) -> None:
        """Close the HTTP session (idempotent)."""
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            await exchange.close()

    def _take_limits(self, info: Any) -> None:
        for limit in info.get("rateLimits", []):
            if limit.get("rateLimitType") == "REQUEST_WEIGHT" and limit.get("interval") == "MINUTE":
                per_window = int(limit["limit"] * self.config.weight_window_s / 60
                                 / limit.get("intervalNum", 1))
                self.weights.limit = max(1, min(self.weights.limit, per_window))

    async def _sync_time(self) -> None:
        before = self._now_ns() // _MS
        body = await self.request("GET", "time", {})
        after = self._now_ns() // _MS
        self._exchange.options["timeDifference"] = (before + after) // 2 - int(body["serverTime"])

    def _observe(self, headers: dict[str, str]) -> None:
        used = headers.get("x-mbx-used-weight-1m")
        if used is not None and used.isdigit():
            self.weights.observe(int(used))
        weight_used.labels(*self._labels).set(self.weights.used)

    def _check_ban(self) -> None:
        left = self._banned_until - self._clock()
        if left > 0:
            raise VenueBannedError(
                f"{self.name}: banned by the exchange (HTTP 418) for {left:.0f} s more; no "
                "request is sent until then", until=self._banned_until)

    async def request(
        self, method: str, path: str, params: dict[str, str], *, outcome_matters: bool = False,
        retries: int | None = None,
    ) -> Any:
        """One Binance call under the limiters, with backoff and bounded retries.

        Args:
            outcome_matters: a failure that may have taken effect raises ``OutcomeUnknown``
                instead of being retried (order placement).
            retries: retries on 5xx/timeouts (default ``max_retries``).
        """
        weight = WEIGHTS[(method, path)]
        if path == "openOrders" and "symbol" not in params:
            weight = 80
        elif path == "myTrades" and "orderId" in params:
            weight = 5
        api = ["public" if path in PUBLIC else "private"]
        tries = _Tries(self.config.max_retries if retries is None else retries)
        while True:
            self._check_ban()
            await self.weights.acquire(weight)
            if method == "POST":
                await self.orders.acquire(1)
            try:
                result = await self._exchange.request(path, api, method, dict(params))
            except Exception as exc:
                kind, code, retry_after = classify(exc)
                requests_total.labels(*self._labels, path, kind).inc()
                if kind == "unknown" and outcome_matters:
                    raise OutcomeUnknown(str(exc)) from exc
                await self._recover(f"{method} {path}", kind, code, retry_after, exc, tries)
                if kind not in ("rate_limit", "clock", "unknown"):
                    raise mapped(kind, code, exc, params) from exc
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
                await self.alert("warning", "venue_rate_limited",
                                 f"{self.name} {what}: still rate limited after "
                                 f"{tries.limited - 1} backoffs: {exc}")
                raise VenueRateLimitedError(f"{self.name} {what}: rate limited: {exc}",
                                            code=code, retry_after_s=retry_after) from exc
            delay = retry_after if retry_after is not None else self._backoff.compute(
                tries.limited)
            _log.warning("rate limited; backing off", venue=self.name, request=what, code=code,
                         delay_s=round(delay, 3))
            self.weights.pause(delay)  # every caller waits, not just this one
            if code == -1015:
                self.orders.pause(delay)
        elif kind == "clock":
            if tries.resynced:
                raise mapped(kind, code, exc, {}) from exc
            tries.resynced = True
            await self._sync_time()
        elif kind == "unknown":
            tries.failures += 1
            if tries.failures > tries.retries:
                raise VenueUnavailableError(
                    f"{self.name} {what}: failed {tries.failures} times: {exc}") from exc
            await self._sleep(self._backoff.compute(tries.failures))

    async def _banned(self, retry_after: float | None, exc: Exception) -> None:
        seconds = retry_after if retry_after is not None else 120.0
        self._banned_until = max(self._banned_until, self._clock() + seconds)
        banned_gauge.labels(*self._labels).set(1)
        message = f"{self.name}: the exchange banned this client (HTTP 418) for {seconds:g} s"
        _log.error("banned by the exchange", venue=self.name, seconds=seconds, error=str(exc))
        await self.alert("critical", "venue_banned", message)
        raise VenueBannedError(message, until=self._banned_until) from exc

    async def alert(self, level: Level, code: str, message: str) -> None:
        """Raise an alert through the hook; one that cannot be sent changes nothing else."""
        if self._alert_hook is None:
            return
        try:
            await self._alert_hook(level, code, message)
        except Exception:  # an alert that cannot be sent must not change the order's fate
            _log.exception("alert failed", code=code)
