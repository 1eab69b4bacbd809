"""``cdb console``: serve the operator console for a distributed or embedded pipeline.

Distributed: ``--redis URL --postgres URL`` or the usual REDIS_*/POSTGRES_* settings
(discovery, streams and the database of the namespace). Embedded: ``--db FILE`` of a
``cdb run`` (read-only). Port ``CONSOLE_PORT`` (8010), host ``BIND_HOST`` (127.0.0.1);
bound elsewhere than loopback, every page needs sign-in, not only changes.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import structlog
import typer

from cdb.bus.keys import Namespace
from cdb.config import load_settings
from cdb.errors import ConfigError
from cdb.events import SCALE
from cdb.urls import check_url, database_url, is_loopback

if TYPE_CHECKING:
    from cdb.console.app import Console

DEFAULT_PORT = 8010


def _port(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_PORT
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ConfigError([f"CONSOLE_PORT: {value[:20]!r} is not a port (1 to 65535)"])
    return int(value)


async def serve(console: Console, host: str, port: int) -> None:
    """Serve ``console`` until SIGINT/SIGTERM (the watcher runs meanwhile)."""
    from cdb.console.app import build_app
    from cdb.runtime.http import HttpServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    http = HttpServer(build_app(console), host, port)
    async with console.watcher:
        await http.start()
        structlog.get_logger("cdb.console").info(
            "console ready", url=f"http://{host}:{http.port}/", mode=console.watcher.mode)
        try:
            await stop.wait()
        finally:
            await http.stop()


def console_command(
    redis_url: Annotated[
        str | None, typer.Option("--redis", help="redis://[:password@]host:port/db")] = None,
    postgres_url: Annotated[
        str | None, typer.Option("--postgres", help="postgresql://user[:password]@host:port/db"),
    ] = None,
    db: Annotated[
        str | None, typer.Option("--db", help="SQLite file or URL of a `cdb run` (embedded)."),
    ] = None,
    reports: Annotated[
        Path, typer.Option(help="Where scenario runs write their reports.")] = Path("cdb-reports"),
    namespace: Annotated[
        str | None, typer.Option(help="Namespace (default: SERVICE_INSTANCE_NAME).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: CONSOLE_PORT, 8010).")] = None,
    risk_url: Annotated[
        str | None, typer.Option(help="Risk's API (default: found by discovery).")] = None,
) -> None:
    """Serve the operator console (web) on 127.0.0.1:8010."""
    # Imported here, not at the top: every other `cdb` command starts without FastAPI,
    # Jinja2 and the console's records.
    from cdb.cli_status import redis_from_settings, redis_from_url
    from cdb.console.app import Console
    from cdb.console.auth import Sessions
    from cdb.console.records import Records
    from cdb.console.state import Watcher
    from cdb.observability import logging as cdb_logging

    settings = load_settings()
    cdb_logging.configure(settings.log_level)
    listen = port if port is not None else _port(os.environ.get("CONSOLE_PORT"))
    if not 1 <= listen <= 65535:
        raise ConfigError([f"--port: {listen} is not a port (1 to 65535)"])
    if risk_url is not None:
        check_url("--risk-url", risk_url, ("http", "https"))
    name = settings.service_instance_name if namespace is None else namespace
    token = settings.cdb_api_token.get_secret_value() if settings.cdb_api_token else None
    cash_e8 = round(settings.risk_initial_cash * SCALE)  # where the book's equity curve starts
    if db is not None:
        if redis_url or postgres_url:
            raise ConfigError(["--db (embedded) goes without --redis and --postgres"])
        records = Records(database_url("--db", db))
        watcher = Watcher(records=records, redis=None, namespace=Namespace(name), api_token=None,
                          initial_cash_e8=cash_e8)
    else:
        if postgres_url is not None:
            check_url("--postgres", postgres_url,
                      ("postgresql", "postgres", "postgresql+asyncpg"))
            url = postgres_url
        elif settings.postgres_host or settings.database_url is not None:
            url = settings.postgres_url()
        else:
            raise ConfigError(["POSTGRES_HOST: not set; set it or pass --postgres URL "
                               "(or --db FILE for an embedded run)"])
        client = redis_from_url(redis_url) if redis_url else redis_from_settings(settings)
        records = Records(url, settings.postgres_schema() if namespace is None
                          else ("cdb_" + name.replace("-", "_") if name else None))
        watcher = Watcher(records=records, redis=client, namespace=Namespace(name),
                          api_token=token, risk_url=risk_url, initial_cash_e8=cash_e8)
    host = settings.bind_host
    console = Console(watcher, Sessions(token if db is None else None), reports,
                      open_reads=is_loopback(host))

    async def main() -> None:
        async with records:
            await serve(console, host, listen)

    asyncio.run(main())
