"""``cdb status``: every instance registered in Redis, with its health.

Reads the discovery registry (``cdb.runtime.discovery``) of the namespace, asks
each live instance for its ``/health``, and prints one row per instance. An instance
whose heartbeat expired, or that does not answer, is shown as gone. Exit code 0 when
every instance is live and not unhealthy, 1 otherwise, 2 when Redis cannot be read or
an option is wrong (one line). What instances registered is printed as text.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from typing import Annotated, Any, Literal

import httpx
import msgspec
import redis.asyncio as aioredis
import typer
from redis.exceptions import RedisError
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cdb.bus.keys import Namespace
from cdb.clock import WallClock
from cdb.config import Settings, load_settings
from cdb.errors import CdbError, ConfigError
from cdb.observability.logging import mask_text
from cdb.runtime.discovery import Registration, discover
from cdb.urls import redis_endpoint

State = Literal["live", "gone"]
_STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "red", "gone": "red dim"}


class InstanceStatus(msgspec.Struct, kw_only=True):
    """One row of ``cdb status``."""

    service: str
    instance: str
    state: State
    health: str
    """healthy, degraded, unhealthy (from /health), or gone."""
    address: str
    grpc_address: str
    version: str
    started: str
    uptime_s: float | None
    """Seconds since it started; None when gone."""
    last_seen_s: float
    """Seconds since the last heartbeat."""
    note: str = ""
    session: str = ""
    """The pipeline's session: the run id on every row it writes (``cdb runs``)."""
    """Why it is gone, or which dependency is down."""


def redis_from_url(url: str) -> aioredis.Redis:
    """A client for ``redis://[:password@]host:port/db``.

    Raises:
        ConfigError: not a redis:// URL.
    """
    at = redis_endpoint(url)
    return aioredis.Redis(
        host=at.host, port=at.port, db=int(at.db), password=at.password or None,
        ssl=at.tls, socket_timeout=5.0, socket_connect_timeout=3.0,
    )


def redis_from_settings(settings: Settings) -> aioredis.Redis:
    """A client from the REDIS_* settings (Sentinel included), like the services'."""
    if not settings.redis_host and not settings.redis_sentinels:
        raise ConfigError(["REDIS_HOST: not set; set it (and REDIS_PASSWORD) or pass --redis URL"])
    from cdb.bus.redis import make_redis

    return make_redis(settings)


async def _health(http: httpx.AsyncClient, address: str) -> tuple[str, str]:
    """(status, note) from ``address/health``; ("gone", why) when it does not answer."""
    try:
        response = await http.get(f"{address}/health")
        body: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return "gone", f"not answering: {type(exc).__name__}"
    status = str(body.get("status", "?"))
    down = [
        f"{name}: {dep.get('last_error') or 'down'}"
        for name, dep in (body.get("dependencies") or {}).items()
        if isinstance(dep, dict) and dep.get("status") == "down"
    ]
    return status, mask_text("; ".join(down))


def _row(reg: Registration, health: str, note: str, now_ns: int) -> InstanceStatus:
    record = reg.record
    last_seen = max(0.0, (now_ns - record.last_seen_ns) / 1e9)
    if not reg.alive:
        health, note = "gone", f"heartbeat expired ({last_seen:.0f} s since the last)"
    state: State = "gone" if health == "gone" else "live"
    uptime = max(0.0, (now_ns - record.started_ns) / 1e9) if state == "live" else None
    return InstanceStatus(
        service=record.service, instance=record.instance, state=state, health=health,
        address=record.address, grpc_address=record.grpc_address, version=record.version,
        started=record.started, uptime_s=None if uptime is None else round(uptime, 1),
        last_seen_s=round(last_seen, 1), note=note,
    )


async def collect(client: aioredis.Redis, namespace: Namespace, *, timeout: float = 2.0,
                  now_ns: int | None = None) -> list[InstanceStatus]:
    """Every registered instance with its health (live ones are asked concurrently)."""
    registrations = await discover(client, namespace)
    async with httpx.AsyncClient(timeout=timeout) as http:
        answers = await asyncio.gather(*[
            _health(http, r.record.address) if r.alive else _gone() for r in registrations
        ])
    now = WallClock().now() if now_ns is None else now_ns
    session = namespace.session
    return [msgspec.structs.replace(_row(r, h, n, now), session=session)
            for r, (h, n) in zip(registrations, answers, strict=True)]


async def _gone() -> tuple[str, str]:
    return "gone", ""


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _cells(row: InstanceStatus, wide: bool) -> list[Text]:
    # Every cell is Text: what an instance registered is data, not markup.
    cells = [Text(row.service), Text(row.instance)]
    if wide:
        cells.append(Text(row.state))
    cells.append(Text(row.health, style=_STYLE.get(row.health, "")))
    if wide:
        cells += [Text(row.address), Text(row.grpc_address or "-"), Text(row.version)]
    cells += [Text("-" if row.uptime_s is None else _ago(row.uptime_s)),
              Text(f"{_ago(row.last_seen_s)} ago"), Text(row.note or "-")]
    return cells


def table(rows: list[InstanceStatus], namespace: str, *, wide: bool = False,
          width: int = 80) -> Table:
    """The rich table ``cdb status`` prints.

    Narrow (the default) fits ``width`` columns (80): service, instance, health, uptime,
    heartbeat and the note; only the note (then a long instance name) is cut, with an
    ellipsis. ``wide`` adds the state, the HTTP and gRPC addresses and the version, and
    cuts nothing.
    """
    names = ["service", "instance", *(["state"] if wide else []), "health",
             *(["address", "grpc", "version"] if wide else []), "up", "heartbeat", "note"]
    body = [_cells(row, wide) for row in rows]
    out = Table(title=Text(f"cdb status (namespace {namespace or '(none)'}, "
                           f"session {Namespace(namespace).session})"),
                title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                pad_edge=False)
    need = [max([len(name), *(c[i].cell_len for c in body)]) for i, name in enumerate(names)]
    if not wide:
        # Three characters between columns (padding, rule, padding); what is left after
        # the fixed ones goes to the note, and an instance name past 24 gives way first.
        need[1] = min(need[1], 24)
        room = width - 3 * (len(names) - 1) - sum(need[:-1])
        need[-1] = max(8, min(need[-1], room))
    for i, name in enumerate(names):
        out.add_column(name, no_wrap=True, min_width=need[i], max_width=None if wide else need[i],
                       overflow="fold" if wide else "ellipsis",
                       justify="right" if name in ("up", "heartbeat") else "left")
    for cells in body:
        out.add_row(*cells)
    return out


def healthy_enough(rows: list[InstanceStatus]) -> bool:
    """Every instance live and not unhealthy (and at least one)."""
    return bool(rows) and all(r.state == "live" and r.health != "unhealthy" for r in rows)


def status(
    redis_url: Annotated[
        str | None,
        typer.Option("--redis", help="redis://[:password@]host:port/db (default: REDIS_*)"),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(help="Namespace of the pipeline (default: SERVICE_INSTANCE_NAME)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each /health.")] = 2.0,
    wide: Annotated[
        bool, typer.Option("--wide", help="Every column (addresses, version, state)."),
    ] = False,
) -> None:
    """Show every running instance of the pipeline with its health; gone ones too."""
    if not (math.isfinite(timeout) and 0 < timeout <= 3600):
        raise ConfigError([f"--timeout: {timeout!r} is not a number of seconds (0 to 3600)"])
    settings = load_settings()
    name = settings.service_instance_name if namespace is None else namespace
    client = redis_from_url(redis_url) if redis_url else redis_from_settings(settings)

    async def run() -> list[InstanceStatus]:
        try:
            return await collect(client, Namespace(name), timeout=timeout)
        except (RedisError, OSError) as exc:
            raise CdbError(f"cannot read the registry from Redis: {mask_text(str(exc))}") from None
        finally:
            await client.aclose()

    started = time.monotonic()
    rows = asyncio.run(run())
    if json_out:
        for row in rows:
            sys.stdout.write(msgspec.json.encode(row).decode() + "\n")
    else:
        console = Console()
        if rows:
            if wide:  # as wide as the rows are, whatever the terminal
                console = Console(width=max(console.width, 400))
            console.print(table(rows, name, wide=wide, width=console.width))
        else:
            console.print(f"no instance registered in namespace {name or '(none)'}",
                          markup=False, highlight=False)
        console.print(f"[dim]{len(rows)} instances, read in {time.monotonic() - started:.2f} s[/]")
    if not healthy_enough(rows):
        sys.exit(1)
