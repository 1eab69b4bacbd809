"""``cdb up``: configure the children from flags, supervise them, show their state."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import stat
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cdb.config import SERVICE_PORTS, load_settings
from cdb.errors import ConfigError
from cdb.runtime.supervisor import Supervisor, child_env


def env_from_urls(redis_url: str | None, postgres_url: str | None, secrets: Path) -> dict[str, str]:
    """Contract variables (and secret files in ``secrets``) from ``--redis``/``--postgres``."""
    out: dict[str, str] = {}
    problems: list[str] = []

    def secret(name: str, value: str) -> None:
        path = secrets / name
        path.write_text(value)
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        out[f"{name.upper()}_FILE"] = str(path)

    if redis_url:
        parts = urlsplit(redis_url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            problems.append(f"--redis: {parts.scheme or '?'}://... is not a redis:// URL")
        else:
            out["REDIS_HOST"] = parts.hostname
            out["REDIS_PORT"] = str(parts.port or 6379)
            out["REDIS_DB"] = parts.path.strip("/") or "0"
            secret("redis_password", unquote(parts.password or ""))
    if postgres_url:
        parts = urlsplit(postgres_url)
        if not parts.scheme.startswith("postgres") or not parts.hostname:
            problems.append("--postgres: not a postgresql:// URL")
        else:
            out["POSTGRES_HOST"] = parts.hostname
            out["POSTGRES_PORT"] = str(parts.port or 5432)
            out["POSTGRES_USER"] = unquote(parts.username or "postgres")
            out["POSTGRES_DB"] = parts.path.strip("/") or "cdb"
            secret("postgres_password", unquote(parts.password or ""))
    if problems:
        raise ConfigError(problems)
    return out


async def _health(client: httpx.AsyncClient, port: int) -> str:
    try:
        response = await client.get(f"http://127.0.0.1:{port}/health", timeout=1.0)
        return str(response.json().get("status", "?"))
    except (httpx.HTTPError, ValueError):
        return "-"


def _table(sup: Supervisor, health: dict[str, str], ports: dict[str, int]) -> Table:
    table = Table(title="cdb up (Ctrl-C stops)", title_justify="left")
    for col in ("service", "pid", "state", "restarts", "port", "health"):
        table.add_column(col)
    for name, child in sup.children.items():
        pid = child.process.pid if child.process else None
        table.add_row(name, str(pid or "-"), child.state, str(child.restarts),
                      str(ports[name]), health.get(name, "-"))
    return table


async def run_up(
    redis_url: str | None, postgres_url: str | None, log_dir: Path, console: Console
) -> None:
    """Run the five services until SIGINT/SIGTERM."""
    with tempfile.TemporaryDirectory(prefix="cdb-secrets-") as tmp:
        overrides = env_from_urls(redis_url, postgres_url, Path(tmp))
        env = child_env(overrides)
        env.setdefault("SIGNAL_STRATEGY_ID", "momentum")
        settings = load_settings(environ=env)
        problems = settings.distributed_problems()
        if problems:
            raise ConfigError(problems)
        ports = {name: settings.port_of(name) for name in SERVICE_PORTS}
        sup = Supervisor(env, log_dir, drain_timeout=settings.cdb_drain_timeout_s + 5)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await sup.start()
        health: dict[str, str] = {}
        try:
            async with httpx.AsyncClient() as client:
                with Live(_table(sup, health, ports), console=console, refresh_per_second=2,
                          transient=False, auto_refresh=console.is_terminal) as live:
                    while not stop.is_set():
                        for name in sup.children:
                            health[name] = await _health(client, ports[name])
                        live.update(_table(sup, health, ports))
                        if not console.is_terminal:
                            console.print(_table(sup, health, ports))
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), 2.0 if console.is_terminal else 30)
        finally:
            console.print("stopping: draining services upstream first")
            await sup.stop()
            console.print(_table(sup, health, ports))
