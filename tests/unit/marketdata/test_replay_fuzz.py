"""Fuzz of the replay parser: any file gives trades and counted rows, or one InputError.

Never another exception, never an overflow: every trade that comes out fits the event
model (64-bit ids, prices and quantities), and event time never goes backwards.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdb.errors import CdbError
from cdb.marketdata.replay import ReplaySource

_MAX = 2**63 - 1
_GOOD = "1,42283.58000000,0.00122000,51.58596760,1704067200014,False,True"

_cells = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.decimals(allow_nan=True, allow_infinity=True, places=None).map(str),
    st.text(alphabet="0123456789.-+eE,[]/ TrueFalse", max_size=30),
    st.sampled_from(["True", "False", "true", "", "9" * 400, "1e999", "nan"]),
)
_rows = st.lists(_cells, min_size=1, max_size=9).map(",".join)
_csv = st.one_of(
    st.lists(_rows, max_size=30).map(lambda rows: "\n".join([_GOOD, *rows]) + "\n"),
    st.text(max_size=300),
).map(lambda text: text.encode("utf-8", "surrogatepass"))
_raw = st.one_of(_csv, st.binary(max_size=400))


def _read(path: Path) -> None:
    try:
        source = ReplaySource(path, symbol="BTCUSDT", batch_size=7)
        trades = [t for batch in source.batches() for t in batch]
    except CdbError:
        return
    stats = source.stats
    assert stats.decoded == len(trades)
    assert stats.decoded + stats.malformed <= stats.rows + stats.backwards
    for t in trades:
        assert 0 <= t.trade_id <= _MAX
        assert 0 < t.price_e8 <= _MAX
        assert 0 < t.qty_e8 <= _MAX
    assert [t.ts for t in trades] == sorted(t.ts for t in trades)


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(data=_raw)
def test_any_csv_gives_trades_or_an_input_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "BTCUSDT-trades-2024-01-01.csv"
        path.write_bytes(data)
        _read(path)


@settings(max_examples=40, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(data=_raw, members=st.integers(min_value=0, max_value=2),
       method=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
       damage=st.integers(min_value=0, max_value=600))
def test_any_zip_gives_trades_or_an_input_error(data: bytes, members: int, method: int,
                                                damage: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "BTCUSDT-trades-2024-01-01.zip"
        with zipfile.ZipFile(path, "w", compression=method) as archive:
            for n in range(members):
                archive.writestr(f"m{n}.csv", data)
        raw = bytearray(path.read_bytes())
        if damage and damage < len(raw):
            raw[damage] ^= 0xFF
        path.write_bytes(bytes(raw))
        _read(path)
