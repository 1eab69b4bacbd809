"""The console's newer parts without servers: restarts on the overview, the book's
equity curve (computed from fills, drawn by the vendored uPlot with no inline script),
the runs page of an embedded database, and each chaos run's timeline and checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest
from tests.unit.console.test_console_app import FakeWatcher, client

from cdb.console.chaos import find_runs
from cdb.console.records import EquityCurve, Records, run_row
from cdb.console.views import EquityView, InstanceView
from cdb.events import SCALE, Fill, Side
from cdb.runtime.discovery import InstanceRecord
from cdb.runtime.supervisor import RESTARTS_ENV
from cdb.storage.runs import RunRecord
from cdb.storage.store import Store, migrate

S = 1_000_000_000


def test_an_old_discovery_record_without_restarts_still_decodes() -> None:
    old = b'{"service":"ws","instance":"ws-1","address":"http://x","version":"1",' \
          b'"started":"2027-01-01T00:00:00+00:00","started_ns":1}'
    assert msgspec.json.decode(old, type=InstanceRecord).restarts == 0
    assert RESTARTS_ENV == "CDB_RESTARTS"


async def test_the_overview_shows_restarts_per_instance() -> None:
    watcher = FakeWatcher()
    watcher.snapshot = msgspec.structs.replace(watcher.snapshot, instances=(
        InstanceView(service="risk", instance="risk-1", address="http://y", state="live",
                     health="healthy", restarts=3),))
    page = await client(watcher).get("/")
    assert "<th>restarts</th>" in page.text
    assert '<td class="restarts">3</td>' in page.text


def test_equity_follows_cash_and_positions_marked_at_the_last_fill() -> None:
    curve = EquityCurve(1000 * SCALE)
    curve.add(1 * S, "f1", "BTC", "BUY", 2 * SCALE, 100 * SCALE, 1 * SCALE)  # cash 799
    curve.add(2 * S, "f2", "BTC", "SELL", 1 * SCALE, 90 * SCALE, 0)  # cash 889, 1 @ 90
    curve.add(3 * S, "f3", "BTC", "SELL", 1 * SCALE, 120 * SCALE, 0)  # flat: cash 1009
    view = curve.series()
    assert view.x == [1.0, 2.0, 3.0]
    assert view.equity == [999.0, 979.0, 1009.0]
    assert view.drawdown_pct[0] == 0.0
    assert view.drawdown_pct[1] == pytest.approx((979 - 999) / 999 * 100, abs=1e-3)
    assert view.drawdown_pct[2] == 0.0
    assert curve.cursor == (3 * S, "f3")


def fill(n: int, side: Side, price: int) -> Fill:
    return Fill(id=f"fill-{n}", ts=n * S, correlation_id="c", causation_id="o",
                source="test", order_id=f"o-{n}", client_order_id=f"c-{n}", venue="paper",
                symbol="BTCUSDT", side=side, qty_e8=SCALE, price_e8=price * SCALE, fee_e8=0,
                venue_fill_id=f"v-{n}", order_status="FILLED", cum_qty_e8=SCALE)


async def test_the_curve_reads_only_the_fills_after_its_cursor(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'run.db'}"
    await migrate(url)
    async with Store(url, run_id="r1") as store:
        await store.write([fill(1, "BUY", 100), fill(2, "SELL", 110)])
    async with Records(url) as records:
        curve = await records.equity(EquityCurve(1000 * SCALE))
        assert curve.series().equity == [1000.0, 1010.0]
        async with Store(url, run_id="r1") as store:
            await store.write([fill(3, "BUY", 90)])
        await records.equity(curve)
        assert curve.series().equity == [1000.0, 1010.0, 1010.0]
        assert curve.cursor == (3 * S, "fill-3")


async def test_the_book_draws_equity_with_vendored_uplot_and_no_inline_script() -> None:
    watcher = FakeWatcher()

    async def equity(max_age_s: float = 2.0) -> tuple[EquityView, str]:
        return EquityView(x=[1.0, 2.0], equity=[10.0, 9.0], drawdown_pct=[0.0, -10.0],
                          source="recorded fills"), ""

    watcher.equity = equity  # type: ignore[method-assign]
    web = client(watcher)
    page = await web.get("/book")
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert all('src="' in attrs and body.strip() == "" for attrs, body in scripts)
    assert '/vendor/uplot/uPlot.iife.min.js' in page.text
    assert 'data-src="/data/equity"' in page.text
    assert (await web.get("/static/book.js")).status_code == 200
    assert (await web.get("/vendor/uplot/uPlot.iife.min.js")).status_code == 200
    data = (await web.get("/data/equity")).json()
    assert data["equity"] == [10.0, 9.0]
    assert data["drawdown_pct"] == [0.0, -10.0]


def test_a_run_row_has_the_summary_counts() -> None:
    row = run_row(RunRecord(run_id="20270101-000000-abcd", kind="synthetic", started_ns=S,
                            finished_ns=2 * S, inputs='[{"path": "/data/btc.csv"}]',
                            summary=json.dumps({"trades": 10, "orders": 2, "fills": 2,
                                                "pnl": "1.5", "ess": {"state": "ACTIVE"}})))
    assert (row.trades, row.orders, row.fills, row.pnl, row.ess) == ("10", "2", "2", "1.5",
                                                                     "ACTIVE")
    assert row.inputs == "btc.csv"
    assert run_row(RunRecord(run_id="x", kind="live", started_ns=S)).finished == "running"


def test_a_chaos_run_has_its_timeline_and_invariants(tmp_path: Path) -> None:
    run = tmp_path / "kill-risk" / "r1"
    run.mkdir(parents=True)
    (run / "journal.json").write_text(json.dumps({
        "experiment": {"title": "Kill risk"}, "status": "completed",
        "cdb": {"verdict": "passed", "assertions": [
            {"category": "invariant", "name": "no_duplicate_orders", "status": "pass",
             "detail": "0 duplicates in 12 orders"}],
            "activities": [
                {"key": "undo", "name": "restart risk", "phase": "undo", "kind": "action",
                 "type": "process", "t_start": 8.0, "t_end": 9.5, "status": "succeeded"},
                {"key": "kill", "name": "kill risk", "phase": "timeline", "kind": "action",
                 "type": "process", "t_start": 2.0, "t_end": 2.1, "status": "succeeded",
                 "effect": {"took_effect": True, "evidence": "pid 42 gone"}}]}}))
    [found] = find_runs(tmp_path)
    assert [(s.t_start, s.what, s.evidence) for s in found.timeline] == [
        (2.0, "kill risk (process)", "pid 42 gone"), (8.0, "restart risk (process)", "")]
    assert found.checks[0].detail == "0 duplicates in 12 orders"


async def test_the_chaos_page_shows_the_timeline(tmp_path: Path) -> None:
    test_a_chaos_run_has_its_timeline_and_invariants(tmp_path)
    page = await client(FakeWatcher(), reports=tmp_path).get("/chaos")
    assert "kill risk (process)" in page.text
    assert "pid 42 gone" in page.text
    assert "no_duplicate_orders" in page.text
