"""The risk API: the ESS and the risk state for anyone, changes only with the token;
unauthenticated or malformed requests change nothing and say why."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from tests.unit.services.risk_harness import T0, Harness, S

from cdb.events import SCALE
from cdb.observability.health import Health
from cdb.risk.ess import EssConfig
from cdb.runtime.control_http import service_routers
from cdb.runtime.http import build_app

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def client_for(h: Harness) -> httpx.AsyncClient:
    health = Health("risk", h.risk.ctx.instance, "test")
    health.details = h.risk.status
    app = build_app(health, extra=service_routers([h.risk]))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://risk")


@pytest.fixture
def harness() -> Harness:
    h = Harness(config=EssConfig(cooldown_ns=60 * S), instance="risk-api")
    h.risk.api_token = TOKEN
    return h


@pytest.fixture
async def api(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(harness) as client:
        yield client


async def test_get_ess_shows_the_state_to_anyone(api: httpx.AsyncClient) -> None:
    response = await api.get("/ess")
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "ACTIVE"
    assert body["trips"] == []


@pytest.mark.parametrize("path", ["/ess/trip", "/ess/reset"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": TOKEN}, {"Authorization": "Basic eDp5"}])
async def test_changes_without_the_token_are_refused_with_401_and_change_nothing(
    api: httpx.AsyncClient, harness: Harness, path: str, headers: dict[str, str]
) -> None:
    if path == "/ess/reset":
        await harness.risk.trip_manually("alice", "drill")
        harness.clock.advance(T0 + 3600 * S)
    before = harness.risk.ess.state
    published = {k: list(v) for k, v in harness.bus.topics.items()}
    response = await api.post(path, json={"actor": "mallory", "reason": "because"},
                              headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "CDB_API_TOKEN" in response.json()["detail"]
    assert harness.risk.ess.state == before
    assert harness.bus.topics == published


async def test_an_unauthenticated_malformed_request_is_401_not_400(
    api: httpx.AsyncClient, harness: Harness
) -> None:
    response = await api.post("/ess/trip", content=b"{not json")
    assert response.status_code == 401
    assert not harness.risk.halted


async def test_without_a_configured_token_every_change_is_refused(
    api: httpx.AsyncClient, harness: Harness
) -> None:
    harness.risk.api_token = None
    response = await api.post("/ess/trip", json={"reason": "x"}, headers=AUTH)
    assert response.status_code == 403
    assert "no CDB_API_TOKEN configured" in response.json()["detail"]
    assert not harness.risk.halted


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "empty body"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "Expected `object`"),
        (b'{"actor": "alice"}', "missing required field `reason`"),
        (b'{"reason": 5}', "Expected `str`"),
        (b'{"reason": "x", "resaon": "typo"}', "unknown field `resaon`"),
        (b'{"reason": "   "}', "'reason' must not be empty"),
    ],
)
async def test_malformed_trips_get_400_saying_what_was_wrong(
    api: httpx.AsyncClient, harness: Harness, body: bytes, expected: str
) -> None:
    response = await api.post("/ess/trip", content=body,
                              headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert expected in detail
    assert '"actor"' in detail, "says what to send"
    assert not harness.risk.halted


async def test_reset_needs_both_who_and_why(api: httpx.AsyncClient, harness: Harness) -> None:
    await harness.risk.trip_manually("alice", "drill")
    response = await api.post("/ess/reset", json={"reason": "done"}, headers=AUTH)
    assert response.status_code == 400
    assert "missing required field `actor`" in response.json()["detail"]
    assert harness.risk.halted


async def test_trip_then_reset_refused_in_cooldown_then_accepted(
    api: httpx.AsyncClient, harness: Harness
) -> None:
    response = await api.post("/ess/trip", json={"actor": "alice", "reason": "drill"},
                              headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert (body["changed"], body["state"], body["reason"], body["actor"], body["detail"]) == (
        True, "HALTED", "manual", "alice", "drill")
    again = await api.post("/ess/trip", json={"reason": "again"}, headers=AUTH)
    assert again.status_code == 200
    assert again.json()["changed"] is False

    harness.clock.advance(T0 + 45 * S)
    refused = await api.post("/ess/reset", json={"actor": "bob", "reason": "calm"},
                             headers=AUTH)
    assert refused.status_code == 409
    assert refused.json()["error"] == "cooldown"
    assert refused.json()["retry_after_s"] == 15.0
    assert refused.headers["Retry-After"] == "15"
    assert "15.0 s" in refused.json()["detail"]
    assert harness.risk.halted

    harness.clock.advance(T0 + 60 * S)
    accepted = await api.post("/ess/reset", json={"actor": "bob", "reason": "calm"},
                              headers=AUTH)
    assert accepted.status_code == 200
    assert accepted.json()["state"] == "ACTIVE"
    assert (accepted.json()["actor"], accepted.json()["detail"]) == ("bob", "calm")
    assert not harness.risk.halted

    nothing = await api.post("/ess/reset", json={"actor": "bob", "reason": "calm"},
                             headers=AUTH)
    assert nothing.status_code == 409
    assert nothing.json()["error"] == "not_halted"


async def test_a_reset_that_cannot_be_saved_is_503_and_stays_halted(
    api: httpx.AsyncClient, harness: Harness
) -> None:
    await harness.risk.trip_manually("alice", "drill")
    harness.clock.advance(T0 + 3600 * S)

    async def broken(*_: object) -> None:
        raise ConnectionError("redis down")

    harness.store.save = broken  # type: ignore[method-assign]
    response = await api.post("/ess/reset", json={"actor": "bob", "reason": "x"}, headers=AUTH)
    assert response.status_code == 503
    assert "stays HALTED" in response.json()["detail"]
    assert harness.risk.halted


async def test_risk_state_shows_positions_exposure_limits_and_the_ess(
    api: httpx.AsyncClient, harness: Harness
) -> None:
    await harness.trades(100.0)
    order = await harness.signal("BUY", 100.0)
    await harness.fill(order, 100.0)  # type: ignore[arg-type]
    body = (await api.get("/risk/state")).json()
    assert body["positions"]["BTCUSDT"] == {"qty": "10", "mark": "100", "exposure": "1000"}
    assert body["exposure"] == "1000"
    assert body["limits"]["max_exposure"] == "20000"
    assert body["limits"]["max_orders_per_window"] == 10
    assert body["ess"]["state"] == "ACTIVE"
    assert body["orders"] == 1
    assert harness.risk.book.exposure_e8() == 1000 * SCALE


async def test_health_details_show_the_ess(api: httpx.AsyncClient, harness: Harness) -> None:
    await harness.risk.trip_manually("alice", "drill")
    body = (await api.get("/health")).json()
    assert body["details"]["ess"]["state"] == "HALTED"
    assert body["details"]["ess"]["reason"] == "manual"
    assert body["details"]["halted"] is True
    metrics_text = (await api.get("/metrics")).text
    assert 'cdb_ess_halted{instance="risk-api",service="risk"} 1.0' in metrics_text
    assert 'cdb_ess_state_info{instance="risk-api",reason="manual",service="risk",' \
           'state="HALTED"} 1.0' in metrics_text
