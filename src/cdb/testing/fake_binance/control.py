"""The fake's control API under ``/_fake``: faults, the ledger, stats, trades, drops.

It lets a process that did not start the fake drive it: ``POST/GET/DELETE
/_fake/faults``, ``GET /_fake/ledger``, ``GET /_fake/stats``, ``POST /_fake/trades``,
``POST /_fake/ws/drop``. It takes ``Authorization: Bearer <control_token>`` when a token
is configured, refuses bodies over ``MAX_BODY`` bytes and numbers that are not finite or
out of range.
"""

from __future__ import annotations

import hmac
import math
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cdb.events import Trade
from cdb.testing.fake_binance.faults import Fault
from cdb.testing.fake_binance.records import f8

if TYPE_CHECKING:
    from cdb.testing.fake_binance.server import FakeBinance

CONTROL: Final = "/_fake"
MAX_BODY: Final = 1024 * 1024
_MAX_TRADES: Final = 10_000
_MAX_E8: Final = 2**63 - 1
_MAX_SECONDS: Final = 86_400.0 * 365
_SYMBOL: Final = re.compile(r"^[A-Z0-9]{1,20}$")
_json = msgspec.json.Encoder()


class Control:
    """The control API's handlers, acting on one fake."""

    def __init__(self, fake: FakeBinance) -> None:
        self._fake = fake

    def routes(self) -> list[Route]:
        """The routes under ``/_fake``, each behind ``guarded``."""
        guard = self.guarded
        return [
            Route(f"{CONTROL}/faults", guard(self.faults), methods=["GET", "POST", "DELETE"]),
            Route(f"{CONTROL}/ledger", guard(self.ledger), methods=["GET"]),
            Route(f"{CONTROL}/stats", guard(self.stats), methods=["GET"]),
            Route(f"{CONTROL}/trades", guard(self.trades), methods=["POST"]),
            Route(f"{CONTROL}/ws/drop", guard(self.drop), methods=["POST"]),
        ]

    def guarded(self, handler: Callable[[Request], Awaitable[Response]]
                 ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind the control token (when configured) and the body bound."""

        async def guarded(request: Request) -> Response:
            if self._fake.control_token is not None:
                scheme, _, value = request.headers.get("authorization", "").partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(
                        value.strip().encode(), self._fake.control_token.encode()):
                    return _detail("send Authorization: Bearer <control token>", 401)
            length = request.headers.get("content-length", "0")
            if not length.isdigit() or int(length) > MAX_BODY:
                return _detail(f"body over {MAX_BODY} bytes", 413)
            return await handler(request)

        return guarded

    async def faults(self, request: Request) -> Response:
        """GET the faults injected so far, POST one, DELETE every live one."""
        if request.method == "DELETE":
            self._fake.clear_faults()
            return Response(b"[]", media_type="application/json")
        if request.method == "POST":
            try:
                fault = _checked_fault(msgspec.json.decode(await _body(request), type=Fault))
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                return _detail(str(exc)[:300], 422)
            return Response(_json.encode(self._fake.inject(fault)), 201,
                            media_type="application/json")
        return Response(_json.encode(self._fake.faults.history), media_type="application/json")

    async def ledger(self, request: Request) -> Response:
        """The venue's truth: every order, fill and balance."""
        fake = self._fake
        body = {"orders": list(fake.orders.values()), "fills": fake.fills,
                "balances": {a: {"free": f8(f), "locked": f8(lk)}
                             for a, (f, lk) in sorted(fake.exchange.balances.items())}}
        return Response(_json.encode(body), media_type="application/json")

    async def stats(self, request: Request) -> Response:
        """The fake's counters (``FakeStats``)."""
        return Response(_json.encode(self._fake.stats), media_type="application/json")

    async def trades(self, request: Request) -> Response:
        """``[{"symbol": "BTCUSDT", "price": "42000.5", "qty": "0.01"}, ...]``."""
        try:
            rows = msgspec.json.decode(await _body(request), type=list[dict[str, str]])
            if len(rows) > _MAX_TRADES:
                raise ValueError(f"at most {_MAX_TRADES} trades per request")
            trades = [self._trade(r) for r in rows]
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError, ValueError) as exc:
            return _detail(str(exc)[:300], 422)
        await self._fake.publish(trades)
        return Response(_json.encode({"published": len(trades)}), 201,
                        media_type="application/json")

    def _trade(self, row: dict[str, str]) -> Trade:
        symbol = row["symbol"]
        if not _SYMBOL.fullmatch(symbol):
            raise ValueError(f"symbol {symbol[:30]!r} is not like BTCUSDT")
        trade = self._fake.trade(symbol, row["price"][:40], row.get("qty", "0.01")[:40])
        for what, value in (("price", trade.price_e8), ("qty", trade.qty_e8)):
            if not 0 < value <= _MAX_E8:
                raise ValueError(f"{what} must be positive and fit 64 bits in e8")
        return trade

    async def drop(self, request: Request) -> Response:
        """Close every stream connection now."""
        return Response(_json.encode({"dropped": self._fake.drop_streams()}),
                        media_type="application/json")


def _detail(text: str, status: int) -> Response:
    return Response(_json.encode({"detail": text}), status, media_type="application/json")


async def _body(request: Request) -> bytes:
    """The request body, at most ``MAX_BODY`` bytes (even without a content-length)."""
    raw = b""
    async for part in request.stream():
        raw += part
        if len(raw) > MAX_BODY:
            raise ValueError(f"body over {MAX_BODY} bytes")
    return raw


def _checked_fault(fault: Fault) -> Fault:
    """``fault`` if its numbers are finite and in range; ValueError says which is not."""
    for name in ("duration_s", "retry_after_s", "delay_s", "fill_ratio"):
        value = getattr(fault, name)
        if value is not None and not (math.isfinite(value) and 0 <= value <= _MAX_SECONDS):
            raise ValueError(f"{name} must be a finite number from 0 to {_MAX_SECONDS:g}")
    if fault.times is not None and not 0 < fault.times <= 10**9:
        raise ValueError("times must be from 1 to 10^9 (or null: while it lasts)")
    if not 0 <= fault.status <= 4999 or not 1 <= fault.parts <= 1000:
        raise ValueError("status must be an HTTP status or close code, parts 1 to 1000")
    if fault.fill_ratio > 1:
        raise ValueError("fill_ratio must be from 0 to 1")
    return fault
