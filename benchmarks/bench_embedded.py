"""Embedded pipeline throughput: a 1M-trade Binance replay through all five services.

Measures, in one run on one machine: (1) the rate at which the file is merely parsed
into Trade events, (2) the rate of the whole pipeline (ws, signal, risk, execution,
db_writer into SQLite) in a fresh process, and its peak RSS. Usage:

    .venv/bin/python benchmarks/bench_embedded.py [--trades 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).parent / ".data"


def make_file(trades: int) -> Path:
    from cdb.marketdata.synthetic import SyntheticSource
    from cdb.testing.marketfiles import write_trades_csv

    path = DATA / f"BTCUSDT-trades-{trades}.csv"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        source = SyntheticSource(seed=1, symbols=["BTCUSDT"], duration_s=trades / 40)
        stream = itertools.islice((t for b in source.batches() for t in b), trades)
        write_trades_csv(path, stream, layout="trades")
    return path


def parse_rate(path: Path) -> tuple[int, float]:
    from cdb.marketdata.replay import ReplaySource

    started = time.perf_counter()
    n = sum(len(b) for b in ReplaySource(path).batches())
    return n, n / (time.perf_counter() - started)


def pipeline(path: str, db: str) -> None:
    """Child process: run the pipeline, print trades, seconds and peak RSS as JSON."""
    from cdb.config import load_settings
    from cdb.runtime.embedded import EmbeddedPipeline, RunOptions

    p = EmbeddedPipeline(load_settings(), RunOptions(db_url=f"sqlite+aiosqlite:///{db}",
                                                     replay=(path,)))
    started = time.perf_counter()
    summary = asyncio.run(p.run())
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"trades": summary.trades, "seconds": seconds, "rss_mb": rss,
                      "fills": summary.fills, "signals": summary.signals}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        pipeline(*args.child)
        return
    path = make_file(args.trades)
    parse = max(parse_rate(path)[1] for _ in range(args.repeat))
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(path), f"{tmp}/bench.db"],
                capture_output=True, text=True, check=True,
            ).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["seconds"])
    rate = best["trades"] / best["seconds"]
    print(f"trades            {best['trades']:,}")
    print(f"parse only        {parse:,.0f} trades/s")
    print(f"whole pipeline    {rate:,.0f} trades/s  ({best['seconds']:.2f} s, best of "
          f"{args.repeat}; signals {best['signals']}, fills {best['fills']})")
    print(f"pipeline / parse  {rate / parse:.2f}")
    print(f"peak RSS          {max(r['rss_mb'] for r in runs):.0f} MB")


if __name__ == "__main__":
    main()
