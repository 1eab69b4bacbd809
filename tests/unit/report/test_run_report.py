"""The report's numbers and its file: per-symbol results from fills, series kept small,
and the HTML self-contained with text from the run escaped."""

from __future__ import annotations

from cdb.events import SCALE, Fill
from cdb.report.build import Chart, RunView, _results
from cdb.report.html import render
from cdb.report.series import SeriesRecorder, downsample


def fill(n: int, side: str, price: float, qty: float, fee: float = 0.0) -> Fill:
    return Fill(id=f"f{n}", ts=n * 1_000_000_000, correlation_id="t", causation_id="o",
                source="test", order_id=f"o{n}", client_order_id=f"c{n}", venue="paper",
                symbol="BTCUSDT", side=side, price_e8=round(price * SCALE),  # type: ignore[arg-type]
                qty_e8=round(qty * SCALE), fee_e8=round(fee * SCALE), venue_fill_id=f"v{n}",
                order_status="FILLED", cum_qty_e8=round(qty * SCALE))


def test_per_symbol_results_count_closing_fills_and_mark_the_rest() -> None:
    fills = [fill(1, "BUY", 100, 2, 0.1), fill(2, "SELL", 110, 1, 0.1),
             fill(3, "SELL", 90, 2, 0.1)]  # closes 1 at a loss, opens a short of 1 at 90
    (r,) = _results(fills, {"BTCUSDT": 80 * SCALE})
    assert r.fills == 3
    assert (r.buys, r.sells) == (1, 2)
    assert r.realized_pnl == 10 - 10
    assert (r.closing_fills, r.winning_closes) == (2, 1)
    assert r.win_rate == 0.5
    assert r.position == -1
    assert r.unrealized_pnl == 10, "short 1 from 90, marked at 80"
    assert round(r.fees, 8) == 0.3
    assert r.max_exposure == 200


def test_downsample_bounds_a_series_and_keeps_its_extremes() -> None:
    points = [(i, 100 * SCALE) for i in range(100_000)]
    points[54_321] = (54_321, 1 * SCALE)  # a flash crash of one sample
    kept = downsample(points, 1000)
    assert len(kept) <= 1100
    assert (54_321, 1 * SCALE) in kept
    assert kept[0] == points[0]
    assert kept[-1] == points[-1]


def test_the_recorder_stays_small_over_a_long_run() -> None:
    rec = SeriesRecorder(limit=500)
    for i in range(50_000):
        rec.add_price("BTCUSDT", i, i)
        rec.add_equity(i, i)
    assert len(rec.series.prices["BTCUSDT"]) <= 4 * 500 + 1
    assert len(rec.result().equity) <= 600


def test_the_html_is_self_contained_and_escapes_the_runs_text() -> None:
    view = RunView(
        run_id="r1", kind="replay", started_ns=1, finished_ns=2, legs=1,
        settings={"note": "</script><b>x</b>"}, inputs=[{"path": "<evil>.csv"}],
        summary={"trades": 1}, equity=[[1.0], [100.0], [0.0]],
        charts=[Chart(symbol="<SYM>", price=[[1.0], [1.0]], buys=[[], []], sells=[[], []],
                      orders=[[], []], trips=[[], []])],
        symbols=[], rejections={"<r>": 1}, trips=[], fills=0, orders=0,
    )
    text = render([view])
    assert "<script src" not in text
    assert "http://" not in text.split("<script>", 1)[0], "no external stylesheet"
    assert "<evil>" not in text
    assert "<SYM>" not in text
    assert "</script><b>" not in text
