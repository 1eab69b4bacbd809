"""Runs are sessions: ``cdb run`` as a user runs it on a replay file with a flash crash,
twice into one database, then with ``--resume``; ``cdb runs``; ``cdb report`` opened
in a real headless Chromium."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from cdb.marketdata.shapes import flash_crash
from cdb.marketdata.synthetic import SyntheticSource
from cdb.testing.marketfiles import write_trades_csv
from tests.browser import Browser, browser  # noqa: F401  # the fixture
from tests.e2e.conftest import cdb

# A file-driven run of a few thousand trades; the crash trips the ESS.
ENV = {"SIGNAL_THRESHOLD_PCT": "0.05"}
VOLATILE = {"BTCUSDT": 0.002}


def crash_file(directory: Path, name: str = "BTCUSDT-trades-2025-03-01.csv") -> Path:
    trades = [t for batch in SyntheticSource(
        seed=3, symbols=("BTCUSDT",), duration_s=3600,
        shapes=(flash_crash("BTCUSDT", 1800, 25, 20),), batch_size=1000).batches()
        for t in batch]
    path = directory / name
    write_trades_csv(path, trades)
    return path


def run_json(*args: str, cwd: Path) -> dict[str, object]:
    result = cdb("run", "--json", *args, cwd=cwd, env=ENV)
    assert result.returncode == 0, result.stderr
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


def facts(summary: dict[str, object]) -> dict[str, object]:
    """A summary without what differs between two runs of one input by design."""
    return {k: v for k, v in summary.items() if k not in ("run_id", "wall_seconds")}


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return crash_file(tmp_path_factory.mktemp("replay"))


def test_two_replays_of_one_file_into_one_database_give_identical_summaries(
    tmp_path: Path, crash: Path,
) -> None:
    first = run_json("--replay", str(crash), "--db", "x.db", cwd=tmp_path)
    assert first["ess"]["state"] == "HALTED"  # type: ignore[index]
    second = run_json("--replay", str(crash), "--db", "x.db", cwd=tmp_path)
    assert second["run_id"] != first["run_id"]
    assert facts(second) == facts(first), "the second run did not inherit the first's HALT"
    assert second["ess_start"]["state"] == "ACTIVE"  # type: ignore[index]
    con = sqlite3.connect(tmp_path / "x.db")
    try:
        per_run = dict(con.execute("select run_id, count(*) from fills group by run_id"))
    finally:
        con.close()
    assert per_run == {first["run_id"]: first["fills"], second["run_id"]: second["fills"]}

    listed = cdb("runs", "--db", "x.db", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    runs = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["run_id"] for r in runs] == [first["run_id"], second["run_id"]]
    assert {r["ess"] for r in runs} == {"HALTED"}


def test_the_table_summary_tells_the_trip(tmp_path: Path, crash: Path) -> None:
    result = cdb("run", "--replay", str(crash), "--db", "x.db", cwd=tmp_path, env=ENV)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "ESS at end" in out
    assert "HALTED since" in out
    assert "flash_crash" in out
    assert "ESS trips" in out
    assert "trip " in out


def test_resume_after_a_trip_starts_halted_with_the_runs_positions(
    tmp_path: Path, crash: Path,
) -> None:
    first = run_json("--replay", str(crash), "--db", "x.db", cwd=tmp_path)
    assert first["ess"]["state"] == "HALTED"  # type: ignore[index]
    later = crash_file(tmp_path, "BTCUSDT-trades-2025-03-02.csv")
    resumed = run_json("--replay", str(later), "--db", "x.db", "--resume", cwd=tmp_path)
    assert resumed["resumed"] is True
    assert resumed["run_id"] == first["run_id"], "a resumed run continues its session"
    assert resumed["ess_start"]["state"] == "HALTED"  # type: ignore[index]
    assert resumed["ess"]["state"] == "HALTED"  # type: ignore[index]
    assert resumed["orders"] == 0 or resumed["open_positions"]
    if first["open_positions"]:
        assert set(resumed["open_positions"]) >= set(first["open_positions"])  # type: ignore[arg-type]


def test_replay_file_without_a_symbol_in_its_name_needs_the_flag(
    tmp_path: Path, crash: Path,
) -> None:
    plain = tmp_path / "export.csv"
    plain.write_bytes(crash.read_bytes())
    refused = cdb("run", "--replay", str(plain), "--db", "x.db", cwd=tmp_path)
    assert refused.returncode == 2
    assert "--symbol" in refused.stderr
    ran = run_json("--replay", str(plain), "--symbol", "btcusdt", "--db", "x.db", cwd=tmp_path)
    assert ran["trades"] > 0  # type: ignore[operator]


def test_audit_trace_follows_a_runs_rows(tmp_path: Path, crash: Path) -> None:
    first = run_json("--replay", str(crash), "--db", "x.db", cwd=tmp_path)
    run_json("--replay", str(crash), "--db", "x.db", cwd=tmp_path)
    con = sqlite3.connect(tmp_path / "x.db")
    try:
        (order_id,) = con.execute("select id from orders where run_id = ? limit 1",
                                  (first["run_id"],)).fetchone()
    finally:
        con.close()
    traced = cdb("audit", "trace", order_id, "--db", "x.db", "--run", str(first["run_id"]),
                 cwd=tmp_path)
    assert traced.returncode == 0, traced.stderr
    assert f"in run {first['run_id']}" in traced.stdout
    assert traced.stdout.count("order ") >= 1


def test_the_report_renders_in_a_real_browser_with_every_fill(
    tmp_path: Path, crash: Path, browser: Browser,  # noqa: F811
) -> None:
    summary = run_json("--replay", str(crash), "--db", "x.db", "--report", "r.html",
                       cwd=tmp_path)
    report = tmp_path / "r.html"
    assert report.is_file()
    text = report.read_text()
    assert "<script src" not in text, "self-contained: nothing loaded from elsewhere"
    assert "uPlot" in text

    browser.open(report)
    browser.wait_for(lambda: browser.js("return window.cdbReport && window.cdbReport.ready"))
    assert browser.console_errors() == []
    canvases = browser.js("return document.querySelectorAll('.chart canvas').length")
    assert canvases >= 3, "equity, drawdown and one price chart drawn"
    drawn = browser.js("return window.cdbReport.fillPoints")
    assert drawn == summary["fills"], "every fill of the run is marked on the price"
    assert browser.js("return window.cdbReport.tripPoints") == len(summary["ess_trips"])  # type: ignore[arg-type]
    shot = browser.screenshot("run-report")
    assert shot.stat().st_size > 10_000

    # Two runs side by side.
    second = run_json("--replay", str(crash), "--db", "x.db", cwd=tmp_path)
    compared = cdb("report", str(summary["run_id"]), str(second["run_id"]), "--db", "x.db",
                   "-o", "cmp.html", cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    browser.open(tmp_path / "cmp.html")
    browser.wait_for(lambda: browser.js("return window.cdbReport && window.cdbReport.ready"))
    assert browser.console_errors() == []
    assert browser.js("return document.querySelectorAll('section.run').length") == 2
    assert browser.js("return document.querySelectorAll('#compare-equity canvas').length") == 1
    browser.screenshot("run-report-compare")
