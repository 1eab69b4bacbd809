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


async def test_a_commit_it_acknowledged_survives_a_crash() -> None:
    """A scenario kills PostgreSQL and then checks nothing the pipeline committed is
    lost: the test server must keep acknowledged commits over its own crash."""
    async with PostgresServer() as server:
        conn = await asyncpg.connect(_dsn(server))
        await conn.execute("CREATE TABLE t (x int)")
        for x in range(20):
            await conn.execute("INSERT INTO t VALUES ($1)", x)  # one commit each
        server.stop(kill=True)  # at once: no checkpoint, no WAL writer round
        await conn.close(timeout=1)
        server.start()
        conn = await asyncpg.connect(_dsn(server))
        assert await conn.fetchval("SELECT count(*) FROM t") == 20
        await conn.close()

