"""`cdb up` on its default settings through the outages users meet: a Redis blip that
comes back empty, the seed's 60 s Redis outage, a 60 s PostgreSQL outage. Nothing is
shortened (breaker 3 failures / 60 s, backoff 1-30 s, claim idle 30 s, stale data
30 s pause / 300 s trip): trades, signals and fills flow again within seconds, the ESS
stays ACTIVE, and nothing is lost or doubled.

Only the market is set: 20x real time (about 1,000 trades a second over three
symbols), with a lower momentum threshold so that an order and its fills come every
few seconds, to be observed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cdb.testing.cluster import REDIS_PASSWORD, LocalPipeline
from cdb.testing.postgres import PostgresServer
from cdb.testing.redis import RedisServer
from cdb.testing.waiting import eventually
from tests.e2e.test_distributed import assert_nothing_lost_or_doubled, db_rows

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SPEED = 20
FLOW = ("signal:stream.market_data", "risk:stream.market_data",
        "execution:stream.market_data", "db_writer:stream.signals")
"""Trades reach signal, risk and execution; db_writer records what signal made."""


def market(wall_s: float) -> dict[str, str]:
    return {"WS_SPEED": str(SPEED), "WS_DURATION_S": str(int(SPEED * wall_s)), "WS_SEED": "11",
            "SIGNAL_THRESHOLD_PCT": "0.2"}


def ess_state(pipe: LocalPipeline) -> str:
    return str(pipe.details("risk")["ess"]["state"])


def fills(pipe: LocalPipeline) -> float:
    return pipe.progress().get("fills", 0.0)


def assert_ledger_is_the_database(pipe: LocalPipeline) -> None:
    ledger = pipe.get("execution", "/venue/ledger")
    assert ledger, "the market must produce fills"
    key = lambda r: (r["venue_fill_id"], r["price_e8"], r["qty_e8"], r["fee_e8"])  # noqa: E731
    assert sorted(map(key, ledger)) == sorted(map(key, db_rows(pipe, "fills")))


def outage(server: RedisServer | PostgresServer, seconds: float) -> float:
    """Stop ``server`` for ``seconds``; when it answers again (monotonic time)."""
    server.stop()
    time.sleep(seconds)
    server.start()
    return time.monotonic()


def redis_outage_then_flow(pipe: LocalPipeline, seconds: float, within: float) -> None:
    """Redis down ``seconds``: trades reach every consumer again ``within`` s of its
    return, and fills follow."""
    back = outage(pipe.redis, seconds)
    flow = pipe.time_to_flow(FLOW, back, timeout=within + 60)
    print(f"{seconds:g} s Redis outage: flowing again after {flow}")
    assert max(flow.values()) <= within, flow
    before = fills(pipe)
    eventually(lambda: fills(pipe) > before, 90, f"fills after the {seconds:g} s outage")


def test_a_five_second_redis_blip_restarted_empty_on_defaults(tmp_path: Path) -> None:
    with LocalPipeline(tmp_path, env=market(120), claim_idle_s=None) as pipe:
        pipe.start()
        eventually(lambda: fills(pipe) > 0, 60, "fills before the blip")
        # No persistence: it comes back empty.
        redis_outage_then_flow(pipe, 5, within=10)
        assert ess_state(pipe) == "ACTIVE", pipe.details("risk")["ess"]
        pipe.wait_done(timeout=180)
        assert ess_state(pipe) == "ACTIVE"
        # The streams restarted empty, so they hold only what came after: the database
        # must still have every chain whole, once, and exactly the venue's fills.
        for table in ("signals", "orders", "fills"):
            ids = [str(r["id"]) for r in db_rows(pipe, table)]
            assert len(ids) == len(set(ids)), table
        orders = {str(r["id"]) for r in db_rows(pipe, "orders")}
        signals = {str(r["id"]) for r in db_rows(pipe, "signals")}
        assert all(str(o["causation_id"]) in signals for o in db_rows(pipe, "orders"))
        assert all(str(f["order_id"]) in orders for f in db_rows(pipe, "fills"))
        assert_ledger_is_the_database(pipe)


def test_sixty_seconds_of_redis_then_of_postgres_on_defaults(tmp_path: Path) -> None:
    """The seed's simulation: Redis down 60 s (it keeps its streams, AOF as deployed),
    then PostgreSQL down 60 s."""
    pipe = LocalPipeline(tmp_path, env=market(180), claim_idle_s=None)
    pipe.redis = RedisServer(password=REDIS_PASSWORD,
                             args=("--appendonly", "yes", "--appendfsync", "always"))
    with pipe:
        pipe.start()
        eventually(lambda: fills(pipe) > 0, 60, "fills before the outage")
        redis_outage_then_flow(pipe, 60, within=35)
        assert ess_state(pipe) == "ACTIVE", pipe.details("risk")["ess"]

        written = pipe.progress().get("rows", 0.0)
        back = outage(pipe.postgres, 60)
        caught_up = pipe.time_to_flow(("rows",), back, timeout=90)
        print(f"60 s PostgreSQL outage: db_writer writing again after {caught_up}")
        assert pipe.progress()["rows"] > written
        assert caught_up["rows"] <= 35, caught_up
        pipe.wait_done(timeout=240)
        assert ess_state(pipe) == "ACTIVE", pipe.details("risk")["ess"]
        assert_nothing_lost_or_doubled(pipe)
        assert_ledger_is_the_database(pipe)
