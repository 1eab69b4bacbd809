"""Engines for SQLite and PostgreSQL, the migrations that build their schema, and the
errors they raise.

Only the two async drivers cdb ships with are accepted; ``sqlite://`` and
``postgresql://`` URLs are mapped to them. A pipeline's namespace is a PostgreSQL
schema: every table and alembic's version table live in it, applied at execution
time through ``schema_translate_map`` so one set of table definitions serves all.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import weakref
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import Connection, event, pool, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateSchema

from cdb.errors import StoreError
from cdb.urls import redact_url

SQLITE: Final = "sqlite+aiosqlite"
POSTGRES: Final = "postgresql+asyncpg"
MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")
_DRIVERS: Final = {
    "sqlite": SQLITE,
    SQLITE: SQLITE,
    "postgresql": POSTGRES,
    "postgres": POSTGRES,
    POSTGRES: POSTGRES,
}
_MAX_SCHEMA_LEN: Final = 63  # PostgreSQL's identifier limit (NAMEDATALEN - 1)
_URL_HELP: Final = "use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST:PORT/DB"

# Alembic keeps the running migration in module globals, so two migrations awaiting
# I/O on one event loop would trample each other; one at a time per loop.
_migration_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def parse_url(url: str) -> URL:
    """The URL with its async driver; ``StoreError`` for anything else."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise StoreError(f"invalid database URL {redact_url(url)!r}: {exc}; {_URL_HELP}"
                         ) from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise StoreError(
            f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: {_URL_HELP}"
        )
    return parsed.set(drivername=driver)


def check_schema(url: URL, schema: str | None) -> str | None:
    """The schema to use (``""`` means none); ``StoreError`` if ``url`` can't have it."""
    if not schema:
        return None
    if url.drivername != POSTGRES:
        raise StoreError(
            f"schema {schema!r} needs PostgreSQL; with SQLite give each pipeline its own "
            "database file instead"
        )
    if len(schema.encode()) > _MAX_SCHEMA_LEN:
        raise StoreError(f"schema {schema!r} is longer than {_MAX_SCHEMA_LEN} bytes")
    return schema


def describe(url: URL, schema: str | None = None) -> str:
    """``url`` for messages: never the password."""
    shown = url.render_as_string(hide_password=True)
    return f"{shown} (schema {schema})" if schema else shown


def make_engine(url: URL, schema: str | None, *, pooled: bool = True) -> AsyncEngine:
    """An engine for ``url`` whose unqualified tables resolve to ``schema``.

    Args:
        pooled: keep connections open for reuse; off for one-off work such as a
            migration.
    """
    options: dict[str, Any] = {}
    if schema:
        options["schema_translate_map"] = {None: schema}
    extra: dict[str, Any] = {} if pooled else {"poolclass": pool.NullPool}
    # hide_parameters: a failed batch must not put a thousand rows into an error message.
    engine = create_async_engine(url, execution_options=options, hide_parameters=True, **extra)
    if url.drivername == SQLITE:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            directory = Path(url.database).absolute().parent
            event.listen(engine.sync_engine, "do_connect", _directory_check(directory))
    return engine


def _directory_check(directory: Path) -> Callable[..., None]:
    # A SQLite file needs a writable directory (WAL adds files next to it). Checked
    # before the driver connects: aiosqlite's failed connect leaves a thread that
    # reports to the event loop later, which may be closed by then.
    def check(*_args: object) -> None:
        if not os.access(directory, os.W_OK | os.X_OK):
            raise sqlite3.OperationalError(
                f"unable to open database file: directory {directory} is missing or not writable"
            )

    return check


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    # WAL lets readers (the CLI, probes) work while the writer commits; NORMAL syncs at
    # checkpoints only, which in WAL mode can lose the last commits on power loss but
    # never corrupts: acceptable for the embedded mode, and several times faster.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def store_error(action: str, where: str, exc: BaseException) -> StoreError:
    """A ``StoreError`` saying what failed where, why, and what to do about it."""
    reason = str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)
    reason = reason.strip() or type(exc).__name__
    hint = _hint(reason.lower(), exc)
    return StoreError(f"{action} on {where} failed: {reason}" + (f" ({hint})" if hint else ""))


def _hint(reason: str, exc: BaseException) -> str:
    if "unable to open database file" in reason:
        return "create the directory, or point the URL at a writable one"
    if "no such table" in reason or ("relation" in reason and "does not exist" in reason):
        return "the database has no cdb schema yet: run cdb.storage.migrate(url, schema)"
    if "password authentication failed" in reason or ("role" in reason and "not exist" in reason):
        return "check POSTGRES_USER and POSTGRES_PASSWORD"
    if "database" in reason and "does not exist" in reason:
        return "create the database first"
    if isinstance(exc, OSError) or "connect" in reason:
        return "is the database server running and reachable?"
    return ""


async def migrate(url: str, schema: str | None = None) -> None:
    """Upgrade the database at ``url`` (in ``schema``, PostgreSQL only) to the newest schema.

    Creates the schema if it is missing. All or nothing, and safe to call from several
    processes at once: they take turns (a PostgreSQL advisory lock, an immediate SQLite
    transaction).

    Raises:
        StoreError: bad URL, database unreachable, or a migration failed.
    """
    parsed = parse_url(url)
    schema = check_schema(parsed, schema)
    engine = make_engine(parsed, schema, pooled=False)
    try:
        await upgrade(engine, schema, describe(parsed, schema))
    finally:
        await engine.dispose()


async def upgrade(engine: AsyncEngine, schema: str | None, where: str) -> None:
    """Run the migrations on ``engine`` (made by ``make_engine`` with ``schema``)."""
    loop = asyncio.get_running_loop()
    lock = _migration_locks.get(loop)
    if lock is None:
        lock = _migration_locks[loop] = asyncio.Lock()
    async with lock:
        try:
            async with engine.begin() as conn:
                if engine.dialect.name == "sqlite":
                    # The driver leaves DDL outside transactions; an explicit one makes
                    # the migration atomic, and IMMEDIATE serializes migrating processes.
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    key = zlib.crc32(f"cdb.storage.migrate:{schema or ''}".encode())
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
                    if schema:
                        await conn.execute(CreateSchema(schema, if_not_exists=True))
                await conn.run_sync(_alembic_upgrade, schema)
        except (SQLAlchemyError, OSError, CommandError) as exc:
            raise store_error("migration", where, exc) from exc


def _alembic_upgrade(connection: Connection, schema: str | None) -> None:
    config = Config(attributes={"connection": connection, "schema": schema})
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    command.upgrade(config, "head")
