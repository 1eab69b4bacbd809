"""Backup and restore of a PostgreSQL database of record with pg_dump / pg_restore.

The custom format (``-Fc``) is compressed and restorable table by table; a
namespace's schema can be dumped alone. The password goes to the tools through
``PGPASSWORD`` in their environment, never on a command line.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from sqlalchemy.engine import make_url

from cdb.errors import StoreError
from cdb.observability.logging import mask_text


def _libpq(url: str) -> tuple[list[str], dict[str, str]]:
    parsed = make_url(url)
    if not parsed.get_backend_name().startswith("postgres"):
        raise StoreError(f"backup and restore need PostgreSQL, not {parsed.get_backend_name()}")
    args = ["--host", parsed.host or "127.0.0.1", "--port", str(parsed.port or 5432),
            "--username", parsed.username or "postgres", "--no-password"]
    env = {**os.environ}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return [*args, "--dbname", parsed.database or "postgres"], env


def _tool(tool: str) -> str:
    exe = shutil.which(tool) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"))), None
    )
    if exe is None:
        raise StoreError(f"{tool} not found: install the PostgreSQL client (apt-get install "
                         "postgresql-client)")
    return exe


def _readable(path: Path) -> Path:
    if not path.is_file():
        raise StoreError(f"{path} is not a readable dump file")
    return path


async def _run(tool: str, args: list[str], env: dict[str, str]) -> None:
    exe = _tool(tool)
    proc = await asyncio.create_subprocess_exec(
        exe, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise StoreError(f"{tool} failed ({proc.returncode}): {mask_text(err.decode().strip())}")


async def backup(url: str, path: Path, schema: str | None = None) -> None:
    """Dump the database (or one schema) at ``url`` into ``path`` (custom format)."""
    args, env = _libpq(url)
    extra = [f"--schema={schema}"] if schema else []
    await _run("pg_dump", [*args, "--format=custom", f"--file={path}", *extra], env)


async def restore(url: str, path: Path) -> None:
    """Restore a dump made by ``backup`` into the (empty) database at ``url``."""
    args, env = _libpq(url)
    await _run("pg_restore", [*args, "--exit-on-error", "--no-owner", str(_readable(path))], env)
