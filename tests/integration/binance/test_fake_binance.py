"""FakeBinance speaks Binance: signed requests, limits, order semantics, streams, and the
control API a scenario runner drives it with."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

import httpx
import pytest
from tests.integration.binance.conftest import Eventually
from websockets.asyncio.client import connect

from cdb.marketdata.binance import decode_trade
from cdb.testing import FakeBinance, Fault  # the public names
from cdb.testing.fake_binance import FaultBook

pytestmark = pytest.mark.integration


def signed(fake: FakeBinance, params: dict[str, str], *, secret: str | None = None,
           ts: int | None = None) -> str:
    query = urlencode({**params, "timestamp": str(ts or int(time.time() * 1000))})
    sig = hmac.new((secret or fake.api_secret).encode(), query.encode(), hashlib.sha256)
    return f"{query}&signature={sig.hexdigest()}"


def key(fake: FakeBinance) -> dict[str, str]:
    return {"X-MBX-APIKEY": fake.api_key}


async def test_public_endpoints_and_weight_headers(fake: FakeBinance) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        first = await http.get("/api/v3/ping")
        info = await http.get("/api/v3/exchangeInfo")
        now = await http.get("/api/v3/time")
    assert first.json() == {}
    assert first.headers["X-MBX-USED-WEIGHT-1M"] == "1"
    assert info.headers["X-MBX-USED-WEIGHT-1M"] == "21"
    body = info.json()
    assert [s["symbol"] for s in body["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    assert body["rateLimits"][0] == {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                                     "intervalNum": 1, "limit": 6000}
    lot = next(f for f in body["symbols"][0]["filters"] if f["filterType"] == "LOT_SIZE")
    assert lot["stepSize"] == "0.00001000"
    assert abs(now.json()["serverTime"] - time.time() * 1000) < 5_000


@pytest.mark.parametrize(
    ("headers", "tamper", "status", "code"),
    [
        ({}, None, 401, -2014),
        ({"X-MBX-APIKEY": "someone-else"}, None, 401, -2015),
        (None, "secret", 400, -1022),
        (None, "old", 400, -1021),
        (None, "ahead", 400, -1021),
    ],
)
async def test_signed_requests_are_checked_like_binance(
    fake: FakeBinance, headers: dict[str, str] | None, tamper: str | None, status: int, code: int,
) -> None:
    now = int(time.time() * 1000)
    ts = {"old": now - 10_000, "ahead": now + 5_000}.get(tamper or "", now)
    query = signed(fake, {"symbol": "BTCUSDT"}, ts=ts,
                   secret="wrong" if tamper == "secret" else None)
    async with httpx.AsyncClient(base_url=fake.url) as http:
        answer = await http.get(f"/api/v3/openOrders?{query}",
                                headers=key(fake) if headers is None else headers)
    assert (answer.status_code, answer.json()["code"]) == (status, code)


async def test_signature_covers_query_and_body_together(fake: FakeBinance) -> None:
    body = signed(fake, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                         "quantity": "0.01", "newClientOrderId": "c1"})
    async with httpx.AsyncClient(base_url=fake.url) as http:
        answer = await http.post("/api/v3/order", content=body, headers={
            **key(fake), "Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200, answer.text
    placed = answer.json()
    assert placed["status"] == "FILLED"
    assert placed["fills"][0]["commissionAsset"] == "BTC"
    assert answer.headers["X-MBX-ORDER-COUNT-10S"] == "1"


async def test_client_order_id_is_unique_among_open_orders_only(fake: FakeBinance) -> None:
    limit = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
             "quantity": "0.01", "price": "40000", "newClientOrderId": "same"}
    market = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01",
              "newClientOrderId": "again"}
    async with httpx.AsyncClient(base_url=fake.url, headers=key(fake)) as http:
        assert (await http.post(f"/api/v3/order?{signed(fake, limit)}")).status_code == 200
        dup = await http.post(f"/api/v3/order?{signed(fake, limit)}")
        assert dup.json() == {"code": -2010, "msg": "Duplicate order sent."}
        # A closed order's id is accepted again: a blind resend trades twice.
        assert (await http.post(f"/api/v3/order?{signed(fake, market)}")).status_code == 200
        assert (await http.post(f"/api/v3/order?{signed(fake, market)}")).status_code == 200
    assert len(fake.placed("again")) == 2


async def test_filters_and_unknown_orders(fake: FakeBinance) -> None:
    odd = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.000001"}
    async with httpx.AsyncClient(base_url=fake.url, headers=key(fake)) as http:
        lot = await http.post(f"/api/v3/order?{signed(fake, odd)}")
        missing = await http.get(
            f"/api/v3/order?{signed(fake, {'symbol': 'BTCUSDT', 'origClientOrderId': 'nope'})}")
        cancel = await http.delete(
            f"/api/v3/order?{signed(fake, {'symbol': 'BTCUSDT', 'origClientOrderId': 'nope'})}")
    assert lot.json() == {"code": -1013, "msg": "Filter failure: LOT_SIZE"}
    assert missing.json() == {"code": -2013, "msg": "Order does not exist."}
    assert cancel.json() == {"code": -2011, "msg": "Unknown order sent."}


async def test_over_the_weight_limit_429_then_418() -> None:
    async with FakeBinance(symbols=["BTCUSDT"], weight_limit=40, ban_after=2) as fake:
        async with httpx.AsyncClient(base_url=fake.url) as http:
            answers = [await http.get("/api/v3/exchangeInfo") for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 429, 418]
        assert answers[2].json()["code"] == -1003
        assert float(answers[2].headers["Retry-After"]) > 0
        assert answers[3].headers["Retry-After"] == "120"
        assert fake.stats.rate_limited == 2


async def test_control_api_drives_faults_and_reads_the_ledger(fake: FakeBinance) -> None:
    fault = {"kind": "server_error", "endpoint": "GET /api/v3/ping", "times": 2, "status": 502}
    async with httpx.AsyncClient(base_url=fake.url) as http:
        made = await http.post("/_fake/faults", json=fault)
        pings = [(await http.get("/api/v3/ping")).status_code for _ in range(3)]
        faults = (await http.get("/_fake/faults")).json()
        bad = await http.post("/_fake/faults", json={"kind": "meteor"})
        await http.post("/_fake/trades", json=[{"symbol": "BTCUSDT", "price": "43000"}])
        ledger = (await http.get("/_fake/ledger")).json()
        stats = (await http.get("/_fake/stats")).json()
        assert (await http.delete("/_fake/faults")).status_code == 200
    assert made.status_code == 201
    assert pings == [502, 502, 200]
    assert faults[0]["fired"] == 2
    assert bad.status_code == 422
    assert fake.exchange.prices["BTCUSDT"] == 43000 * 10**8
    assert ledger["orders"] == []
    assert ledger["fills"] == []
    assert ledger["balances"]["USDT"]["free"] == "1000000.00000000"
    assert stats["requests"] == 3


async def test_raw_stream_and_subscribe_method(fake: FakeBinance, eventually: Eventually) -> None:
    async with (
        connect(f"{fake.ws_url}/ws/btcusdt@trade") as raw,
        connect(f"{fake.ws_url}/ws") as bare,
    ):
        await bare.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 7}))
        assert json.loads(await bare.recv()) == {"result": None, "id": 7}
        await bare.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
        assert json.loads(await bare.recv()) == {"result": ["ethusdt@trade"], "id": 8}
        await fake.publish([fake.trade("BTCUSDT", "42000.5", "0.25"),
                            fake.trade("ETHUSDT", "2300.01")])
        btc = decode_trade(await raw.recv())
        eth = decode_trade(await bare.recv())
    assert (btc.symbol, btc.price_e8, btc.qty_e8, btc.trade_id) == (
        "BTCUSDT", 4_200_050_000_000, 25_000_000, 1)
    assert (eth.symbol, eth.trade_id) == ("ETHUSDT", 1)


async def test_injected_faults_are_one_shot_or_counted(fake: FakeBinance) -> None:
    once = fake.inject(kind="server_error", endpoint="/api/v3/ping")
    twice = fake.inject(Fault(kind="rate_limit", endpoint="GET /api/v3/time", times=2,
                              retry_after_s=0.1))
    async with httpx.AsyncClient(base_url=fake.url) as http:
        assert (await http.get("/api/v3/ping")).status_code == 503
        assert (await http.get("/api/v3/ping")).status_code == 200
        limited = [await http.get("/api/v3/time") for _ in range(3)]
    assert [r.status_code for r in limited] == [429, 429, 200]
    assert limited[0].headers["Retry-After"] == "0.100"
    assert (once.fired, twice.fired) == (1, 2)


def test_a_timed_fault_lasts_its_duration_on_the_fault_clock() -> None:
    now = [0.0]
    book = FaultBook(clock=lambda: now[0])
    state = book.add(Fault(kind="ws_silence", times=None, duration_s=2.0))
    assert book.take(("ws_silence",)) is not None
    now[0] = 1.9
    assert book.take(("ws_silence",)) is not None
    now[0] = 2.0
    assert book.take(("ws_silence",)) is None
    assert state.fired == 2
    assert book.live == []
    assert book.history == [state]
