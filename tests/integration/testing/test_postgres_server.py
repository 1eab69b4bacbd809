"""The throwaway PostgreSQL server: own port and directory, restartable with its data,
removed on close, and a clear error when PostgreSQL is not installed."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from cdb.errors import LifecycleError
from cdb.testing.postgres import BIN_ENV, PostgresServer, PostgresServerError

pytestmark = pytest.mark.integration


def _dsn(server: PostgresServer) -> str:
    return server.url.replace("postgresql+asyncpg://", "postgresql://")


async def test_server_keeps_its_data_across_a_restart_and_is_removed_on_close() -> None:
    async with PostgresServer(database="cdb_test") as server:
        assert server.url == f"postgresql+asyncpg://postgres@127.0.0.1:{server.port}/cdb_test"
        conn = await asyncpg.connect(_dsn(server))
        await conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        await conn.close()

        server.stop()
        assert not server.running
        with pytest.raises(OSError, match="Connect call failed"):
            await asyncpg.connect(_dsn(server))
        server.start()

        conn = await asyncpg.connect(_dsn(server))
        assert await conn.fetchval("SELECT x FROM t") == 42
        await conn.close()
        directory = server.directory
        assert directory is not None
        assert "database system is ready" in server.log_tail()
    assert not server.running
    assert not directory.exists()
    with pytest.raises(LifecycleError):
        server.start()


def test_missing_binaries_name_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(BIN_ENV, str(tmp_path))

    with pytest.raises(PostgresServerError, match=r"apt-get install postgresql.*CDB_POSTGRES_BIN"):
        PostgresServer().start()
