"""``cdb up``: configure the children from flags, supervise them, show their state.

The live table shows each service's pulse beside its state: events per second in
and out (from two looks at its /metrics counters), consumer lag and events buffered on
disk, and under it the ESS state and the session's trades, signals, orders and fills.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cdb.config import SERVICE_PORTS, load_settings
from cdb.errors import ConfigError
from cdb.runtime.supervisor import Supervisor, child_env
from cdb.urls import postgres_endpoint, redis_endpoint


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
        try:
            redis = redis_endpoint(redis_url)
        except ConfigError as exc:
            problems.extend(exc.problems)
        else:
            out["REDIS_HOST"] = redis.host
            out["REDIS_PORT"] = str(redis.port)
            out["REDIS_DB"] = redis.db
            secret("redis_password", redis.password)
    if postgres_url:
        try:
            pg = postgres_endpoint(postgres_url)
        except ConfigError as exc:
            problems.extend(exc.problems)
        else:
            out["POSTGRES_HOST"] = pg.host
            out["POSTGRES_PORT"] = str(pg.port)
            out["POSTGRES_USER"] = pg.user
            out["POSTGRES_DB"] = pg.db
            secret("postgres_password", pg.password)
    if problems:
        raise ConfigError(problems)
    return out


class Sample(msgspec.Struct, kw_only=True):
    """What one service said in one look: its /health and the counters of /metrics."""

    health: str = "-"
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    consumed: float | None = None
    published: float | None = None
    lag: float = 0.0


def parse_metrics(text: str) -> tuple[float, float, float]:
    """(events consumed, events published, consumer lag) summed over topics and streams."""
    consumed = published = lag = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cdb_events_consumed_total":
                consumed += sample.value
            elif sample.name == "cdb_events_published_total":
                published += sample.value
            elif sample.name == "cdb_consumer_lag":
                lag += sample.value
    return consumed, published, lag


async def _sample(client: httpx.AsyncClient, port: int) -> Sample:
    out = Sample()
    base = f"http://127.0.0.1:{port}"
    try:
        body = (await client.get(f"{base}/health", timeout=1.0)).json()
        out.health = str(body.get("status", "?"))
        out.details = body.get("details") or {}
    except (httpx.HTTPError, ValueError, AttributeError):
        return out
    try:
        text = (await client.get(f"{base}/metrics", timeout=1.0)).text
        out.consumed, out.published, out.lag = parse_metrics(text)
    except (httpx.HTTPError, ValueError):
        pass
    return out


class Pulse:
    """Events per second in and out of each service, from two looks at its counters."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float, float]] = {}
        self.rates: dict[str, tuple[float, float]] = {}

    def update(self, name: str, sample: Sample, now: float) -> None:
        if sample.consumed is None or sample.published is None:
            self.rates.pop(name, None)
            return
        previous = self._last.get(name)
        self._last[name] = (now, sample.consumed, sample.published)
        if previous is None or now <= previous[0]:
            return
        span = now - previous[0]
        # A restarted service starts its counters again: no negative rate.
        self.rates[name] = (max(0.0, sample.consumed - previous[1]) / span,
                            max(0.0, sample.published - previous[2]) / span)


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def session_line(samples: dict[str, Sample]) -> Text:
    """ESS state and what the session did: trades, signals, orders, fills."""
    def count(service: str, key: str) -> str:
        value = samples.get(service, Sample()).details.get(key)
        return f"{value:,}" if isinstance(value, int) else "-"

    ess = samples.get("risk", Sample()).details.get("ess") or {}
    state = str(ess.get("state") or "?")
    line = Text("ESS ")
    line.append(state, style={"ACTIVE": "green", "HALTED": "bold red"}.get(state, ""))
    if state == "HALTED":
        line.append(f" ({ess.get('reason') or '?'}"
                    + (f", by {ess['actor']}" if ess.get("actor") else "") + ")")
    line.append(f"   trades {count('ws', 'trades')}  signals {count('signal', 'signals')}"
                f"  orders {count('risk', 'orders')}  fills {count('execution', 'fills')}")
    return line


def _table(sup: Supervisor, samples: dict[str, Sample], ports: dict[str, int],
           pulse: Pulse | None = None) -> Table:
    # One space between columns and short headers: it fits an 80-column terminal.
    table = Table(title="cdb up (Ctrl-C stops)", title_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, collapse_padding=True,
                  caption=session_line(samples), caption_justify="left")
    for col in ("service", "pid", "state", "rst", "port", "health"):
        table.add_column(col, no_wrap=True)
    for col in ("in/s", "out/s", "lag", "buffered"):
        table.add_column(col, no_wrap=True, justify="right")
    rates = pulse.rates if pulse is not None else {}
    for name, child in sup.children.items():
        pid = child.process.pid if child.process else None
        sample = samples.get(name, Sample())
        rate = rates.get(name)
        buffered = sample.details.get("buffered_events")
        table.add_row(name, str(pid or "-"), child.state, str(child.restarts),
                      str(ports[name]), sample.health,
                      _rate(rate[0] if rate else None), _rate(rate[1] if rate else None),
                      f"{sample.lag:,.0f}" if sample.consumed is not None else "-",
                      f"{buffered:,}" if isinstance(buffered, int) else "-")
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
        samples: dict[str, Sample] = {}
        pulse = Pulse()
        try:
            async with httpx.AsyncClient() as client:
                with Live(_table(sup, samples, ports), console=console, refresh_per_second=2,
                          transient=False, auto_refresh=console.is_terminal) as live:
                    while not stop.is_set():
                        names = list(sup.children)
                        found = await asyncio.gather(*[_sample(client, ports[n]) for n in names])
                        now = time.monotonic()
                        for name, sample in zip(names, found, strict=True):
                            samples[name] = sample
                            pulse.update(name, sample, now)
                        live.update(_table(sup, samples, ports, pulse))
                        if not console.is_terminal:
                            console.print(_table(sup, samples, ports, pulse))
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), 2.0 if console.is_terminal else 30)
        finally:
            console.print("stopping: draining services upstream first")
            await sup.stop()
            console.print(_table(sup, samples, ports))
