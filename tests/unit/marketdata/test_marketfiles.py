"""Files written by cdb.testing.marketfiles read back as the trades they were made from."""

from __future__ import annotations

import zipfile
from pathlib import Path

import msgspec
import pytest

from cdb.events import Trade
from cdb.marketdata.replay import ReplaySource
from cdb.marketdata.synthetic import SyntheticSource
from cdb.testing.marketfiles import HEADERS, Layout, TimeUnit, write_sample_csv, write_trades_csv


def synthetic(seconds: int = 60) -> list[Trade]:
    source = SyntheticSource(seed=9, symbols=("BTCUSDT",), duration_s=seconds, venue="binance")
    return [t for batch in source.batches() for t in batch]


@pytest.mark.parametrize("layout", ["trades", "aggTrades"])
@pytest.mark.parametrize(
    ("header", "zipped", "unit"),
    [
        (False, False, "ms"),
        (True, False, "us"),
        (False, True, "us"),
        (True, True, "ms"),
    ],
)
def test_round_trip(
    tmp_path: Path, layout: Layout, header: bool, zipped: bool, unit: TimeUnit
) -> None:
    trades = synthetic()
    suffix = "zip" if zipped else "csv"
    path = tmp_path / f"BTCUSDT-{layout}-2024-01-01.{suffix}"
    assert write_trades_csv(
        path, trades, layout=layout, header=header, zip=zipped, time_unit=unit
    ) == len(trades)
    back = [t for batch in ReplaySource(path).batches() for t in batch]
    step = 1_000_000 if unit == "ms" else 1_000
    expected = [msgspec.structs.replace(t, ts=t.ts // step * step) for t in trades]
    assert back == expected


def test_binance_shape_of_the_written_rows(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-trades-2024-01-01.zip"
    write_trades_csv(path, synthetic(5)[:2], header=True, zip=True)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["BTCUSDT-trades-2024-01-01.csv"]
        lines = archive.read("BTCUSDT-trades-2024-01-01.csv").decode().splitlines()
    assert lines[0] == HEADERS["trades"]
    cells = lines[1].split(",")
    assert len(cells) == 7
    assert all(len(cells[i].split(".")[1]) == 8 for i in (1, 2, 3))
    assert cells[5] in ("True", "False")
    assert cells[6] == "True"
    assert len(cells[4]) == 13  # epoch ms


def test_sample_file_has_the_rows_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "ETHUSDT-aggTrades-2024-01-01.csv"
    assert write_sample_csv(path, rows=1234, symbol="ETHUSDT", layout="aggTrades") == 1234
    assert len(path.read_text().splitlines()) == 1234
    back = [t for batch in ReplaySource(path).batches() for t in batch]
    assert len(back) == 1234
    assert {t.symbol for t in back} == {"ETHUSDT"}
