"""The risk service's control API: the ESS and the risk state.

``GET /ess`` and ``GET /risk/state`` are open (like ``/health``); ``POST /ess/trip``
and ``POST /ess/reset`` need ``Authorization: Bearer <CDB_API_TOKEN>``. The token is
checked before the body is read, so a request without it learns nothing and changes
nothing (401), whatever it sent. A service without a configured token refuses every
change (403): an API that anyone on the network could reset is worse than none.

Bodies are JSON objects ``{"actor": "who", "reason": "why"}``; anything else gets 400
with what was wrong. A reset refused (ACTIVE, or within the cooldown) is 409 with the
reason and, for the cooldown, the seconds left (also as ``Retry-After``).
"""

from __future__ import annotations

import hmac
import math
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from fastapi import APIRouter, Request, Response

from cdb.risk.ess import COOLDOWN, ResetRefused

if TYPE_CHECKING:
    from cdb.services.risk import RiskService

_BODY_HELP = 'send a JSON object such as {"actor": "alice", "reason": "why"}'


class TripRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /ess/trip``."""

    reason: str
    actor: str = "api"


class ResetRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /ess/reset``: who resets, and why (both required)."""

    actor: str
    reason: str


T = TypeVar("T", TripRequest, ResetRequest)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(body), status, headers=headers,
                    media_type="application/json")


def _error(status: int, error: str, detail: str, headers: dict[str, str] | None = None,
           **extra: Any) -> Response:
    return _json({"error": error, "detail": detail, **extra}, status, headers)


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


async def _body(request: Request, kind: type[T]) -> T | Response:
    raw = await request.body()
    if not raw.strip():
        return _error(400, "bad_request", f"empty body: {_BODY_HELP}")
    try:
        parsed = msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        return _error(400, "bad_request", f"{exc}: {_BODY_HELP}")
    except msgspec.DecodeError as exc:
        return _error(400, "bad_request", f"body is not valid JSON ({exc}): {_BODY_HELP}")
    for field in ("actor", "reason"):
        if not str(getattr(parsed, field)).strip():
            return _error(400, "bad_request", f"'{field}' must not be empty: {_BODY_HELP}")
    return parsed


def build_router(risk: RiskService) -> APIRouter:
    """The routes of ``risk``'s API (its token is ``risk.api_token``)."""
    router = APIRouter(tags=["risk"])

    @router.get("/ess")
    async def get_ess() -> Response:
        """The ESS: state, reason, since when, cooldown left, trips."""
        return _json(risk.ess_status())

    @router.get("/risk/state")
    async def get_risk_state() -> Response:
        """Positions, exposure, equity, limits and the ESS."""
        return _json(risk.risk_state())

    @router.post("/ess/trip")
    async def post_trip(request: Request) -> Response:
        """HALT by hand (idempotent: tripping a HALTED ESS changes nothing)."""
        refused = _refused_auth(request, risk.api_token)
        if refused is not None:
            return refused
        body = await _body(request, TripRequest)
        if isinstance(body, Response):
            return body
        state = await risk.trip_manually(body.actor.strip(), body.reason.strip())
        return _json({"changed": state is not None, **risk.ess_status()})

    @router.post("/ess/reset")
    async def post_reset(request: Request) -> Response:
        """Back to ACTIVE by hand, after the cooldown, recorded with who and why."""
        refused = _refused_auth(request, risk.api_token)
        if refused is not None:
            return refused
        body = await _body(request, ResetRequest)
        if isinstance(body, Response):
            return body
        try:
            result = await risk.reset(body.actor, body.reason)
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
        return _json({"changed": True, **risk.ess_status()})

    return router
