"""`cdb up`: the five services as processes over real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from cdb.bus.keys import FILLS, ORDERS, SIGNALS, Namespace
from cdb.events import Fill, Order, Signal, decode
from cdb.storage.store import Store
from cdb.testing.cluster import LocalPipeline
from cdb.testing.waiting import eventually

pytestmark = pytest.mark.timeout(400)

SERVICES = ("ws", "signal", "risk", "execution", "db_writer")
MARKET = {"WS_SPEED": "max", "WS_DURATION_S": "5400", "WS_SEED": "11"}


def db_rows(pipe: LocalPipeline, table: str) -> list[dict[str, object]]:
    async def read() -> list[dict[str, object]]:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{pipe.postgres.port}/postgres"
        async with Store(url, schema=pipe.schema) as store:
            return await store.rows(table)

    return asyncio.run(read())


def stream_ids(pipe: LocalPipeline, stream: str, kind: type) -> list[str]:
    """Ids of the events of type ``kind`` on ``stream`` (orders share theirs with cancels)."""
    with pipe.redis_client() as client:
        entries = client.xrange(Namespace(pipe.namespace).key(stream))
    events = [decode(fields[b"e"]) for _, fields in entries]
    return [e.id for e in events if isinstance(e, kind)]


def assert_nothing_lost_or_doubled(pipe: LocalPipeline) -> None:
    for stream, table, kind in ((SIGNALS, "signals", Signal), (ORDERS, "orders", Order),
                                (FILLS, "fills", Fill)):
        published = stream_ids(pipe, stream, kind)
        stored = [str(r["id"]) for r in db_rows(pipe, table)]
        assert len(stored) == len(set(stored))
        # every distinct event that went through the stream is in the database, once
        assert set(published) == set(stored), table
    # every order has its signal, every fill its order
    orders = {str(r["id"]): r for r in db_rows(pipe, "orders")}
    signals = {str(r["id"]) for r in db_rows(pipe, "signals")}
    assert all(str(o["causation_id"]) in signals for o in orders.values())
    assert all(str(f["order_id"]) in orders for f in db_rows(pipe, "fills"))


def test_cdb_up_runs_the_pipeline_and_the_database_matches_the_venue(tmp_path: Path) -> None:
    with LocalPipeline(tmp_path, env=MARKET) as pipe:
        pipe.start()
        pipe.wait_done()
        assert pipe.details("ws")["trades"] > 100_000
        assert pipe.details("signal")["signals"] > 0
        ledger = pipe.get("execution", "/venue/ledger")
        fills = db_rows(pipe, "fills")
        assert ledger, "the market must produce fills"
        key = lambda r: (r["venue_fill_id"], r["price_e8"], r["qty_e8"], r["fee_e8"])  # noqa: E731
        assert sorted(map(key, ledger)) == sorted(map(key, fills))
        assert_nothing_lost_or_doubled(pipe)
        metrics = pipe.http.get(pipe.url("ws", "/metrics")).text
        assert "decoded_messages_total{" in metrics
        pipe.stop()
        assert pipe.process is not None
        assert pipe.process.returncode == 0, pipe.logs()


def test_a_service_killed_mid_stream_is_restarted_and_nothing_is_lost_or_doubled(
    tmp_path: Path,
) -> None:
    env = {**MARKET, "WS_SPEED": "20000"}  # ~1.5 h of market over ~15 s: time to kill
    with LocalPipeline(tmp_path, env=env) as pipe:
        pipe.start()
        eventually(lambda: pipe.details("ws")["trades"] > 20_000, 60, "market flowing")
        killed = {name: pipe.kill(name) for name in ("db_writer", "signal")}
        for name, pid in killed.items():
            eventually(lambda n=name, p=pid: _restarted(pipe, n, p), 60, f"{name} restarted")
        pipe.wait_done(timeout=180)
        assert_nothing_lost_or_doubled(pipe)
        ledger = pipe.get("execution", "/venue/ledger")
        assert len(ledger) == len(db_rows(pipe, "fills"))
        # SIGTERM (as systemd or docker stop send it): every service drains and exits,
        # and cdb up with them, cleanly.
        pids = [int(pipe.details(name)["pid"]) for name in SERVICES]
        pipe.stop(signal.SIGTERM)
        assert pipe.process is not None
        assert pipe.process.returncode == 0, pipe.logs()
        assert not [pid for pid in pids if _alive(pid)]
        logs = pipe.logs()
        assert logs.count('"event": "service stopped"') >= len(SERVICES), logs


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _restarted(pipe: LocalPipeline, name: str, old_pid: int) -> bool:
    try:
        return int(pipe.details(name)["pid"]) != old_pid
    except Exception:
        return False


def test_a_missing_setting_stops_a_service_with_one_clear_message(tmp_path: Path) -> None:
    from tests.e2e.conftest import cdb

    result = cdb("service", "risk", env={"REDIS_HOST": "", "POSTGRES_HOST": "",
                                         "CDB_SECRETS_DIR": str(tmp_path)})
    assert result.returncode == 2
    for name in ("REDIS_HOST", "REDIS_PASSWORD", "POSTGRES_HOST", "POSTGRES_USER"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr
