"""The distributed pipeline (``cdb up``) through a Redis outage: services stay up,
producers buffer on disk, and afterwards PostgreSQL holds every signal, order and fill
that went through the streams, once, and exactly the venue's fills."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cdb.testing.cluster import REDIS_PASSWORD, LocalPipeline
from cdb.testing.redis import RedisServer
from cdb.testing.waiting import eventually
from tests.e2e.test_distributed import MARKET, assert_nothing_lost_or_doubled, db_rows

pytestmark = pytest.mark.timeout(400)

SHORT_INTERVALS = {
    "CDB_BREAKER_OPEN_S": "2", "CDB_BACKOFF_BASE_S": "0.1", "CDB_BACKOFF_CAP_S": "1",
    "REDIS_SOCKET_TIMEOUT_S": "2",
}


def test_redis_stopped_mid_run_loses_nothing(tmp_path: Path) -> None:
    env = {**MARKET, "WS_SPEED": "20000", **SHORT_INTERVALS,
           "CDB_BUFFER_DIR": str(tmp_path / "buffers")}
    pipe = LocalPipeline(tmp_path, env=env)
    # As deployed: Redis keeps its streams across a restart (AOF, fsync always).
    pipe.redis = RedisServer(password=REDIS_PASSWORD,
                             args=("--appendonly", "yes", "--appendfsync", "always"))
    with pipe:
        pipe.start()
        eventually(lambda: pipe.details("ws")["trades"] > 20_000, 60, "market flowing")
        pipe.redis.stop()
        eventually(lambda: pipe.details("ws")["buffered_events"] > 0, 30, "ws buffering")
        # /health serves the last scheduled check (every CDB_MONITOR_INTERVAL_S, 5 s):
        # the outage shows there within one interval.
        eventually(lambda: pipe.get("ws", "/health")["status"] == "degraded", 15,
                   "ws degraded")
        health = pipe.get("ws", "/health")
        assert health["dependencies"]["redis"]["status"] == "down", health
        time.sleep(3)  # longer than the breaker stays open
        pipe.redis.start()
        # ws dumped the rest of its market into the buffer meanwhile (nothing paced it):
        # the flush, paced by the consumers, comes first; then they drain.
        eventually(lambda: pipe.details("ws")["buffered_events"] == 0, 240, "ws flushed")
        pipe.wait_done(timeout=240)
        assert_nothing_lost_or_doubled(pipe)
        ledger = pipe.get("execution", "/venue/ledger")
        assert ledger, "the market must produce fills"
        key = lambda r: (r["venue_fill_id"], r["price_e8"], r["qty_e8"], r["fee_e8"])  # noqa: E731
        assert sorted(map(key, ledger)) == sorted(map(key, db_rows(pipe, "fills")))
        for name in ("ws", "signal", "risk", "execution", "db_writer"):
            assert pipe.get(name, "/health")["status"] == "healthy", name
