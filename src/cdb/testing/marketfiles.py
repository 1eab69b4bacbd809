"""Write Binance public-data trade files, for tests and benchmarks of the replay source.

The output matches data.binance.vision spot files: 8-decimal numbers, ``True``/``False``,
an ``is_best_match`` column, no header unless asked, optionally zipped as one CSV. Times
are written in ms (files before 2025) or µs (spot files from 2025), so sub-ms parts of
a trade's ``ts`` do not survive a round trip in ms.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import IO, Final, Literal

from cdb.events import SCALE, Trade
from cdb.marketdata.synthetic import SyntheticSource

Layout = Literal["trades", "aggTrades"]
TimeUnit = Literal["ms", "us"]

HEADERS: Final[dict[Layout, str]] = {
    "trades": "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match",
    "aggTrades": "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
    "is_buyer_maker,is_best_match",
}
_LINES_PER_WRITE: Final = 10_000
_DIVISORS: Final[dict[TimeUnit, int]] = {"ms": 1_000_000, "us": 1_000}
_TRADE_ROW: Final = "%d,%d.%08d,%d.%08d,%d.%08d,%d,%s,True\n"
_AGG_ROW: Final = "%d,%d.%08d,%d.%08d,%d,%d,%d,%s,True\n"
_MAKER: Final = ("False", "True")


def write_trades_csv(
    path: str | os.PathLike[str],
    trades: Iterable[Trade],
    *,
    layout: Layout = "trades",
    header: bool = False,
    zip: bool = False,
    time_unit: TimeUnit = "ms",
) -> int:
    """Write ``trades`` as a Binance ``trades`` or ``aggTrades`` file; return the row count.

    Args:
        path: the file to write; with ``zip`` it is the archive, holding one CSV named
            like it with a ``.csv`` suffix.
        trades: the trades, written in the order given.
        layout: ``"trades"`` or ``"aggTrades"`` (aggregate id = trade id, one trade each).
        header: write the column names first (Binance spot files have none).
        zip: write a ZIP archive instead of a plain CSV.
        time_unit: ``"ms"`` or ``"us"``.
    """
    target = Path(path)
    rows = 0
    with _open_text_sink(target, zip) as sink:
        if header:
            sink.write((HEADERS[layout] + "\n").encode())
        for block in _blocks(trades, layout, _DIVISORS[time_unit]):
            sink.write(block[0].encode("ascii"))
            rows += block[1]
    return rows


def write_sample_csv(
    path: str | os.PathLike[str],
    *,
    rows: int,
    seed: int = 1,
    symbol: str = "BTCUSDT",
    layout: Layout = "trades",
    header: bool = False,
    zip: bool = False,
    time_unit: TimeUnit = "ms",
    trades_per_s: float = 50.0,
) -> int:
    """Write ``rows`` seeded synthetic trades of one symbol as a Binance file.

    Name the file like Binance does (``BTCUSDT-trades-2024-01-01.csv``) so the replay
    source can tell the symbol and layout from it.
    """
    source = SyntheticSource(
        seed=seed,
        symbols=(symbol,),
        duration_s=rows / trades_per_s * 1.5 + 60,
        trades_per_s=trades_per_s,
        venue="binance",
        batch_size=_LINES_PER_WRITE,
    )
    written = write_trades_csv(
        path,
        _take(source.batches(), rows),
        layout=layout,
        header=header,
        zip=zip,
        time_unit=time_unit,
    )
    if written < rows:
        raise RuntimeError(f"synthetic source gave {written} trades, {rows} asked")
    return written


def _take(batches: Iterator[list[Trade]], rows: int) -> Iterator[Trade]:
    left = rows
    for batch in batches:
        if len(batch) >= left:
            yield from batch[:left]
            return
        left -= len(batch)
        yield from batch


@contextmanager
def _open_text_sink(path: Path, zipped: bool) -> Iterator[IO[bytes]]:
    if not zipped:
        with path.open("wb") as plain:
            yield plain
        return
    # Level 1: the benchmark writes millions of rows; size matters less than time.
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open(path.with_suffix(".csv").name, "w", force_zip64=True) as member,
    ):
        yield member


def _blocks(trades: Iterable[Trade], layout: Layout, divisor: int) -> Iterator[tuple[str, int]]:
    """Text of up to ``_LINES_PER_WRITE`` rows at a time, and how many rows it holds."""
    s = SCALE
    maker = _MAKER
    it = iter(trades)
    # One %-format per row: measurably cheaper than an f-string with format specs.
    while chunk := list(islice(it, _LINES_PER_WRITE)):
        if layout == "trades":
            # price * qty // SCALE is mul_e8 for positive numbers.
            rows = [
                _TRADE_ROW
                % (
                    t.trade_id,
                    t.price_e8 // s,
                    t.price_e8 % s,
                    t.qty_e8 // s,
                    t.qty_e8 % s,
                    quote // s,
                    quote % s,
                    t.ts // divisor,
                    maker[t.buyer_maker],
                )
                for t in chunk
                for quote in (t.price_e8 * t.qty_e8 // s,)
            ]
        else:
            rows = [
                _AGG_ROW
                % (
                    t.trade_id,
                    t.price_e8 // s,
                    t.price_e8 % s,
                    t.qty_e8 // s,
                    t.qty_e8 % s,
                    t.trade_id,
                    t.trade_id,
                    t.ts // divisor,
                    maker[t.buyer_maker],
                )
                for t in chunk
            ]
        yield "".join(rows), len(rows)
