"""The fake Binance's control API: a token when configured, bounded bodies and queues,
and a fuzz of its request bodies (any body gets an answer below 500)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdb.testing.fake_binance.server import FakeBinance
from cdb.testing.fake_binance.streams import WS_QUEUE, WsConn

pytestmark = pytest.mark.timeout(60)


def client(fake: FakeBinance, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app()),
                             base_url="http://fake", headers=headers)


async def test_the_control_api_needs_the_token_when_one_is_configured() -> None:
    fake = FakeBinance(control_token="c" * 20)
    async with client(fake) as anonymous:
        assert (await anonymous.get("/_fake/stats")).status_code == 401
    async with client(fake, "c" * 20) as api:
        assert (await api.get("/_fake/stats")).status_code == 200
    assert fake.host == "127.0.0.1"


async def test_bodies_and_numbers_are_bounded() -> None:
    fake = FakeBinance()
    async with client(fake) as api:
        big = await api.post("/_fake/trades", content=b"[" + b"{}," * 400_000 + b"{}]")
        assert big.status_code == 413
        for fault in ({"kind": "timeout", "delay_s": 1e300}, {"kind": "ban", "times": -1},
                      {"kind": "delay", "delay_s": float("inf")}):
            answer = await api.post("/_fake/faults", content=json.dumps(fault).encode())
            assert answer.status_code == 422, answer.text
        bad = await api.post("/_fake/trades", json=[{"symbol": "BTCUSDT", "price": "-5"}])
        assert bad.status_code == 422


async def test_a_stream_client_that_does_not_read_is_dropped_not_buffered() -> None:
    fake = FakeBinance()
    conn = WsConn(ws=None, streams={"btcusdt@trade"}, combined=False, opened=0.0)  # type: ignore[arg-type]
    fake.streams.conns.add(conn)
    trade = fake.trade("BTCUSDT", "42000.5")
    for _ in range(WS_QUEUE + 10):
        fake.streams.broadcast(trade)
    assert conn.queue.qsize() == WS_QUEUE
    assert conn.closing.is_set()
    assert conn.close_code == 1008
    assert fake.stats.ws_slow_dropped == 1


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["kind", "times", "delay_s", "duration_s", "symbol", "price", "qty",
                         "status", "parts", "fill_ratio", "endpoint", "x"]), inner, max_size=5),
    max_leaves=12,
)
_bodies = st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode()))


@settings(max_examples=80, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(["/_fake/faults", "/_fake/trades", "/_fake/ws/drop",
                             "/_fake/stats", "/_fake/ledger"]),
       method=st.sampled_from(["POST", "GET", "DELETE"]), body=_bodies)
def test_any_control_body_gets_an_answer_below_500(path: str, method: str, body: bytes) -> None:
    async def go() -> Any:
        fake = FakeBinance()
        async with client(fake) as api:
            return await api.request(method, path, content=body)

    answer = asyncio.run(go())
    assert answer.status_code < 500, answer.text
