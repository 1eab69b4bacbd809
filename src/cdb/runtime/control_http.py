"""The services' control operations as HTTP routes: risk's (``cdb.services.risk_api``)
and execution's venue ledger.

``GET /ess`` and ``GET /risk/state`` are open (like ``/health``); ``POST /ess/trip``
and ``POST /ess/reset`` need ``Authorization: Bearer <CDB_API_TOKEN>``. The token is
checked before the body is read, so a request without it learns nothing and changes
nothing (401), whatever it sent. A service without a configured token refuses every
change (403): an API that anyone on the network could reset is worse than none.

Bodies are JSON objects ``{"actor": "who", "reason": "why"}``; anything else gets 400
with what was wrong. A reset refused (ACTIVE, or within the cooldown) is 409 with the
reason and, for the cooldown, the seconds left (also as ``Retry-After``); one that
cannot be saved is 503.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Iterable
from typing import Any

import msgspec
from fastapi import APIRouter, Request, Response

from cdb.risk.ess import COOLDOWN, ResetRefused
from cdb.runtime.http import json_response
from cdb.services.base import Service
from cdb.services.execution import ExecutionService
from cdb.services.risk import RiskService
from cdb.services.risk_api import ResetRequest, RiskApi, TripRequest, parse_request
from cdb.venues.base import KeepsLedger


def _error(status: int, error: str, detail: str, headers: dict[str, str] | None = None,
           **extra: Any) -> Response:
    return json_response({"error": error, "detail": detail, **extra}, status, headers)


def _refused_auth(request: Request, token: str | None) -> Response | None:
    """The response refusing ``request``, or None when it carries the token."""
    if not token:
        return _error(403, "disabled", "changes are disabled: this service has no "
                      "CDB_API_TOKEN configured (set it, or its secret file, and restart)")
    given = request.headers.get("authorization", "")
    scheme, _, credentials = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    ):
        what = "a wrong token" if given else "no token"
        return _error(401, "unauthorized",
                      f"request had {what}: send 'Authorization: Bearer <CDB_API_TOKEN>'",
                      {"WWW-Authenticate": 'Bearer realm="cdb"'})
    return None


def risk_router(api: RiskApi) -> APIRouter:
    """The routes of one risk service's control operations."""
    router = APIRouter(tags=["risk"])

    @router.get("/ess")
    async def get_ess() -> Response:
        """The ESS: state, reason, since when, cooldown left, trips."""
        return json_response(api.ess())

    @router.get("/risk/state")
    async def get_risk_state() -> Response:
        """Positions, exposure, equity, limits and the ESS."""
        return json_response(api.state())

    @router.post("/ess/trip")
    async def post_trip(request: Request) -> Response:
        """HALT by hand (idempotent: tripping a HALTED ESS changes nothing)."""
        refused = _refused_auth(request, api.token)
        if refused is not None:
            return refused
        body = parse_request(await request.body(), TripRequest)
        if isinstance(body, str):
            return _error(400, "bad_request", body)
        return json_response(await api.trip(body))

    @router.post("/ess/reset")
    async def post_reset(request: Request) -> Response:
        """Back to ACTIVE by hand, after the cooldown, recorded with who and why."""
        refused = _refused_auth(request, api.token)
        if refused is not None:
            return refused
        body = parse_request(await request.body(), ResetRequest)
        if isinstance(body, str):
            return _error(400, "bad_request", body)
        try:
            result = await api.reset(body)
        except Exception as exc:
            return _error(503, "not_saved",
                          f"the reset could not be saved, so the ESS stays HALTED: {exc}")
        if isinstance(result, ResetRefused):
            headers = None
            extra: dict[str, Any] = {}
            if result.reason == COOLDOWN:
                seconds = result.retry_after_ns / 1e9
                headers = {"Retry-After": str(max(1, math.ceil(seconds)))}
                extra["retry_after_s"] = round(seconds, 3)
            return _error(409, result.reason, result.detail, headers, **extra)
        return json_response(result)

    return router


def ledger_router(execution: ExecutionService) -> APIRouter:
    """``GET /venue/ledger``: every execution the venue made (its own record, to audit
    the database); 404 for a venue that keeps none."""
    router = APIRouter()

    @router.get("/venue/ledger")
    async def ledger() -> Response:
        """Every execution the venue made (its own record, to audit the database)."""
        venue = execution.venue
        if not isinstance(venue, KeepsLedger):
            return Response(b'{"detail":"this venue keeps no local ledger"}', 404,
                            media_type="application/json")
        body = [
            {"order_id": x.order.id, "client_order_id": x.order.client_order_id,
             "venue_fill_id": x.venue_fill_id, "price_e8": x.price_e8, "qty_e8": x.qty_e8,
             "fee_e8": x.fee_e8, "ts": x.ts}
            for x in venue.ledger
        ]
        return Response(msgspec.json.encode(body), media_type="application/json")

    return router


def service_routers(services: Iterable[Service]) -> list[APIRouter]:
    """The routes of the services' control operations: risk's ESS and state, execution's
    venue ledger."""
    routers: list[APIRouter] = []
    for service in services:
        if isinstance(service, RiskService):
            routers.append(risk_router(RiskApi(service)))
        elif isinstance(service, ExecutionService):
            routers.append(ledger_router(service))
    return routers
