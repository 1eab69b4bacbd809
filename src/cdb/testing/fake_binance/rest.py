"""The fake's REST front: what sits before Binance's matching engine.

Weight accounting per fixed window (``X-MBX-USED-WEIGHT-1M``), 429 with ``Retry-After``
over the limit and a 418 ban for a client that keeps going, order-rate limits
(``X-MBX-ORDER-COUNT-10S``, -1015), API-key and HMAC-SHA256 signature checks
(-2014/-2015, -1022), ``timestamp``/``recvWindow`` (-1021), and the injected REST
faults; the engine (``exchange.Exchange``) answers the rest.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from cdb.testing.fake_binance.faults import Fault
from cdb.testing.fake_binance.records import ApiError

if TYPE_CHECKING:
    from cdb.testing.fake_binance.server import FakeBinance


@dataclass(frozen=True)
class Endpoint:
    """A REST endpoint: its request weight, whether it is signed, the engine's method."""

    weight: int
    signed: bool
    handler: str
    order: bool = False


ENDPOINTS: Final = {
    ("GET", "/api/v3/ping"): Endpoint(1, False, "ping"),
    ("GET", "/api/v3/time"): Endpoint(1, False, "time"),
    ("GET", "/api/v3/exchangeInfo"): Endpoint(20, False, "exchange_info"),
    ("POST", "/api/v3/order"): Endpoint(1, True, "new_order", order=True),
    ("GET", "/api/v3/order"): Endpoint(4, True, "query_order"),
    ("DELETE", "/api/v3/order"): Endpoint(1, True, "cancel_order"),
    ("GET", "/api/v3/openOrders"): Endpoint(6, True, "open_orders"),
    ("GET", "/api/v3/account"): Endpoint(20, True, "account"),
    ("GET", "/api/v3/myTrades"): Endpoint(20, True, "my_trades"),
}
_REST_FAULTS: Final = ("rate_limit", "order_rate_limit", "ban", "server_error", "timeout",
                       "delay", "unknown_status", "reject")
_ORDER_FAULTS: Final = (*_REST_FAULTS, "partial_fill")
_json = msgspec.json.Encoder()


class RestFront:
    """Admission (weight, bans, order rate, signatures) and faults before the engine."""

    def __init__(self, fake: FakeBinance) -> None:
        self._fake = fake
        self._window = (-1, 0)  # (window index, weight used)
        self._violations = (-1, 0)
        self._banned_until = 0.0
        self._order_times: deque[float] = deque()

    async def serve(self, request: Request) -> Response:
        """The ``/api/...`` route."""
        method, path = request.method, request.url.path
        endpoint = ENDPOINTS.get((method, path))
        if endpoint is None:
            return Response(status_code=404)
        self._fake.stats.requests += 1
        query = request.url.query
        body = (await request.body()).decode()
        params = dict(parse_qsl(query, keep_blank_values=True)
                      + parse_qsl(body, keep_blank_values=True))
        if endpoint.order:
            self._fake.order_arrivals.append(params.get("newClientOrderId", ""))
        try:
            headers = self._admit(endpoint)
            kinds = _ORDER_FAULTS if endpoint.order else _REST_FAULTS
            fault = self._fake.faults.take(kinds, method, path)
            if fault is not None and fault.apply == "never":
                early = await self._fault_response(fault, headers)
                if early is not None:
                    return early
            if endpoint.signed:
                self._check_signature(request, query, body, params)
            if endpoint.order:
                headers.update(self._count_order())
            if fault is not None and fault.apply == "after":
                await self._fake.hold(fault.delay_s)
                result = self._call(endpoint, params, fault)
                return self._ok(result, headers)
            result = self._call(endpoint, params, fault)
            if endpoint.order:
                self._fake.stats.orders_placed = len(self._fake.orders)
            if fault is not None and fault.apply == "before":
                late = await self._fault_response(fault, headers)
                if late is not None:
                    return late
            return self._ok(result, headers)
        except ApiError as exc:
            return Response(
                _json.encode({"code": exc.code, "msg": exc.msg}), exc.status,
                headers={**self.weight_headers(), **exc.headers},
                media_type="application/json",
            )

    def _call(self, endpoint: Endpoint, params: dict[str, str], fault: Fault | None) -> object:
        handler: Callable[[dict[str, str], Fault | None], object] = getattr(
            self._fake.exchange, endpoint.handler
        )
        return handler(params, fault)

    def _ok(self, result: object, headers: dict[str, str]) -> Response:
        return Response(_json.encode(result), 200, headers=headers, media_type="application/json")

    def weight_headers(self) -> dict[str, str]:
        """The weight used in the current window, as Binance reports it."""
        used = self._window[1]
        return {"X-MBX-USED-WEIGHT-1M": str(used), "X-MBX-USED-WEIGHT": str(used)}

    def _admit(self, endpoint: Endpoint) -> dict[str, str]:
        """Ban check and weight accounting; raises 418/429 like Binance."""
        fake = self._fake
        now = time.monotonic()
        if now < self._banned_until:
            fake.stats.banned += 1
            raise self._ban_error(self._banned_until - now)
        index = int(now // fake.weight_window_s)
        used = (self._window[1] if self._window[0] == index else 0) + endpoint.weight
        self._window = (index, used)
        fake.stats.weight_used = used
        fake.stats.max_weight_in_window = max(fake.stats.max_weight_in_window, used)
        if used > fake.weight_limit:
            fake.stats.rate_limited += 1
            strikes = (self._violations[1] if self._violations[0] == index else 0) + 1
            self._violations = (index, strikes)
            if fake.ban_after and strikes >= fake.ban_after:
                self._banned_until = now + fake.ban_s
                raise self._ban_error(fake.ban_s)
            retry = (index + 1) * fake.weight_window_s - now
            raise ApiError(
                429, -1003,
                f"Too much request weight used; current limit is {fake.weight_limit} request "
                "weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid "
                "polling the API.",
                {"Retry-After": _retry_after(retry)},
            )
        return self.weight_headers()

    def _ban_error(self, seconds: float) -> ApiError:
        until = self._fake.server_ms() + int(seconds * 1000)
        return ApiError(
            418, -1003,
            f"Way too much request weight used; IP banned until {until}. Please use WebSocket "
            "Streams for live updates to avoid bans.",
            {"Retry-After": _retry_after(seconds)},
        )

    def _count_order(self) -> dict[str, str]:
        fake = self._fake
        now = time.monotonic()
        times = self._order_times
        while times and times[0] <= now - fake.order_window_s:
            times.popleft()
        if len(times) >= fake.order_limit:
            fake.stats.rate_limited += 1
            raise ApiError(
                429, -1015,
                f"Too many new orders; current limit is {fake.order_limit} orders per "
                f"{fake.order_window_s:g} SECOND.",
                {"Retry-After": _retry_after(times[0] + fake.order_window_s - now)},
            )
        times.append(now)
        return {"X-MBX-ORDER-COUNT-10S": str(len(times))}

    async def _fault_response(self, fault: Fault, headers: dict[str, str]) -> Response | None:
        kind = fault.kind
        if kind in ("rate_limit", "order_rate_limit"):
            code = -1003 if kind == "rate_limit" else -1015
            msg = ("Too many requests; please use the websocket for live updates."
                   if kind == "rate_limit" else "Too many new orders.")
            raise ApiError(fault.status or 429, code, msg,
                            {"Retry-After": _retry_after(fault.retry_after_s)})
        if kind == "ban":
            self._banned_until = time.monotonic() + fault.retry_after_s
            self._fake.stats.banned += 1
            raise self._ban_error(fault.retry_after_s)
        if kind == "server_error":
            status = fault.status or 503
            return Response(f"<html><body><h1>{status} Service Unavailable</h1></body></html>",
                            status, headers=headers, media_type="text/html")
        if kind == "unknown_status":
            raise ApiError(fault.status or 503, -1007,
                            "Timeout waiting for response from backend server. Send status "
                            "unknown; execution status unknown.")
        if kind == "timeout":
            await self._fake.hold(fault.delay_s)
            return Response("", 504, headers=headers)
        if kind == "delay":
            await self._fake.hold(fault.delay_s)
            return None
        if kind == "reject":
            raise ApiError(fault.status or 400, fault.code, fault.msg)
        return None  # partial_fill acts inside matching

    def _check_signature(self, request: Request, query: str, body: str,
                         params: dict[str, str]) -> None:
        key = request.headers.get("X-MBX-APIKEY")
        if not key:
            raise ApiError(401, -2014, "API-key format invalid.")
        if key != self._fake.api_key:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        signature = params.get("signature")
        if not signature:
            raise ApiError(400, -1102, "Mandatory parameter 'signature' was not sent, was "
                                        "empty/null, or malformed.")
        total = _strip_signature(query) + _strip_signature(body)
        secret = self._fake.api_secret.encode()
        expected = hmac.new(secret, total.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        stamp = params.get("timestamp", "")
        if not stamp.isdigit():
            raise ApiError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was "
                                        "empty/null, or malformed.")
        window = params.get("recvWindow", "5000")
        if not window.isdigit() or int(window) > 60_000:
            raise ApiError(400, -1131, "recvWindow must be less than 60000")
        server = self._fake.server_ms()
        if int(stamp) >= server + 1000:
            raise ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the "
                                        "server's time.")
        if server - int(stamp) > int(window):
            raise ApiError(400, -1021, "Timestamp for this request is outside of the "
                                        "recvWindow.")


def _retry_after(seconds: float) -> str:
    """Whole seconds as Binance sends them; below 1 s kept fractional so tests run fast."""
    if seconds >= 1:
        return str(math.ceil(seconds))
    return f"{max(seconds, 0.0):.3f}"


def _strip_signature(text: str) -> str:
    return "&".join(p for p in text.split("&") if p and not p.startswith("signature="))
