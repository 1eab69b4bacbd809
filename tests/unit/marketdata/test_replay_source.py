"""The replay source reads Binance public-data trade files exactly and survives bad rows."""

from __future__ import annotations

import zipfile
from collections.abc import Generator
from pathlib import Path

import pytest

from cdb.errors import InputError
from cdb.events import Trade, trade_event_id
from cdb.marketdata import replay_rows
from cdb.marketdata.replay import ReplaySource
from cdb.marketdata.synthetic import SyntheticSource
from cdb.testing.marketfiles import Layout, write_sample_csv, write_trades_csv

# Rows as data.binance.vision publishes them.
SPOT_TRADES = """\
3355540464,42283.58000000,0.00122000,51.58596760,1704067200014,False,True
3355540465,42283.59000000,0.00025000,10.57089750,1704067200014,True,True
3355540466,42283.58000000,0.01100000,465.11938000,1704067200021,False,True
"""
SPOT_AGG_TRADES = """\
2873392432,42283.58000000,0.00122000,3355540464,3355540464,1704067200014,False,True
2873392433,42283.59000000,0.00025000,3355540465,3355540466,1704067200014,True,True
"""
FUTURES_TRADES = """\
id,price,qty,quote_qty,time,is_buyer_maker
4425181498,42314.00,0.002,84.62,1704067200041,true
4425181499,42314.10,0.150,6347.11,1704067200052,false
"""
FUTURES_AGG_TRADES = """\
agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker
1927934170,42314.00,0.002,4425181498,4425181498,1704067200041,true
1927934171,42314.10,0.150,4425181499,4425181501,1704067200052,false
"""
SPOT_TRADES_US = """\
4374985113,93576.00000000,0.00053000,49.59528000,1735689600029434,True,True
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def read_all(source: ReplaySource) -> list[Trade]:
    return [t for batch in source.batches() for t in batch]


def trade(tid: int, ts_ms: int, price_e8: int, qty_e8: int, maker: bool) -> Trade:
    i = trade_event_id("binance", "BTCUSDT", tid)
    return Trade(
        id=i,
        ts=ts_ms * 1_000_000,
        correlation_id=i,
        causation_id=i,
        source="ws",
        venue="binance",
        symbol="BTCUSDT",
        trade_id=tid,
        price_e8=price_e8,
        qty_e8=qty_e8,
        buyer_maker=maker,
    )


def test_spot_trades_rows_decode_exactly(tmp_path: Path) -> None:
    path = write(tmp_path, "BTCUSDT-trades-2024-01-01.csv", SPOT_TRADES)
    source = ReplaySource(path)
    trades = read_all(source)
    assert trades == [
        trade(3355540464, 1704067200014, 4228358000000, 122000, False),
        trade(3355540465, 1704067200014, 4228359000000, 25000, True),
        trade(3355540466, 1704067200021, 4228358000000, 1100000, False),
    ]
    assert trades[0].correlation_id is trades[0].id
    assert trades[0].causation_id is trades[0].id
    assert source.files[0].layout == "trades"
    assert not source.files[0].header
    assert (source.stats.rows, source.stats.decoded, source.stats.malformed) == (3, 3, 0)


def test_spot_agg_trades_use_the_aggregate_id(tmp_path: Path) -> None:
    path = write(tmp_path, "BTCUSDT-aggTrades-2024-01-01.csv", SPOT_AGG_TRADES)
    trades = read_all(ReplaySource(path))
    assert trades == [
        trade(2873392432, 1704067200014, 4228358000000, 122000, False),
        trade(2873392433, 1704067200014, 4228359000000, 25000, True),
    ]


@pytest.mark.parametrize(
    ("text", "layout", "first_id"),
    [(FUTURES_TRADES, "trades", 4425181498), (FUTURES_AGG_TRADES, "aggTrades", 1927934170)],
)
def test_futures_files_with_header_and_short_decimals(
    tmp_path: Path, text: str, layout: str, first_id: int
) -> None:
    path = write(tmp_path, "some-export.csv", text)
    source = ReplaySource(path, symbol="BTCUSDT")
    trades = read_all(source)
    assert source.files[0].header
    assert source.files[0].layout == layout
    assert [(t.trade_id, t.price_e8, t.qty_e8, t.buyer_maker) for t in trades] == [
        (first_id, 4231400000000, 200000, True),
        (first_id + 1, 4231410000000, 15000000, False),
    ]
    assert trades[0].ts == 1704067200041 * 1_000_000


def test_headerless_layout_is_detected_from_columns(tmp_path: Path) -> None:
    """Without a Binance file name the columns tell trades (bool 6th) from aggTrades."""
    trades_path = write(tmp_path, "a.csv", SPOT_TRADES)
    agg_path = write(tmp_path, "b.csv", SPOT_AGG_TRADES)
    assert ReplaySource(trades_path, symbol="X").files[0].layout == "trades"
    assert ReplaySource(agg_path, symbol="X").files[0].layout == "aggTrades"


def test_microsecond_times_are_detected_by_magnitude(tmp_path: Path) -> None:
    ms = write(tmp_path, "BTCUSDT-trades-2024-01-01.csv", SPOT_TRADES)
    us = write(tmp_path, "BTCUSDT-trades-2025-01-01.csv", SPOT_TRADES_US)
    assert read_all(ReplaySource(ms))[0].ts == 1_704_067_200_014_000_000
    assert read_all(ReplaySource(us))[0].ts == 1_735_689_600_029_434_000


def test_zip_holding_one_csv_is_read(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-trades-2024-01-01.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("BTCUSDT-trades-2024-01-01.csv", SPOT_TRADES)
    source = ReplaySource(path)
    assert source.files[0].zipped
    assert [t.trade_id for t in read_all(source)] == [3355540464, 3355540465, 3355540466]


def test_malformed_rows_are_counted_recorded_with_line_numbers_and_skipped(
    tmp_path: Path,
) -> None:
    text = (
        "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n"  # line 1
        "1,100.00000000,1.00000000,100.00000000,1704067200000,True,True\n"
        "2,abc,1.00000000,1,1704067200001,True,True\n"  # 3: price
        "3,100.00000000,1.00000000,1,1704067200002,True\n"  # 4: columns
        "\n"  # 5: blank lines are not rows
        "4,100.000000001,1.00000000,1,1704067200003,True,True\n"  # 6: 9 decimals
        "5,100.00000000,0.00000000,0,1704067200004,True,True\n"  # 7: zero qty
        "6,100.00000000,1.00000000,1,1704067200005,maybe,True\n"  # 8: bool
        "-7,100.00000000,1.00000000,1,1704067200006,True,True\n"  # 9: id
        "8,100.00000000,1.00000000,1,1704067200007000,False,True\n"  # 10: µs is fine
        "9,100.00000000,1.00000000,1,soon,False,True\n"  # 11: time
        "10,100.50000000,2.00000000,201,1704067200009,False,True\n"
    )
    path = write(tmp_path, "BTCUSDT-trades-2024-01-01.csv", text)
    source = ReplaySource(path)
    trades = read_all(source)
    assert [t.trade_id for t in trades] == [1, 8, 10]
    assert trades[1].ts == 1_704_067_200_007_000_000
    stats = source.stats
    assert (stats.rows, stats.decoded, stats.malformed) == (10, 3, 7)
    assert [(e.line, e.reason.split()[0]) for e in stats.errors] == [
        (3, "price"),
        (4, "6"),
        (6, "price"),
        (7, "qty"),
        (8, "is_buyer_maker"),
        (9, "trade"),
        (11, "time"),
    ]
    assert all(e.path == str(path) for e in stats.errors)


def test_only_the_first_errors_are_kept_but_all_are_counted(tmp_path: Path) -> None:
    text = "1,x,1.0,1,1704067200000,True,True\n" * 30
    source = ReplaySource(write(tmp_path, "BTCUSDT-trades-2024-01-01.csv", text), max_errors=5)
    assert read_all(source) == []
    assert source.stats.malformed == 30
    assert [e.line for e in source.stats.errors] == [1, 2, 3, 4, 5]


def test_one_bad_row_in_a_large_file_costs_only_that_row(tmp_path: Path) -> None:
    """The fast path falls back around a bad row; every other row decodes identically."""
    clean = tmp_path / "BTCUSDT-trades-2024-01-01.csv"
    write_sample_csv(clean, rows=20_000, seed=5)
    lines = clean.read_text().splitlines(keepends=True)
    lines[12_345] = "12345,bad,row\n"
    dirty = write(tmp_path, "BTCUSDT-trades-2024-01-02.csv", "".join(lines))
    expected = read_all(ReplaySource(clean))
    source = ReplaySource(dirty)
    got = read_all(source)
    assert got == expected[:12_345] + expected[12_346:]
    assert [(e.line, e.reason) for e in source.stats.errors] == [(12_346, "3 columns, expected 7")]


def test_several_files_merge_in_time_order(tmp_path: Path) -> None:
    trades = [
        t
        for batch in SyntheticSource(
            seed=3, symbols=("BTCUSDT", "ETHUSDT"), duration_s=120, venue="binance"
        ).batches()
        for t in batch
    ]
    paths = []
    for symbol in ("BTCUSDT", "ETHUSDT"):
        path = tmp_path / f"{symbol}-trades-2024-01-01.csv"
        write_trades_csv(path, [t for t in trades if t.symbol == symbol], time_unit="us")
        paths.append(path)
    merged = read_all(ReplaySource(paths, batch_size=100))
    assert sorted(merged, key=lambda t: t.ts) == merged
    assert {t.id for t in merged} == {t.id for t in trades}
    assert len(merged) == len(trades)


def test_batches_respect_batch_size_and_replay_resets_stats(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-trades-2024-01-01.csv"
    write_sample_csv(path, rows=2_500)
    source = ReplaySource(path, batch_size=1000)
    sizes = [len(b) for b in source.batches()]
    assert max(sizes) == 1000
    assert sum(sizes) == 2_500
    assert sum(len(b) for b in source.batches()) == 2_500
    assert source.stats.decoded == 2_500


def test_reading_streams_instead_of_loading_the_file(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-trades-2024-01-01.csv"
    write_sample_csv(path, rows=40_000)
    source = ReplaySource(path)
    batches = source.batches()
    assert isinstance(batches, Generator)
    first = next(batches)
    assert len(first) == 1000
    assert source.stats.rows < 20_000  # only the first chunk has been read
    batches.close()


def test_explicit_symbol_and_venue_name_the_trades(tmp_path: Path) -> None:
    path = write(tmp_path, "ETHUSDT-trades-2024-01-01.csv", SPOT_TRADES)
    got = read_all(ReplaySource(path, symbol="ethbtc", venue="binance_um", source="ws-2"))
    assert got[0].symbol == "ethbtc"
    assert got[0].id == "binance_um:ethbtc:3355540464"
    assert got[0].source == "ws-2"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("BTCUSDT-trades-2024-01-01.csv", None, "no such replay file"),
        ("BTCUSDT-trades-2024-01-01.csv", "", "empty file"),
        ("BTCUSDT-trades-2024-01-01.csv", "price,amount\n1,2\n", "unrecognised header"),
        ("BTCUSDT-trades-2024-01-01.csv", SPOT_AGG_TRADES, "8 columns is not a Binance trades"),
        ("export.csv", SPOT_TRADES, "cannot tell the symbol"),
        ("BTCUSDT-trades-2024-01-01.zip", "PK\x03\x04 not really a zip", "damaged ZIP"),
    ],
)
def test_unusable_files_raise_input_error(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        ReplaySource(path)


def test_unrecognisable_columns_raise_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "1,2,3,4,5\n")
    with pytest.raises(InputError, match="unrecognisable layout"):
        ReplaySource(path, symbol="BTCUSDT")


def test_zip_with_several_files_raises_input_error(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-trades-2024-01-01.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", SPOT_TRADES)
        archive.writestr("b.csv", SPOT_TRADES)
    with pytest.raises(InputError, match="exactly one CSV"):
        ReplaySource(path)


def test_directory_and_conflicting_layout_raise_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="directory"):
        ReplaySource(tmp_path)
    path = write(tmp_path, "x.csv", FUTURES_AGG_TRADES)
    with pytest.raises(InputError, match="aggTrades header but layout='trades'"):
        ReplaySource(path, symbol="BTCUSDT", layout="trades")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("BTCUSDT-trades-2024-01-01.csv", SPOT_TRADES),
        ("BTCUSDT-aggTrades-2024-01-01.csv", SPOT_AGG_TRADES),
        ("BTCUSDT-trades-2024-01-02.csv", FUTURES_TRADES),
        ("BTCUSDT-aggTrades-2024-01-02.csv", FUTURES_AGG_TRADES),
        ("BTCUSDT-trades-2025-01-01.csv", SPOT_TRADES_US),
    ],
)
def test_fast_and_line_by_line_paths_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str
) -> None:
    # Fifty copies: each copy after the first goes back in time, and both paths skip
    # the same rows for it.
    path = write(tmp_path, name, text * 50)
    fast_source = ReplaySource(path)
    fast = read_all(fast_source)
    monkeypatch.setattr(replay_rows.FileReader, "_fast_decoder", lambda self, sample: None)
    slow_source = ReplaySource(path)
    slow = read_all(slow_source)
    assert fast == slow
    assert fast_source.stats.backwards == slow_source.stats.backwards
    assert len(fast) + fast_source.stats.malformed == fast_source.stats.rows
    assert [t.ts for t in fast] == sorted(t.ts for t in fast)


@pytest.mark.parametrize(("layout", "header"), [("trades", False), ("aggTrades", True)])
def test_clean_files_never_need_the_line_by_line_parser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: Layout, header: bool
) -> None:
    """A guard on speed: the slow parser is for bad rows only."""
    path = tmp_path / f"BTCUSDT-{layout}-2024-01-01.csv"
    write_sample_csv(path, rows=5_000, layout=layout, header=header)

    def refuse(*args: object) -> list[Trade]:
        raise AssertionError("line-by-line parser used on a clean file")

    monkeypatch.setattr(replay_rows.FileReader, "_slow", refuse)
    assert sum(len(b) for b in ReplaySource(path).batches()) == 5_000


def test_an_endless_line_is_refused_instead_of_buffered(tmp_path: Path) -> None:
    path = write(tmp_path, "BTCUSDT-trades-2024-01-01.csv", SPOT_TRADES + "9" * 3_000_000)
    with pytest.raises(InputError, match="line 4 is over"):
        read_all(ReplaySource(path))
