"""cdb against NautilusTrader on the same machine, the same 1M BTCUSDT trades, one run.

Three contenders, each in a fresh process, in ``--repeat`` rounds (one run of each per
round, so all see much the same load from other jobs on the host), best of the rounds:

- **Nautilus count-only**: its ``BacktestEngine`` (simulated Binance spot venue, cash
  account) with a strategy that subscribes to trade ticks and only counts them;
- **Nautilus EMA-cross**: the same engine with its example ``EMACross`` strategy
  (10/20 EMAs on 100-tick bars aggregated internally from the trades, 0.01 BTC
  market orders);
- **cdb**: ``cdb run --replay`` of the Binance zip through all five services (ws with
  parsing, signal, risk with its ESS guards, execution on the paper venue, db_writer into
  SQLite), as ``EmbeddedPipeline`` does it.

Nautilus gets its ticks built in memory before the clock starts (no parsing: its own
CSV loading is not measured); only ``engine.run()`` is timed. cdb is timed from the zip
to the last commit. Both wall and CPU seconds (all threads of the process) are kept:
on a shared host the CPU figure moves less. Host CPU pressure (``/proc/pressure/cpu``)
is recorded before and after.

NautilusTrader lives in its own virtual environment, never a project dependency:
``benchmarks/.venv-nautilus`` (git-ignored), created on first use with the latest
``nautilus_trader`` from the package index (``--nautilus-python`` to use another).
Usage:

    .venv/bin/python benchmarks/bench_vs_nautilus.py [--trades 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).parent
DATA = HERE / ".data"
NAUTILUS_VENV = HERE / ".venv-nautilus"


# --- NautilusTrader side (runs under the Nautilus venv's python; stdlib imports above) ---

def nautilus_child(mode: str, csv_path: str, repeat: int) -> None:
    """Build the ticks once, then run the engine ``repeat`` times; one JSON line each."""
    from decimal import Decimal

    import nautilus_trader
    from nautilus_trader.backtest.config import BacktestEngineConfig
    from nautilus_trader.backtest.engine import BacktestEngine
    from nautilus_trader.config import LoggingConfig, StrategyConfig
    from nautilus_trader.examples.strategies.ema_cross import EMACross, EMACrossConfig
    from nautilus_trader.model.currencies import BTC, USDT
    from nautilus_trader.model.data import BarType, TradeTick
    from nautilus_trader.model.enums import AccountType, AggressorSide, OmsType
    from nautilus_trader.model.identifiers import TradeId, Venue
    from nautilus_trader.model.objects import Money, Price, Quantity
    from nautilus_trader.test_kit.providers import TestInstrumentProvider
    from nautilus_trader.trading.strategy import Strategy

    class CountConfig(StrategyConfig, frozen=True):
        instrument_id: object

    class Count(Strategy):
        """Subscribes to the trades and counts them: the engine's own cost per tick."""

        def __init__(self, config: CountConfig) -> None:
            super().__init__(config)
            self.count = 0

        def on_start(self) -> None:
            self.subscribe_trade_ticks(self.config.instrument_id)

        def on_trade_tick(self, tick: TradeTick) -> None:
            self.count += 1

    instrument = TestInstrumentProvider.btcusdt_binance()
    iid, pp, sp = instrument.id, instrument.price_precision, instrument.size_precision
    buyer, seller = AggressorSide.BUYER, AggressorSide.SELLER
    ticks = []
    with open(csv_path, newline="") as f:
        for row in csv.reader(f):
            ts = int(row[4]) * 1_000_000
            ticks.append(TradeTick(
                iid, Price(float(row[1]), pp), Quantity(max(float(row[2]), 10.0**-sp), sp),
                seller if row[5] == "True" else buyer, TradeId(row[0]), ts, ts,
            ))
    engine = BacktestEngine(config=BacktestEngineConfig(
        logging=LoggingConfig(log_level="ERROR", bypass_logging=True),
    ))
    engine.add_venue(
        venue=Venue("BINANCE"), oms_type=OmsType.NETTING, account_type=AccountType.CASH,
        base_currency=None,
        starting_balances=[Money(100_000_000, USDT), Money(1_000, BTC)],
    )
    engine.add_instrument(instrument)
    engine.add_data(ticks)
    if mode == "count":
        strategy: Strategy = Count(CountConfig(instrument_id=iid))
    else:
        strategy = EMACross(EMACrossConfig(
            instrument_id=iid, bar_type=BarType.from_str(f"{iid}-100-TICK-LAST-INTERNAL"),
            trade_size=Decimal("0.010000"), fast_ema_period=10, slow_ema_period=20,
            request_bars=False,
        ))
    engine.add_strategy(strategy)
    for _ in range(repeat):
        seen = strategy.count if isinstance(strategy, Count) else 0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        engine.run()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        orders = len(engine.cache.orders())
        # The engine's reset leaves the strategy's own attributes: count this run only.
        counted = strategy.count - seen if isinstance(strategy, Count) else len(ticks)
        print(json.dumps({"trades": counted, "seconds": wall, "cpu": cpu, "orders": orders,
                          "version": nautilus_trader.__version__}), flush=True)
        engine.reset()
    engine.dispose()


# --- cdb side (project venv) ---

def cdb_child(zip_path: str, db: str) -> None:
    """Run ``cdb run --replay`` of the zip in this process; print one JSON line."""
    import asyncio
    import resource

    from cdb.config import load_settings
    from cdb.runtime.embedded import EmbeddedPipeline, RunOptions

    p = EmbeddedPipeline(load_settings(), RunOptions(db_url=f"sqlite+aiosqlite:///{db}",
                                                     replay=(zip_path,), source="replay"))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    summary = asyncio.run(p.run())
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"trades": summary.trades, "seconds": wall, "cpu": cpu, "rss_mb": rss,
                      "signals": summary.signals, "orders": summary.orders,
                      "fills": summary.fills}), flush=True)


def make_zip(trades: int) -> Path:
    """The Binance-style zip (one CSV member) of the embedded benchmark's trades."""
    sys.path.insert(0, str(HERE))
    from bench_embedded import make_file  # type: ignore[import-not-found]

    path = make_file(trades)
    zipped = path.with_suffix(".zip")
    if not zipped.exists():
        with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(path, path.name)
    return zipped


def nautilus_python(given: str | None) -> str:
    if given:
        return given
    python = NAUTILUS_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {NAUTILUS_VENV} with the latest nautilus_trader ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(NAUTILUS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "nautilus_trader"],
                       check=True)
    return str(python)


def pressure() -> str:
    """The host's CPU pressure (share of time some task waited for a CPU)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return "n/a"
    fields = dict(kv.split("=") for kv in line.split()[1:])
    return f"some avg10={fields['avg10']}% avg60={fields['avg60']}%"


def run_json(cmd: list[str]) -> list[dict[str, float]]:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{cmd[:3]} failed:\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--nautilus-python", help="a python with nautilus_trader installed")
    parser.add_argument("--skip", default="", help="comma list of: count,ema,cdb")
    parser.add_argument("--nautilus-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--cdb-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.nautilus_child:
        mode, path, repeat = args.nautilus_child
        nautilus_child(mode, path, int(repeat))
        return
    if args.cdb_child:
        cdb_child(*args.cdb_child)
        return
    skip = set(filter(None, args.skip.split(",")))
    zipped = make_zip(args.trades)
    csv_path = zipped.with_suffix(".csv")
    py = nautilus_python(args.nautilus_python)
    print(f"{args.trades:,} BTCUSDT trades, best of {args.repeat}; cores "
          f"{os.cpu_count()}; load {os.getloadavg()[0]:.2f}; cpu pressure {pressure()}",
          flush=True)
    # Rounds interleave the contenders, so each sees much the same load from other jobs.
    results: dict[str, list[dict[str, float]]] = {k: [] for k in ("count", "ema", "cdb")
                                                 if k not in skip}
    for n in range(args.repeat):
        for mode in ("count", "ema"):
            if mode in results:
                results[mode] += run_json([py, __file__, "--nautilus-child", mode,
                                           str(csv_path), "1"])
        if "cdb" in results:
            with tempfile.TemporaryDirectory() as tmp:
                results["cdb"] += run_json([sys.executable, __file__, "--cdb-child",
                                            str(zipped), f"{tmp}/bench.db"])
        print(f"round {n + 1}: " + "; ".join(f"{k} {_runs(v[-1:])}" for k, v in results.items())
              + f"  (cpu pressure {pressure()})", flush=True)
    report(results)


def report(results: dict[str, list[dict[str, float]]]) -> None:
    """Best rates of each contender and the ratios of cdb to Nautilus."""
    best = {k: max(r["trades"] / r["seconds"] for r in v) for k, v in results.items()}
    best_cpu = {k: max(r["trades"] / r["cpu"] for r in v) for k, v in results.items()}
    print()
    if "count" in results:
        print(f"nautilus_trader {results['count'][0]['version']}")
    names = {"count": "Nautilus count-only", "ema": "Nautilus EMA-cross",
             "cdb": "cdb run --replay (zip, 5 services, SQLite)"}
    for k, name in names.items():
        if k not in best:
            continue
        extra = ""
        if k == "cdb":
            r = results["cdb"][0]
            extra = (f"; signals {r['signals']}, orders {r['orders']}, fills {r['fills']}, "
                     f"peak RSS {max(x['rss_mb'] for x in results['cdb']):.0f} MB")
        elif k == "ema":
            extra = f"; orders {results['ema'][0]['orders']}"
        print(f"{name:44} {best[k]:>10,.0f} trades/s wall, {best_cpu[k]:>10,.0f} per CPU s"
              f"{extra}")
    for k in ("count", "ema"):
        if "cdb" in best and k in best:
            print(f"cdb / {names[k]:38} {best['cdb'] / best[k]:.2f}x wall, "
                  f"{best_cpu['cdb'] / best_cpu[k]:.2f}x CPU")
    print(f"cpu pressure after: {pressure()}")


def _runs(runs: list[dict[str, float]]) -> str:
    return ", ".join(f"{r['trades'] / r['seconds']:,.0f}/s ({r['seconds']:.2f} s wall, "
                     f"{r['cpu']:.2f} s CPU)" for r in runs)


if __name__ == "__main__":
    main()
