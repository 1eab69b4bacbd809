"""`cdb db upgrade|backup|restore` against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdb.events import Signal
from cdb.storage.store import Store
from cdb.testing.postgres import PostgresServer

pytestmark = pytest.mark.integration


def cdb(*args: str, url: str, schema_ns: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "SERVICE_INSTANCE_NAME": schema_ns}
    return subprocess.run([sys.executable, "-m", "cdb", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def signal(n: int) -> Signal:
    return Signal(id=f"s{n}", ts=n, correlation_id=f"t{n}", causation_id=f"t{n}", source="x",
                  strategy_id="momentum", symbol="BTCUSDT", side="BUY", price_e8=10**12,
                  trade_id=n, move_bp=300, volume_e8=10**13)


async def _write_and_read(url: str, schema: str, events: list[Signal] | None) -> list[dict]:
    async with Store(url, schema=schema) as store:
        if events:
            await store.write(events)
        return await store.rows("signals")


def test_backup_then_restore_into_an_empty_database_gives_the_same_rows(tmp_path: Path) -> None:
    with PostgresServer() as source, PostgresServer() as target:
        ns = "backup-demo"
        schema = "cdb_backup_demo"
        up = cdb("db", "upgrade", url=source.url, schema_ns=ns)
        assert up.returncode == 0, up.stderr
        rows = asyncio.run(_write_and_read(source.url, schema, [signal(n) for n in range(50)]))
        dump = tmp_path / "cdb.dump"
        done = cdb("db", "backup", str(dump), url=source.url, schema_ns=ns)
        assert done.returncode == 0, done.stderr
        assert dump.stat().st_size > 0
        back = cdb("db", "restore", str(dump), url=target.url, schema_ns=ns)
        assert back.returncode == 0, back.stderr
        assert asyncio.run(_write_and_read(target.url, schema, None)) == rows
        assert len(rows) == 50


def test_restore_of_a_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    result = cdb("db", "restore", str(tmp_path / "nope.dump"),
                 url="postgresql+asyncpg://postgres@127.0.0.1:1/x")
    assert result.returncode == 2
    assert "not a readable dump file" in result.stderr
    assert "Traceback" not in result.stderr
