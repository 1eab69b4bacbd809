"""The ESS end to end in the distributed mode: ``cdb up`` runs the five services as
processes over a throwaway Redis and PostgreSQL; the tests inject trades and signals
into the streams (a symbol of their own, next to the synthetic market ws publishes),
kill the risk process, and drive the ESS through its API and ``cdb ess``.

The tests of this module share one pipeline and run in order; each starts from an
ACTIVE ESS (``ensure_active``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from cdb.bus.keys import MARKET_DATA, SIGNALS, Namespace
from cdb.bus.redis_streams import RedisStreamsBus
from cdb.events import SCALE, AnyEvent, Signal, Trade
from cdb.storage.store import Store
from cdb.testing.cluster import REDIS_PASSWORD, LocalPipeline
from cdb.testing.waiting import eventually
from tests.e2e.conftest import cdb

pytestmark = pytest.mark.timeout(600)

TOKEN = "e2e-ess-token-0123456789"  # CDB_API_TOKEN needs 16 characters or more
AUTH = {"Authorization": f"Bearer {TOKEN}"}
COOLDOWN_S = 8
ENV = {
    "CDB_API_TOKEN": TOKEN,
    "ESS_COOLDOWN_S": str(COOLDOWN_S),
    # The ws market runs in real time next to the injected symbols; it must not trade
    # (no signals) nor trip the ESS by itself, so each test controls its trigger.
    "SIGNAL_THRESHOLD_PCT": "90",
    "ESS_STALE_DATA_S": "0",
    "RISK_INITIAL_CASH": "2000",
    "RISK_MAX_OPEN_ORDERS": "1000",
    "RISK_MAX_POSITION": "1000000",
    "RISK_MAX_EXPOSURE": "10000000",
}
S = 1_000_000_000


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPipeline]:
    with LocalPipeline(tmp_path_factory.mktemp("ess"), env=ENV) as pipeline:
        pipeline.start()
        yield pipeline


class Injector:
    """Publishes events into the pipeline's streams, as ws or signal would."""

    def __init__(self, pipe: LocalPipeline) -> None:
        self.pipe = pipe
        self.n = 0
        self.run = uuid.uuid4().hex[:6]

    def publish(self, topic: str, events: Sequence[AnyEvent]) -> None:
        async def go() -> None:
            client = aioredis.Redis(host="127.0.0.1", port=self.pipe.redis.port,
                                    password=REDIS_PASSWORD)
            bus = RedisStreamsBus(client, Namespace(self.pipe.namespace), owns_client=True)
            try:
                await bus.publish(topic, events)
            finally:
                await bus.close()

        asyncio.run(go())

    def trades(self, symbol: str, *prices: float, ts: int | None = None,
               step_s: float = 0.5) -> list[Trade]:
        start = ts or time.time_ns()
        batch = []
        for k, price in enumerate(prices):
            self.n += 1
            tid = f"e2e:{symbol}:{self.run}:{self.n}"
            batch.append(Trade(id=tid, ts=start + round(k * step_s * S), correlation_id=tid,
                               causation_id=tid, source="e2e", venue="e2e", symbol=symbol,
                               trade_id=self.n, price_e8=round(price * SCALE), qty_e8=100 * SCALE))
        self.publish(MARKET_DATA, batch)
        return batch

    def signals(self, symbol: str, price: float, count: int = 1, *, ts: int | None = None,
                spacing_s: float = 0.1, side: str = "BUY", ref: Trade | None = None
                ) -> list[Signal]:
        start = ts or time.time_ns()
        out = []
        for k in range(count):
            self.n += 1
            sid = f"e2e-sig-{self.run}-{self.n}"
            out.append(Signal(
                id=sid, ts=start + round(k * spacing_s * S),
                correlation_id=ref.id if ref else sid, causation_id=ref.id if ref else sid,
                source="e2e", strategy_id="e2e", symbol=symbol, side=side,  # type: ignore[arg-type]
                price_e8=round(price * SCALE), trade_id=ref.trade_id if ref else 0, move_bp=500,
                volume_e8=10**6 * SCALE))
        self.publish(SIGNALS, out)
        return out


def api(pipe: LocalPipeline, method: str, path: str, body: dict[str, str] | None = None,
        auth: bool = True) -> httpx.Response:
    return pipe.http.request(method, pipe.url("risk", path), json=body,
                             headers=AUTH if auth else {})


def ess(pipe: LocalPipeline) -> dict[str, Any]:
    state: dict[str, Any] = pipe.get("risk", "/ess")
    return state


def risk_state(pipe: LocalPipeline) -> dict[str, Any]:
    state: dict[str, Any] = pipe.get("risk", "/risk/state")
    return state


def rows(pipe: LocalPipeline, table: str) -> list[dict[str, object]]:
    async def read() -> list[dict[str, object]]:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{pipe.postgres.port}/postgres"
        async with Store(url, schema=pipe.schema) as store:
            return await store.rows(table)

    return asyncio.run(read())


def ensure_active(pipe: LocalPipeline) -> None:
    """Reset (waiting out the cooldown) if a previous test left the ESS HALTED."""
    if ess(pipe)["state"] == "ACTIVE":
        return
    eventually(lambda: api(pipe, "POST", "/ess/reset", {"actor": "e2e", "reason": "next test"}
                           ).status_code == 200, COOLDOWN_S + 10, "reset after the cooldown")


def test_a_flash_crash_trips_the_ess_and_no_buy_follows(pipe: LocalPipeline) -> None:
    inject = Injector(pipe)
    ensure_active(pipe)
    inject.trades("CRASHUSDT", 100.0, 100.0, 99.0)
    inject.trades("CRASHUSDT", 92.0, 84.0, 83.0, step_s=3)
    eventually(lambda: ess(pipe)["state"] == "HALTED", 15, "ESS HALTED")
    state = ess(pipe)
    assert state["reason"] == "flash_crash"
    assert "CRASHUSDT fell" in state["detail"]
    blocked_before = risk_state(pipe)["rejections"].get("ess_halted", 0)
    inject.signals("CRASHUSDT", 83.0, 3)
    eventually(lambda: risk_state(pipe)["rejections"].get("ess_halted", 0)
               == blocked_before + 3, 15, "buys rejected")
    eventually(lambda: any(r["reason"] == "flash_crash" for r in rows(pipe, "ess_changes")),
               30, "EssChange recorded by the database")
    eventually(lambda: any(r["code"] == "ess_tripped" for r in rows(pipe, "alerts")), 30,
               "alert recorded")
    health = pipe.get("risk", "/health")
    assert health["details"]["ess"]["state"] == "HALTED"
    metrics = pipe.http.get(pipe.url("risk", "/metrics")).text
    assert any(line.startswith("cdb_ess_halted{") and line.endswith(" 1.0")
               for line in metrics.splitlines())
    trip_ts = int(state["since_ns"])
    late = [r for r in rows(pipe, "orders") if int(str(r["ts"])) >= trip_ts
            and not r["reduce_only"]]
    assert late == []


def test_killed_while_halted_risk_comes_back_halted_even_if_redis_forgot(
    pipe: LocalPipeline,
) -> None:
    if ess(pipe)["state"] != "HALTED":
        assert api(pipe, "POST", "/ess/trip", {"actor": "e2e", "reason": "before kill"}
                   ).status_code == 200
    before = ess(pipe)
    old_pid = pipe.kill("risk")
    eventually(lambda: _restarted(pipe, old_pid), 60, "risk restarted")
    after = ess(pipe)
    assert (after["state"], after["since_ns"], after["reason"]) == (
        "HALTED", before["since_ns"], before["reason"])

    with pipe.redis_client() as client:
        assert client.delete(Namespace(pipe.namespace).key("ess:state")) == 1
    eventually(lambda: any(r["state"] == "HALTED" for r in rows(pipe, "ess_changes")), 30)
    old_pid = pipe.kill("risk")
    eventually(lambda: _restarted(pipe, old_pid), 60, "risk restarted again")
    assert ess(pipe)["state"] == "HALTED", "PostgreSQL remembered what Redis lost"
    eventually(lambda: sum(r["code"] == "ess_restored" for r in rows(pipe, "alerts")) >= 2, 30)


def _restarted(pipe: LocalPipeline, old_pid: int) -> bool:
    try:
        details = pipe.details("risk")
        ready = pipe.http.get(pipe.url("risk", "/health/ready")).status_code == 200
    except httpx.HTTPError:
        return False
    return bool(details.get("pid") != old_pid and ready)


def test_reset_needs_the_token_and_the_cooldown_then_trading_resumes(
    pipe: LocalPipeline,
) -> None:
    ensure_active(pipe)
    env = {"CDB_RISK_URL": pipe.url("risk", ""), "CDB_API_TOKEN": TOKEN}
    tripped = cdb("ess", "trip", "--actor", "alice", "--reason", "drill", env=env)
    assert tripped.returncode == 0, tripped.stderr
    assert ess(pipe)["state"] == "HALTED"

    unauthenticated = api(pipe, "POST", "/ess/reset", {"actor": "mallory", "reason": "x"},
                          auth=False)
    assert unauthenticated.status_code == 401
    refused = api(pipe, "POST", "/ess/reset", {"actor": "alice", "reason": "too soon"})
    assert refused.status_code == 409
    assert refused.json()["error"] == "cooldown"
    assert 0 < refused.json()["retry_after_s"] <= COOLDOWN_S
    assert ess(pipe)["state"] == "HALTED"
    no_token = cdb("ess", "reset", "--reason", "x", env={**env, "CDB_API_TOKEN": ""})
    assert no_token.returncode == 2
    assert "CDB_API_TOKEN" in no_token.stderr

    time.sleep(COOLDOWN_S)  # the cooldown is what is tested: a wait by design
    reset = cdb("ess", "reset", "--actor", "alice", "--reason", "drill over", env=env)
    assert reset.returncode == 0, reset.stderr
    assert ess(pipe)["state"] == "ACTIVE"
    eventually(lambda: any(r["detail"] == "drill over" for r in rows(pipe, "ess_changes")), 30)
    changes = rows(pipe, "ess_changes")
    last = max(changes, key=lambda r: int(str(r["ts"])))
    assert (last["state"], last["actor"], last["detail"]) == ("ACTIVE", "alice", "drill over")

    inject = Injector(pipe)
    [ref] = inject.trades("RESUMEUSDT", 50.0)
    orders_before = risk_state(pipe)["orders"]
    inject.signals("RESUMEUSDT", 50.0, ref=ref)
    eventually(lambda: risk_state(pipe)["orders"] == orders_before + 1, 15, "order approved")


def test_a_drawdown_trips_the_ess(pipe: LocalPipeline) -> None:
    ensure_active(pipe)
    inject = Injector(pipe)
    [ref] = inject.trades("DRAWUSDT", 100.0)
    inject.signals("DRAWUSDT", 100.0, ts=ref.ts, ref=ref)  # 10 units of 2000 cash
    eventually(lambda: "DRAWUSDT" in risk_state(pipe)["positions"], 15, "order approved")
    inject.trades("DRAWUSDT", 100.0, 100.0, 100.0, ts=ref.ts + S)  # fills it
    eventually(lambda: risk_state(pipe)["positions"]["DRAWUSDT"]["qty"] == "10", 15, "filled")
    assert ess(pipe)["state"] == "ACTIVE"
    inject.trades("DRAWUSDT", 60.0, ts=ref.ts + 120 * S)  # slower than a flash crash
    eventually(lambda: ess(pipe)["state"] == "HALTED", 15, "ESS HALTED")
    assert ess(pipe)["reason"] == "drawdown"
    assert "(limit 10 %)" in ess(pipe)["detail"]


def test_a_flood_of_50_signals_in_5_s_is_rate_limited_and_the_pipeline_stays_healthy(
    pipe: LocalPipeline,
) -> None:
    ensure_active(pipe)
    inject = Injector(pipe)
    [ref] = inject.trades("FLOODUSDT", 10.0)
    before = risk_state(pipe)
    # In event time and clear of earlier orders' rate window.
    inject.signals("FLOODUSDT", 10.0, 50, ts=ref.ts + 60 * S, spacing_s=0.1, ref=ref)

    def decided() -> bool:
        now = risk_state(pipe)
        made = now["orders"] - before["orders"]
        limited = (now["rejections"].get("rate_limit", 0)
                   - before["rejections"].get("rate_limit", 0))
        return bool(made + limited == 50)

    eventually(decided, 30, "all 50 signals decided")
    after = risk_state(pipe)
    assert after["orders"] - before["orders"] == 10
    assert (after["rejections"].get("rate_limit", 0)
            - before["rejections"].get("rate_limit", 0)) == 40
    assert ess(pipe)["state"] == "ACTIVE", "a flood is not an emergency"
    for service in ("ws", "signal", "risk", "execution", "db_writer"):
        assert pipe.http.get(pipe.url(service, "/health/ready")).status_code == 200, service
