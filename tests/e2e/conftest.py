"""End-to-end tests run the real ``cdb`` command as processes; all are marked e2e."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cdb.testing.postgres import PostgresServerError, find_bin_dir


def missing_servers() -> list[str]:
    """What of redis-server and PostgreSQL's initdb/pg_ctl this machine lacks."""
    missing = []
    redis = os.environ.get("CDB_REDIS_SERVER") or "redis-server"
    if shutil.which(redis) is None:
        missing.append(f"{redis} (apt-get install redis-server, or set CDB_REDIS_SERVER)")
    try:
        find_bin_dir()
    except PostgresServerError as exc:
        missing.append(str(exc))
    return missing


@pytest.fixture(scope="session", autouse=True)
def _servers_installed() -> None:
    """Stop the session with one message, not one error per test."""
    missing = missing_servers()
    if missing:
        pytest.exit("cannot run the tests that start their own servers; missing: "
                    + "; ".join(missing), returncode=3)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)


def cdb(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``cdb ARGS`` as a user would (``python -m cdb``) and capture its output."""
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cdb", *args], capture_output=True, text=True, env=full_env,
        cwd=cwd, timeout=timeout, check=False,
    )
