"""The risk service's control operations for operators: read the ESS and the risk
state, trip, reset. Transport-free: ``cdb.runtime.control_http`` serves them over HTTP.

Requests are ``{"actor": "who", "reason": "why"}``; ``parse_request`` says what was
wrong with any other input. A reset is refused (``ResetRefused``) while ACTIVE or within
the cooldown, and raises when it cannot be saved (the ESS then stays HALTED).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import msgspec

from cdb.risk.ess import ResetRefused

if TYPE_CHECKING:
    from cdb.services.risk import RiskService

_BODY_HELP = 'send a JSON object such as {"actor": "alice", "reason": "why"}'


class TripRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A manual trip: why, and who (``api`` when unsaid)."""

    reason: str
    actor: str = "api"


class ResetRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A reset: who resets, and why (both required)."""

    actor: str
    reason: str


T = TypeVar("T", TripRequest, ResetRequest)


def parse_request(raw: bytes, kind: type[T]) -> T | str:
    """``raw`` JSON as a ``kind`` request, or what was wrong with it (and what to send)."""
    if not raw.strip():
        return f"empty body: {_BODY_HELP}"
    try:
        parsed = msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        return f"{exc}: {_BODY_HELP}"
    except msgspec.DecodeError as exc:
        return f"body is not valid JSON ({exc}): {_BODY_HELP}"
    for field in ("actor", "reason"):
        if not str(getattr(parsed, field)).strip():
            return f"'{field}' must not be empty: {_BODY_HELP}"
    return parsed


class RiskApi:
    """What an operator may ask of one risk service.

    Args:
        risk: the service; its ``api_token`` is the token changes require (None: changes
            are refused to everyone).
    """

    def __init__(self, risk: RiskService) -> None:
        self._risk = risk

    @property
    def token(self) -> str | None:
        return self._risk.api_token

    def ess(self) -> dict[str, object]:
        """The ESS: state, reason, since when, cooldown left, trips."""
        return self._risk.ess_status()

    def state(self) -> dict[str, object]:
        """Positions, exposure, equity, limits and the ESS."""
        return self._risk.risk_state()

    async def trip(self, request: TripRequest) -> dict[str, object]:
        """HALT by hand (idempotent: tripping a HALTED ESS changes nothing)."""
        state = await self._risk.trip_manually(request.actor.strip(), request.reason.strip())
        return {"changed": state is not None, **self._risk.ess_status()}

    async def reset(self, request: ResetRequest) -> dict[str, object] | ResetRefused:
        """Back to ACTIVE by hand, after the cooldown, recorded with who and why.

        Raises:
            Exception: the reset could not be saved; the ESS stays HALTED.
        """
        result = await self._risk.reset(request.actor, request.reason)
        if isinstance(result, ResetRefused):
            return result
        return {"changed": True, **self._risk.ess_status()}
