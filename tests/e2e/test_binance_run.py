"""`cdb run --source binance --venue binance-testnet`: the whole embedded pipeline trades on
a FakeBinance it reaches over the network, and its database agrees with the venue."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import msgspec
import pytest

from cdb.bus.keys import ORDERS, Namespace
from cdb.bus.redis_streams import RedisStreamsBus
from cdb.errors import CdbError
from cdb.events import SCALE, Order, parse_e8
from cdb.marketdata.synthetic import SyntheticSource
from cdb.storage.store import Store
from cdb.testing.fake_binance import FakeBinance, Fault
from cdb.testing.postgres import PostgresServer
from cdb.testing.redis import RedisServer
from cdb.testing.waiting import eventually_async
from tests.e2e.processes import Processes

pytestmark = pytest.mark.timeout(90)

DURATION_S = 10


def credentials(tmp_path: Path, fake: FakeBinance) -> dict[str, str]:
    """The API key and secret as secret files (``*_FILE``), as an operator passes them."""
    key, secret = tmp_path / "binance_api_key", tmp_path / "binance_api_secret"
    key.write_text(fake.api_key + "\n")
    secret.write_text(fake.api_secret + "\n")
    return {"BINANCE_API_KEY_FILE": str(key), "BINANCE_API_SECRET_FILE": str(secret),
            "CDB_SECRETS_DIR": str(tmp_path / "no-secrets")}


async def db_rows(url: str, table: str) -> list[dict[str, object]]:
    async with Store(url) as store:
        return await store.rows(table)


async def test_cdb_run_trades_on_binance_and_the_database_equals_the_venue_ledger(
    tmp_path: Path,
) -> None:
    async with FakeBinance(symbols=["BTCUSDT"]) as fake:
        market = SyntheticSource(seed=5, symbols=["BTCUSDT"], duration_s=300.0,
                                 start_ns=time.time_ns(), venue="binance")
        fake.start_feed(market.batches(), speed=1.0)
        # Faults every order path must survive without a second order: an answer lost
        # after the order was placed, and a rate limit with Retry-After.
        fake.inject(Fault(kind="timeout", endpoint="POST /api/v3/order", apply="before",
                          delay_s=0.5))
        fake.inject(Fault(kind="rate_limit", endpoint="POST /api/v3/order",
                          retry_after_s=0.2))
        db = tmp_path / "run.db"
        env = {
            **os.environ, **credentials(tmp_path, fake), "NO_COLOR": "1",
            # Momentum on a quiet market: small moves and any volume make orders.
            "SIGNAL_THRESHOLD_PCT": "0.01", "SIGNAL_MIN_VOLUME": "0", "SIGNAL_LOOKBACK_S": "5",
            "RISK_MAX_POSITION": "1000000", "RISK_MAX_EXPOSURE": "1000000",
        }
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cdb", "run", "--source", "binance",
            "--venue", "binance-testnet", "--exchange-url", fake.url, "--symbols", "BTCUSDT",
            "--duration", f"{DURATION_S}s", "--db", str(db), "--json",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), DURATION_S + 30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        elapsed = time.monotonic() - started
        assert process.returncode == 0, err.decode()[-3000:]
        summary = msgspec.json.decode(out)
        url = f"sqlite+aiosqlite:///{db}"
        orders = await db_rows(url, "orders")
        fills = await db_rows(url, "fills")

        assert summary["trades"] > 100
        assert elapsed < DURATION_S + 25  # starts, listens DURATION_S, drains, exits
        assert summary["orders"] > 0
        assert len(orders) == summary["orders"]
        assert all(state.fired for state in fake.faults.history)
        # Every order the database holds reached the venue exactly once, and no other.
        cids = sorted(str(o["client_order_id"]) for o in orders)
        assert sorted(o.client_order_id for o in fake.orders.values()) == cids
        # Only the rate-limited request came again; the lost answer was looked up.
        assert set(fake.order_arrivals) == set(cids)
        assert len(fake.order_arrivals) == len(cids) + 1
        # Every execution of the venue is one fill in the database, exactly.
        venue = sorted((f.client_order_id, f"{f.symbol}-{f.trade_id}", f.price_e8, f.qty_e8)
                       for f in fake.fills)
        stored = sorted((str(f["client_order_id"]), str(f["venue_fill_id"]),
                         int(str(f["price_e8"])), int(str(f["qty_e8"]))) for f in fills)
        assert stored == venue
        assert summary["fills"] == len(venue)


# distributed: `cdb service execution` on Binance, over Redis and PostgreSQL ------------------

REDIS_PASSWORD = "binance-e2e-pw"


def an_order(n: int, *, qty: str = "0.01", side: str = "BUY", limit: str = "") -> Order:
    """An order as risk publishes it (decided before the execution process started)."""
    ts = time.time_ns()
    return Order(
        id=f"e2e-o{n}", ts=ts, correlation_id=f"e2e-t{n}", causation_id=f"e2e-s{n}",
        source="risk-e2e", client_order_id=f"cdb-e2e-{n}", symbol="BTCUSDT",
        side=side,  # type: ignore[arg-type]
        order_type="LIMIT" if limit else "MARKET", qty_e8=parse_e8(qty),
        price_e8=parse_e8(limit or "0"), ref_price_e8=42_000 * SCALE,
    )


async def test_execution_process_on_binance_survives_a_crash_between_send_and_ack(
    tmp_path: Path,
) -> None:
    """Orders on stream.orders reach FakeBinance once; execution killed while an order's
    answer is outstanding, and a resting order filled while it is down, are settled by
    the restart's reconciliation: Postgres ends with exactly the venue's fills."""
    namespace = f"bn{uuid.uuid4().hex[:8]}"
    with RedisServer(password=REDIS_PASSWORD) as redis_server, PostgresServer() as pg:
        async with FakeBinance(symbols=["BTCUSDT"]) as fake:
            await fake.publish([fake.trade("BTCUSDT", "42000")])
            env = {
                **os.environ, **credentials(tmp_path, fake),
                "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_server.port),
                "REDIS_PASSWORD": REDIS_PASSWORD, "DATABASE_URL": pg.url,
                "SERVICE_INSTANCE_NAME": namespace, "CDB_CLAIM_IDLE_S": "1",
                "CDB_BUFFER_DIR": str(tmp_path / "buffers"), "LOG_LEVEL": "INFO",
                "EXECUTION_VENUE": "binance-testnet", "BINANCE_URL": fake.url,
            }
            procs = Processes(env, tmp_path)
            client = redis_server.client()
            bus = RedisStreamsBus(client, Namespace(namespace))
            schema = "cdb_" + namespace
            try:
                await procs.start("db_writer")
                await procs.start("execution")
                resting = an_order(1, limit="41000")
                await bus.publish(ORDERS, [resting, an_order(2), an_order(3, side="SELL")])
                await eventually_async(_has(fake, 3), 15, "three orders on the venue")
                # The next order is placed, but its answer never comes: crash meanwhile.
                fake.inject(Fault(kind="timeout", endpoint="POST /api/v3/order",
                                  apply="before", delay_s=0))
                await bus.publish(ORDERS, [an_order(4, qty="0.02")])
                await eventually_async(_has(fake, 4), 15, "order 4 placed")
                await procs.kill("execution")
                # While execution is down the market trades through the resting order.
                await fake.publish([fake.trade("BTCUSDT", "40900", qty="1")])
                assert fake.placed("cdb-e2e-1")[0].status == "FILLED"
                await eventually_async(lambda: _rows_are(pg.url, schema, "orders", 4), 15,
                                       "orders recorded")
                await procs.start("execution")

                venue = sorted((f.client_order_id, f"{f.symbol}-{f.trade_id}", f.price_e8,
                                f.qty_e8) for f in fake.fills)

                async def stored() -> list[tuple[str, str, int, int]]:
                    rows = await _rows(pg.url, schema, "fills")
                    return sorted((str(f["client_order_id"]), str(f["venue_fill_id"]),
                                   int(str(f["price_e8"])), int(str(f["qty_e8"])))
                                  for f in rows)

                async def settled() -> bool:
                    return await stored() == venue

                await eventually_async(settled, 20, "database fills equal the venue's")
                async with httpx.AsyncClient(timeout=2) as http:
                    text = (await http.get(procs.url("execution", "/metrics"))).text
                alerts = await _rows(pg.url, schema, "alerts")
            finally:
                await procs.close()
                await bus.close()
                await client.aclose()
    assert len(venue) == 4
    # Never sent twice: one request and one venue order per client order id.
    assert sorted(fake.order_arrivals) == [f"cdb-e2e-{n}" for n in (1, 2, 3, 4)]
    assert all(len(fake.placed(f"cdb-e2e-{n}")) == 1 for n in (1, 2, 3, 4))
    # The difference was reported: metric and alert.
    assert 'kind="missing_fill"' in text
    assert any(a["code"] == "venue_reconcile" for a in alerts)


def _has(fake: FakeBinance, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(fake.orders) >= n

    return check


async def _rows(url: str, schema: str, table: str) -> list[dict[str, object]]:
    async with Store(url, schema=schema) as store:
        return await store.rows(table)


async def _rows_are(url: str, schema: str, table: str, n: int) -> bool:
    try:
        return len(await _rows(url, schema, table)) >= n
    except CdbError:
        return False


async def test_ws_process_streams_binance_trades_to_redis_and_reports_a_gap(
    tmp_path: Path,
) -> None:
    """``cdb service ws`` with ``WS_SOURCE=binance``: the exchange's trades reach
    stream.market_data exactly (ids, prices, quantities), a jump in trade ids is alerted
    as a gap, and SIGTERM stops it cleanly."""
    from cdb.bus.keys import ALERTS_STREAM, MARKET_DATA
    from cdb.events import decode

    namespace = f"bw{uuid.uuid4().hex[:8]}"
    with RedisServer(password=REDIS_PASSWORD) as redis_server:
        async with FakeBinance(symbols=["BTCUSDT"]) as fake:
            env = {
                **os.environ, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_server.port),
                "REDIS_PASSWORD": REDIS_PASSWORD, "SERVICE_INSTANCE_NAME": namespace,
                "CDB_BUFFER_DIR": str(tmp_path / "buffers"), "LOG_LEVEL": "INFO",
                "WS_SOURCE": "binance", "WS_SYMBOLS": "BTCUSDT", "BINANCE_URL": fake.url,
                "CDB_SECRETS_DIR": str(tmp_path / "no-secrets"),
                # Configured like every service; ws itself never connects to it.
                "DATABASE_URL": "postgresql://cdb:unused@127.0.0.1:9/cdb",
            }
            procs = Processes(env, tmp_path)
            client = redis_server.client()
            ns = Namespace(namespace)
            try:
                await procs.start("ws")

                async def subscribed() -> bool:
                    return fake.stats.ws_open >= 1

                await eventually_async(subscribed, 15, "ws subscribed to the trade stream")
                sent = [fake.trade("BTCUSDT", f"{42000 + i}.5", qty="0.002", trade_id=i)
                        for i in (*range(1, 11), *range(15, 21))]  # 11-14 never printed
                await fake.publish(sent)

                async def arrived() -> bool:
                    return await client.xlen(ns.key(MARKET_DATA)) >= len(sent)

                await eventually_async(arrived, 15, "trades on stream.market_data")
                got = [decode(f[b"e"]) for _, f in await client.xrange(ns.key(MARKET_DATA))]
                assert [(t.trade_id, t.price_e8, t.qty_e8) for t in got] == [  # type: ignore[union-attr]
                    (t.trade_id, t.price_e8, t.qty_e8) for t in sent]
                alerts = [decode(f[b"e"]) for _, f in
                          await client.xrange(ns.key(ALERTS_STREAM))]
                gaps = [a for a in alerts if a.code == "market_data_gap"]  # type: ignore[union-attr]
                assert len(gaps) == 1, alerts
                assert "4 BTCUSDT trade(s) missed after id 10" in gaps[0].message  # type: ignore[union-attr]
                process = procs.running.pop("ws")
                process.terminate()
                assert await asyncio.wait_for(process.wait(), 20) == 0, procs.log("ws")
            finally:
                await procs.close()
                await client.aclose()
