"""`cdb run`: the embedded pipeline end to end, checked against its database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from cdb.marketdata.synthetic import SyntheticSource
from cdb.testing.marketfiles import write_trades_csv
from tests.e2e.conftest import cdb

pytestmark = pytest.mark.timeout(300)


def run_json(tmp: Path, *args: str, db: str = "run.db") -> dict[str, object]:
    result = cdb("run", "--json", "--db", str(tmp / db), *args, cwd=tmp)
    assert result.returncode == 0, result.stderr
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


def check_database_agrees(db: Path, summary: dict[str, object]) -> None:
    con = sqlite3.connect(db)
    try:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        assert q("select count(*) from signals")[0][0] == summary["signals"]
        assert q("select count(*) from orders")[0][0] == summary["orders"]
        assert q("select count(*) from fills")[0][0] == summary["fills"]
        rejected = sum(summary["rejections"].values())  # type: ignore[union-attr]
        assert q("select count(*) from risk_decisions")[0][0] == rejected
        # every fill has its order, every order its signal, every signal a decision
        assert q("select count(*) from fills f left join orders o on o.id = f.order_id "
                 "where o.id is null")[0][0] == 0
        assert q("select count(*) from orders o left join signals s on s.id = o.causation_id "
                 "where s.id is null")[0][0] == 0
        assert q("select count(*) from signals s where not exists (select 1 from orders o "
                 "where o.causation_id = s.id) and not exists (select 1 from risk_decisions r "
                 "where r.signal_id = s.id)")[0][0] == 0
        # the chain shares the originating trade
        assert q("select count(*) from fills f join orders o on o.id = f.order_id "
                 "where f.correlation_id != o.correlation_id")[0][0] == 0
    finally:
        con.close()


def test_synthetic_run_is_consistent_deterministic_and_traceable(tmp_path: Path) -> None:
    first = run_json(tmp_path, "--seed", "5", "--duration", "3h", db="a.db")
    second = run_json(tmp_path, "--seed", "5", "--duration", "3h", db="b.db")
    assert first["fills"] > 0, "the default market must produce fills"  # type: ignore[operator]
    for key in ("trades", "signals", "orders", "fills", "rejections", "pnl", "equity", "fees",
                "max_drawdown_pct", "open_positions"):
        assert first[key] == second[key], key
    check_database_agrees(tmp_path / "a.db", first)
    a = sqlite3.connect(tmp_path / "a.db")
    b = sqlite3.connect(tmp_path / "b.db")
    cols = "id, order_id, price_e8, qty_e8, fee_e8"
    assert a.execute(f"select {cols} from fills order by id").fetchall() == \
        b.execute(f"select {cols} from fills order by id").fetchall()
    fill_id, trade_id = a.execute("select id, correlation_id from fills limit 1").fetchone()
    a.close()
    b.close()
    for start in (fill_id, trade_id):
        traced = cdb("audit", "trace", start, "--db", str(tmp_path / "a.db"))
        assert traced.returncode == 0, traced.stderr
        for kind in ("trade", "signal", "order", "fill"):
            assert kind in traced.stdout
        assert "ms" in traced.stdout  # latency of each hop


def test_a_different_seed_gives_a_different_market(tmp_path: Path) -> None:
    a = run_json(tmp_path, "--seed", "1", "--duration", "20m", db="a.db")
    b = run_json(tmp_path, "--seed", "2", "--duration", "20m", db="b.db")
    assert a["trades"] != b["trades"]


def test_replay_of_binance_files_with_a_malformed_row(tmp_path: Path) -> None:
    trades = [t for batch in SyntheticSource(seed=9, symbols=["BTCUSDT"], duration_s=3 * 3600,
                                             bursts_per_hour=4).batches() for t in batch]
    path = tmp_path / "BTCUSDT-trades-2024-01-01.csv"
    write_trades_csv(path, trades, layout="trades", header=False)
    with path.open("a") as f:
        f.write("not,a,trade\n")
    summary = run_json(tmp_path, "--replay", str(path))
    assert summary["trades"] == len(trades)
    assert summary["malformed_rows"] == 1
    assert str(len(trades) + 1) in summary["first_errors"][0]  # type: ignore[index]
    check_database_agrees(tmp_path / "run.db", summary)
    again = run_json(tmp_path, "--replay", str(path), db="again.db")
    assert (again["fills"], again["pnl"]) == (summary["fills"], summary["pnl"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replay", "/nonexistent.csv"], "not a readable file"),
        (["--duration", "soon"], "--duration"),
        (["--speed", "-3"], "--speed"),
    ],
)
def test_bad_input_stops_with_one_clear_message_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = cdb("run", "--db", str(tmp_path / "x.db"), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_strategy_and_bad_settings_are_reported_together(tmp_path: Path) -> None:
    result = cdb("run", "--db", str(tmp_path / "x.db"), cwd=tmp_path,
                 env={"SIGNAL_STRATEGY_ID": "nope"})
    assert result.returncode == 2
    assert "unknown strategy 'nope'" in result.stderr
    result = cdb("run", "--db", str(tmp_path / "x.db"), cwd=tmp_path,
                 env={"SIGNAL_THRESHOLD_PCT": "high", "RISK_MAX_OPEN_ORDERS": "0"})
    assert result.returncode == 2
    assert "SIGNAL_THRESHOLD_PCT" in result.stderr
    assert "RISK_MAX_OPEN_ORDERS" in result.stderr
    assert "Traceback" not in result.stderr
