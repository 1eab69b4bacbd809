"""The ``cdb`` command.

Every expected failure (bad setting, unreadable file, unknown strategy, a bad URL,
port or number) ends with one clear message on stderr and exit code 2, never a
traceback. Text that comes from the user (paths, symbols, CSV cells, reasons) is
printed as text, never as rich markup, and URLs are shown without their password.
"""

from __future__ import annotations

import asyncio
import math
import re
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cdb import __version__
from cdb.cli_ess import ess_app
from cdb.cli_scenario import scenario_app
from cdb.cli_status import status as status_command
from cdb.config import load_settings
from cdb.console.command import console_command
from cdb.errors import CdbError, ConfigError
from cdb.observability import logging as cdb_logging
from cdb.urls import check_url, database_url, redact_url

app = typer.Typer(
    name="cdb", help="Resilient event-driven crypto trading pipeline.", no_args_is_help=True,
    add_completion=False, pretty_exceptions_enable=False,
)
audit_app = typer.Typer(help="Follow events through the pipeline.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
db_app = typer.Typer(help="Operate the database of record.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(ess_app, name="ess")
app.add_typer(scenario_app, name="scenario")
app.command(name="status")(status_command)
app.command(name="console")(console_command)
console = Console()
err = Console(stderr=True)

DEFAULT_DB = "sqlite+aiosqlite:///cdb-data/cdb.db"
_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>[smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_DURATION_S = 100 * 365 * 86400.0


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived service on uvloop where it is installed (every platform but
    Windows): the consume cycle is mostly event-loop and socket work, which libuv does
    with less CPU per cycle than asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``4h``, ``1d`` → seconds."""
    match = _DURATION.match(text.strip())
    if not match or not 0 < float(match["n"]) * _UNITS[match["unit"]] < _MAX_DURATION_S:
        raise ConfigError([f"--duration: {text!r} is not a duration such as 90s, 30m or 4h"])
    return float(match["n"]) * _UNITS[match["unit"]]


def parse_speed(text: str) -> float | None:
    """``max`` (as fast as possible), ``realtime`` (1x) or a factor such as ``60``."""
    if text in ("max", "fast"):
        return None
    if text in ("realtime", "real", "1x"):
        return 1.0
    try:
        value = float(text.rstrip("x"))
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError([f"--speed: {text!r} must be max, realtime or a positive factor"])
    return value


def _sqlite_url(db: str) -> str:
    return database_url("--db", db)


def _ensure_sqlite_dir(url: str) -> None:
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix) and url != prefix + ":memory:":
        Path(url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)


@app.command()
def run(
    replay: Annotated[
        list[Path] | None, typer.Option(help="Binance trades/aggTrades CSV or ZIP to replay.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic market.")] = 7,
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols (synthetic).")] = (
        "BTCUSDT,ETHUSDT,SOLUSDT"
    ),
    duration: Annotated[str, typer.Option(help="Simulated session length (synthetic).")] = "4h",
    speed: Annotated[str, typer.Option(help="max, realtime or a factor like 60.")] = "max",
    db: Annotated[str, typer.Option(help="Database URL or SQLite file.")] = DEFAULT_DB,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
    source: Annotated[
        str | None, typer.Option(help="synthetic, replay or binance (live websocket trades).")
    ] = None,
    venue: Annotated[
        str, typer.Option(help="paper, binance-testnet or binance-live (real money).")
    ] = "paper",
    exchange_url: Annotated[
        str | None, typer.Option(help="Binance REST/websocket base URL (e.g. a FakeBinance).")
    ] = None,
    symbol: Annotated[
        str | None, typer.Option(help="Symbol of replay files whose names do not say it.")
    ] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue the latest run of the database (its ESS, positions, open orders) "
        "instead of starting fresh.")] = False,
    report: Annotated[
        Path | None, typer.Option(help="Also write the run's HTML report to this file.")
    ] = None,
) -> None:
    """Run the whole pipeline in this process on a synthetic market, a replay or Binance.

    Each run is a session with its own id. A synthetic or replay run starts fresh (no
    ESS state, position or cash from earlier runs in the database); a live run, or
    --resume, continues the latest run's state.
    """
    from cdb.runtime.embedded import RunOptions

    settings = load_settings()
    cdb_logging.configure("WARNING" if settings.log_level == "INFO" else settings.log_level)
    url = _sqlite_url(db)
    for path in replay or []:
        if not path.is_file():
            raise CdbError(f"--replay: {path} is not a readable file")
    if exchange_url is not None:
        check_url("--exchange-url", exchange_url, ("http", "https"))
    kind = source or ("replay" if replay else "synthetic")
    problems = []
    if kind not in ("synthetic", "replay", "binance"):
        problems.append(f"--source: {kind!r} is not synthetic, replay or binance")
    if venue not in ("paper", "binance-testnet", "binance-live"):
        problems.append(f"--venue: {venue!r} is not paper, binance-testnet or binance-live")
    if kind == "replay" and not replay:
        problems.append("--source replay needs --replay FILE")
    if problems:
        raise ConfigError(problems)
    options = RunOptions(
        source=kind,  # type: ignore[arg-type]  # checked above
        venue=venue,  # type: ignore[arg-type]
        exchange_url=exchange_url,
        db_url=url,
        replay=tuple(str(p) for p in replay or ()) if kind == "replay" else (),
        seed=seed,
        symbols=tuple(s.strip().upper() for s in symbols.split(",") if s.strip()),
        duration_s=parse_duration(duration),
        speed=parse_speed(speed),
        replay_symbol=symbol.strip().upper() if symbol else None,
        resume=resume,
    )
    _ensure_sqlite_dir(url)
    pipeline = _pipeline(settings, options)
    show = not quiet and not json_out
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(), console=err, disable=not show, transient=True,
    ) as bar:
        total = None if options.replay else options.duration_s
        task = bar.add_task("replaying" if options.replay else "simulating", total=total, stats="")

        def on_progress(p: object) -> None:
            from cdb.runtime.embedded import Progress as P

            assert isinstance(p, P)
            done = (p.sim_ts - (pipeline._first_ts or p.sim_ts)) / 1e9
            bar.update(
                task, completed=done if total else p.trades,
                stats=f"{p.trades:,} trades  {p.signals:,} signals  {p.orders:,} orders  "
                f"{p.fills:,} fills",
            )

        summary = asyncio.run(pipeline.run(on_progress if show else None))
    summary = msgspec.structs.replace(summary, db_url=redact_url(summary.db_url))
    if report is not None:
        _write_report(url, [summary.run_id], report)
    if json_out:
        sys.stdout.write(msgspec.json.encode(summary).decode() + "\n")
        return
    _print_summary(summary)
    if report is not None:
        err.print(f"report written to {report}", markup=False, highlight=False)


def _pipeline(settings: Any, options: Any) -> Any:
    from cdb.errors import InputError
    from cdb.runtime.embedded import EmbeddedPipeline

    try:
        return EmbeddedPipeline(settings, options)
    except InputError as exc:
        # The reader speaks of its API argument; on the command line it is a flag.
        raise InputError(str(exc).replace("pass symbol= explicitly",
                                          "pass --symbol SYMBOL (e.g. --symbol BTCUSDT)")
                         ) from None


def _iso(ts_ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).isoformat(timespec="seconds")


def _write_report(url: str, run_ids: list[str], out: Path) -> None:
    from cdb.report.build import write_report

    asyncio.run(write_report(url, run_ids, out))


@app.command()
def runs(
    db: Annotated[str, typer.Option(help="Database URL or SQLite file.")] = DEFAULT_DB,
    json_out: Annotated[bool, typer.Option("--json", help="Print the runs as JSON lines.")] = False,
) -> None:
    """List the runs in the database, oldest first."""
    from cdb.storage.store import Store

    url = _sqlite_url(db)

    async def _runs() -> list[Any]:
        async with Store.open_migrated(url) as store:
            return await store.runs()

    found = asyncio.run(_runs())
    if json_out:
        for run in found:
            sys.stdout.write(msgspec.json.encode(_run_row(run)).decode() + "\n")
        return
    table = Table(title=Text(f"runs in {redact_url(url)}"), title_justify="left")
    columns = ("run id", "kind", "started (UTC)", "legs", "trades", "orders", "fills", "PnL",
               "ESS at end", "input")
    for col in columns:
        table.add_column(col, no_wrap=col in ("run id", "started (UTC)"))
    for run in found:
        row = _run_row(run)
        table.add_row(*(Text(str(row[k])) for k in (
            "run_id", "kind", "started", "legs", "trades", "orders", "fills", "pnl", "ess",
            "input")))
    console.print(table)


def _run_row(run: Any) -> dict[str, object]:
    summary = msgspec.json.decode(run.summary) if run.summary else {}
    inputs = msgspec.json.decode(run.inputs) if run.inputs else []
    names = [Path(str(i.get("path", ""))).name or str(i.get("source", "")) for i in inputs]
    return {
        "run_id": run.run_id, "kind": run.kind, "started": _iso(run.started_ns),
        "legs": run.legs, "finished": bool(run.finished_ns),
        "trades": summary.get("trades", ""), "orders": summary.get("orders", ""),
        "fills": summary.get("fills", ""), "pnl": summary.get("pnl", ""),
        "ess": summary.get("ess", {}).get("state", "running" if not run.finished_ns else ""),
        "input": ", ".join(names),
    }


@app.command()
def report(
    run_ids: Annotated[list[str], typer.Argument(
        help="Run id (or a unique prefix); two ids compare the runs side by side.")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="HTML file to write (default: reports/RUN_ID.html).")] = None,
    db: Annotated[str, typer.Option(help="Database URL or SQLite file.")] = DEFAULT_DB,
) -> None:
    """Write a self-contained HTML report of a run (or compare two): equity, drawdown,
    prices with orders, fills and ESS trips, per-symbol results, rejections, settings."""
    if not 1 <= len(run_ids) <= 2:
        raise ConfigError(["RUN_ID: give one run id, or two to compare them"])
    target = out or Path("reports") / f"{'-vs-'.join(run_ids)}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_report(_sqlite_url(db), run_ids, target)
    err.print(f"report written to {target}", markup=False, highlight=False)
    console.print(str(target), markup=False, highlight=False)


def _print_summary(s: object) -> None:
    from cdb.runtime.embedded import RunSummary

    assert isinstance(s, RunSummary)
    # Cells are Text: symbols, reasons and CSV cells from a replay file are not markup.
    table = Table(title="cdb run", show_header=False, title_justify="left")
    span = (s.last_ts - s.first_ts) / 1e9 if s.last_ts else 0.0
    rate = s.trades / s.wall_seconds if s.wall_seconds else 0.0

    def row(name: str, value: str) -> None:
        table.add_row(name, Text(value))

    resumed = " (resumed: continues its earlier state)" if s.resumed else ""
    row("run", f"{s.run_id}  {s.kind}{resumed}")
    row("trades", f"{s.trades:,}  ({span / 3600:.2f} h of market in "
        f"{s.wall_seconds:.1f} s, {rate:,.0f} trades/s)")
    if s.malformed_rows:
        errors = "; ".join(s.first_errors)
        row("malformed rows", f"{s.malformed_rows:,} skipped; {errors}")
    row("signals", f"{s.signals:,}")
    row("orders", f"{s.orders:,}")
    row("fills", f"{s.fills:,}")
    rejections = ", ".join(f"{k} {v:,}" for k, v in s.rejections.items()) or "none"
    row("rejections", f"{sum(s.rejections.values()):,}  ({rejections})")
    row("PnL", f"{s.pnl}  (fees {s.fees})")
    row("equity", f"{s.equity}  (from {s.initial_equity})")
    row("max drawdown", f"{s.max_drawdown_pct} %")
    row("open positions",
        ", ".join(f"{k} {v}" for k, v in s.open_positions.items()) or "none")
    ess = str(s.ess.state)
    if s.ess.halted:
        ess += f" since {_iso(s.ess.since_ns)} ({s.ess.reason}: {s.ess.detail})"
    if s.ess_start.halted:
        ess += f"; started HALTED ({s.ess_start.reason}, {_iso(s.ess_start.since_ns)})"
    row("ESS at end", ess)
    row("ESS trips", f"{len(s.ess_trips)}" + (f", {s.ess_blocked:,} signals blocked while "
                                               "HALTED" if s.ess_blocked else ""))
    for trip in s.ess_trips:
        row("  trip", f"{_iso(trip.since_ns)}  {trip.reason}: {trip.detail}")
    row("database", f"{redact_url(s.db_url)}  "
        f"({', '.join(f'{k} {v}' for k, v in s.rows.items())})")
    console.print(table)


@audit_app.command("trace")
def trace(
    event_id: Annotated[str, typer.Argument(help="Id of a trade, signal, order or fill.")],
    db: Annotated[str, typer.Option(help="Database URL or SQLite file.")] = DEFAULT_DB,
    run: Annotated[str | None, typer.Option(
        "--run", help="The run whose rows to follow (default: the newest run holding it).")
    ] = None,
) -> None:
    """Show the whole chain of an event: trade, signal, risk decision, order, fills."""
    from cdb.storage.store import Store, TraceStep

    async def _trace() -> list[TraceStep]:
        async with Store(_sqlite_url(db), run_id=run) as store:
            return list(await store.trace(event_id))

    steps = asyncio.run(_trace())
    if not steps:
        where = f" of run {run}" if run else ""
        raise CdbError(f"no event {event_id!r} in the rows{where} of {redact_url(db)}")
    table = Table(title=Text(f"chain of {event_id}" + (f" in run {run}" if run else "")),
                  title_justify="left")
    for col in ("step", "id", "event time (UTC)", "+latency", "what"):
        table.add_column(col)
    previous = None
    from datetime import UTC, datetime

    for step in steps:
        ts = step.ts
        when = datetime.fromtimestamp(ts / 1e9, tz=UTC).isoformat(timespec="microseconds")
        latency = "" if previous is None else f"{(ts - previous) / 1e6:.3f} ms"
        previous = ts
        table.add_row(Text(step.kind), Text(step.id), when, latency, Text(step.summary))
    console.print(table)


@app.command()
def service(
    name: Annotated[str, typer.Argument(help="ws, signal, risk, execution or db_writer.")],
) -> None:
    """Run one service in this process, configured by the environment (distributed mode)."""
    from cdb.bus.keys import SERVICES
    from cdb.runtime.distributed import run_service

    if name not in SERVICES:
        raise CdbError(f"unknown service {name!r}; one of {', '.join(SERVICES)}")
    settings = load_settings()
    problems = settings.distributed_problems(name)
    if problems:
        raise ConfigError(problems)
    cdb_logging.configure(settings.log_level)
    run_loop(run_service(name, settings))


@app.command()
def up(
    redis_url: Annotated[
        str | None, typer.Option("--redis", help="redis://[:password@]host:port/db")
    ] = None,
    postgres_url: Annotated[
        str | None, typer.Option("--postgres", help="postgresql://user[:password]@host:port/db")
    ] = None,
    log_dir: Annotated[Path, typer.Option(help="Where each service logs.")] = Path(
        "cdb-data/logs"
    ),
) -> None:
    """Start all five services as local processes; restart crashed ones; Ctrl-C stops."""
    from cdb.runtime.up import run_up

    if redis_url is not None:
        check_url("--redis", redis_url, ("redis", "rediss"))
    if postgres_url is not None:
        check_url("--postgres", postgres_url, ("postgresql", "postgres", "postgresql+asyncpg"))

    asyncio.run(run_up(redis_url, postgres_url, log_dir, console=err))


def _db_target(db: str | None) -> tuple[str, str | None]:
    """The database URL and schema: ``--db`` or the POSTGRES_* settings."""
    settings = load_settings()
    if db:
        return _sqlite_url(db), settings.postgres_schema()
    if not settings.postgres_host and settings.database_url is None:
        raise ConfigError(["POSTGRES_HOST: set it (or DATABASE_URL, or pass --db URL)"])
    return settings.postgres_url(), settings.postgres_schema()


DbOption = Annotated[
    str | None, typer.Option("--db", help="Database URL (default: from POSTGRES_* settings).")
]


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Apply the migrations up to the newest (idempotent)."""
    from cdb.storage.store import migrate

    url, schema = _db_target(db)
    _ensure_sqlite_dir(url)
    asyncio.run(migrate(url, schema=schema))
    err.print(f"database at head{f' (schema {schema})' if schema else ''}", markup=False)


@db_app.command("backup")
def db_backup(file: Annotated[Path, typer.Argument(help="Dump file to write.")],
              db: DbOption = None) -> None:
    """Dump the database (this namespace's schema) with pg_dump -Fc."""
    from cdb.storage.backup import backup

    url, schema = _db_target(db)
    asyncio.run(backup(url, file, schema))
    err.print(f"backup written to {file}", markup=False, highlight=False)


@db_app.command("restore")
def db_restore(file: Annotated[Path, typer.Argument(help="Dump made by cdb db backup.")],
               db: DbOption = None) -> None:
    """Restore a dump into an empty database with pg_restore."""
    from cdb.storage.backup import restore

    url, _ = _db_target(db)
    asyncio.run(restore(url, file))
    err.print(f"restored {file}", markup=False, highlight=False)


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


def main() -> None:
    """Entry point: run the app; expected errors exit 2 with one clear message."""
    from typer._click.exceptions import ClickException

    try:
        code = app(standalone_mode=False)
    except CdbError as exc:
        # soft_wrap: one line whatever the terminal's width (scripts grep it).
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ClickException as exc:  # usage errors: a missing argument, an unknown option
        exc.show()
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)
