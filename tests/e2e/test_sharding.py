"""Scaling out: signal runs as two shards that own disjoint symbol sets. Every trade is
evaluated by exactly one shard, and ws, publishing as fast as they read, is held by
the shards' groups, not by the plain ``signal`` group nobody reads."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import httpx
import pytest

from cdb.bus.keys import MARKET_DATA
from cdb.config import load_settings
from cdb.runtime.distributed import _source
from cdb.testing.postgres import PostgresServer
from cdb.testing.redis import RedisServer
from cdb.testing.waiting import eventually_async
from tests.e2e.processes import Processes

pytestmark = pytest.mark.timeout(180)

SHARDS = {"a": "BTCUSDT,ETHUSDT", "b": "SOLUSDT"}


def consumed(metrics: str, topic: str) -> float:
    pattern = rf'^cdb_events_consumed_total{{[^}}]*topic="{re.escape(topic)}"[^}}]*}} (\S+)$'
    return sum(float(m) for m in re.findall(pattern, metrics, re.MULTILINE))


async def test_two_signal_shards_split_the_symbols_and_ws_is_not_held_by_the_plain_group(
    tmp_path: Path,
) -> None:
    namespace = f"sh{uuid.uuid4().hex[:8]}"
    with RedisServer(password="shard-pw") as redis_server, PostgresServer() as pg:
        env = {
            **os.environ, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_server.port),
            "REDIS_PASSWORD": "shard-pw", "DATABASE_URL": pg.url,
            "SERVICE_INSTANCE_NAME": namespace, "CDB_BUFFER_DIR": str(tmp_path / "buffers"),
            "CDB_SECRETS_DIR": str(tmp_path / "no-secrets"), "LOG_LEVEL": "INFO",
            # ~24k trades as fast as the consumers take them: far past the pacer's
            # 5,000-entry high-water mark, which an unread group would hold ws at.
            "WS_SPEED": "max", "WS_DURATION_S": "480", "WS_SEED": "3",
            "SIGNAL_STRATEGY_ID": "momentum",
        }
        procs = Processes(env, tmp_path)
        try:
            for name in ("db_writer", "execution", "risk"):
                await procs.start(name)
            for shard, symbols in SHARDS.items():
                await procs.start(f"signal-{shard}", "signal", CDB_SHARD=shard,
                                  CDB_SHARD_SYMBOLS=symbols)
            await procs.start("ws")

            async with httpx.AsyncClient(timeout=5) as http:

                async def ws_done() -> bool:
                    health = (await http.get(procs.url("ws", "/health"))).json()
                    return bool(health["details"]["done"])

                await eventually_async(ws_done, 90, "ws published its whole market")
                # The market ws published (the stream itself is trimmed to ~10,000).
                per_symbol: dict[str, int] = {}
                for batch in _source(load_settings(environ=env), "ws"):
                    for trade in batch:
                        per_symbol[trade.symbol] = per_symbol.get(trade.symbol, 0) + 1
                health = (await http.get(procs.url("ws", "/health"))).json()
                assert health["details"]["trades"] == sum(per_symbol.values()) > 10_000

                async def shards_caught_up() -> bool:
                    seen = {}
                    for shard in SHARDS:
                        text = (await http.get(procs.url(f"signal-{shard}", "/metrics"))).text
                        seen[shard] = consumed(text, MARKET_DATA)
                    wanted = {s: sum(per_symbol.get(sym, 0) for sym in syms.split(","))
                              for s, syms in SHARDS.items()}
                    return seen == wanted

                await eventually_async(shards_caught_up, 60,
                                       "each shard evaluated exactly its symbols' trades")
        finally:
            await procs.close()
