"""The ESS end to end in the embedded mode: the real pipeline (five services, in-memory
bus, SQLite, simulated clock) on synthetic markets with shapes, checked against its
database. ``cdb run`` takes no shapes on the command line, so these build the same
``EmbeddedPipeline`` it runs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from cdb.bus.keys import SIGNALS
from cdb.config import Settings, load_settings
from cdb.events import SCALE, Signal, Trade
from cdb.marketdata.shapes import Shape, flash_crash, gap, stale
from cdb.marketdata.synthetic import SyntheticSource
from cdb.risk.ess import EssState, FlashCrashGuard, ResetRefused
from cdb.runtime.embedded import EmbeddedPipeline, RunOptions, RunSummary
from cdb.services.risk import RiskService
from tests.e2e.conftest import cdb

pytestmark = pytest.mark.timeout(300)

S = 1_000_000_000
SEED = 7


def settings(**env: str) -> Settings:
    return load_settings(environ=env)


class Driven(EmbeddedPipeline):
    """The pipeline, with a hook after each market batch (every service on the trading
    path has handled it by then): tests act at exact simulated times."""

    def __init__(self, s: Settings, o: RunOptions,
                 on_batch: Callable[[Driven, list[Trade]], Awaitable[None]] | None = None) -> None:
        super().__init__(s, o)
        self.on_batch = on_batch

    @property
    def risk(self) -> RiskService:
        risk = self.services["risk"]
        assert isinstance(risk, RiskService)
        return risk

    async def _pace(self, batch: list[Trade]) -> None:
        await super()._pace(batch)
        if self.on_batch is not None:
            await self.on_batch(self, batch)


async def run(tmp: Path, s: Settings, *, shapes: tuple[Shape, ...] = (), duration: float = 3600,
              db: str = "run.db", symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
              on_batch: Callable[[Driven, list[Trade]], Awaitable[None]] | None = None,
              resume: bool = False) -> tuple[RunSummary, Driven]:
    options = RunOptions(db_url=f"sqlite+aiosqlite:///{tmp / db}", seed=SEED, symbols=symbols,
                         duration_s=duration, shapes=shapes, resume=resume)
    pipeline = Driven(s, options, on_batch)
    return await pipeline.run(), pipeline


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def first_crash_batch_end(shapes: tuple[Shape, ...], duration: float,
                          symbols: tuple[str, ...]) -> tuple[int, str]:
    """The clock time at which the batch holding the first 15 %-in-60 s drop is
    evaluated (its last trade's time), and that trade's id: computed from the market
    alone, independently of the pipeline."""
    guard = FlashCrashGuard(drop_ppm=150_000, window_ns=60 * S)
    source = SyntheticSource(seed=SEED, symbols=symbols, duration_s=duration, shapes=shapes,
                             source="embedded.ws")
    for batch in source.batches():
        alarm = guard.on_trades(batch)
        if alarm is not None:
            return batch[-1].ts, alarm.cause_id
    raise AssertionError("the market has no flash crash")


async def test_a_flash_crash_trips_within_one_evaluation_and_no_order_follows(
    tmp_path: Path,
) -> None:
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    shapes = (flash_crash("ETHUSDT", 1200, 20, 30),)
    summary, _ = await run(tmp_path, settings(), shapes=shapes, duration=3600)
    expected_ts, crash_trade = first_crash_batch_end(shapes, 3600, symbols)

    assert summary.ess.state == "HALTED"
    assert [t.reason for t in summary.ess_trips] == ["flash_crash"]
    trip = summary.ess_trips[0]
    assert trip.since_ns == expected_ts, "tripped in the evaluation of the crash's batch"
    assert "ETHUSDT fell" in trip.detail

    db = tmp_path / "run.db"
    assert query(db, "select state, reason, causation_id, ts from ess_changes") == [
        ("HALTED", "flash_crash", crash_trade, expected_ts)]
    assert query(db, "select level, code from alerts where code = 'ess_tripped'") == [
        ("critical", "ess_tripped")]
    after = query(db, f"select id from orders where ts >= {expected_ts} and reduce_only = 0")
    assert after == [], "no order that adds risk after the trip"
    blocked = query(db, f"select count(*) from risk_decisions where ts >= {expected_ts} "
                        "and reason = 'ess_halted'")[0][0]
    assert blocked == summary.rejections.get("ess_halted", 0)
    assert summary.signals > 0


async def test_a_drawdown_above_ten_percent_trips(tmp_path: Path) -> None:
    """A gap up makes momentum buy, a gap down of 60 % (slower than a flash crash,
    with the stale guard off) costs more than 10 % of the equity."""
    s = settings(RISK_INITIAL_CASH="4000", ESS_STALE_DATA_S="0")
    shapes = (gap("BTCUSDT", 300, 5, 6), gap("BTCUSDT", 320, 70, -60))
    summary, _ = await run(tmp_path, s, shapes=shapes, duration=1800, symbols=("BTCUSDT",))
    assert [t.reason for t in summary.ess_trips] == ["drawdown"]
    assert "below its peak 4000 (limit 10 %)" in summary.ess_trips[0].detail
    trip_ts = summary.ess_trips[0].since_ns
    db = tmp_path / "run.db"
    assert query(db, "select count(*) from orders where reduce_only = 0 and ts < "
                     f"{trip_ts}")[0][0] >= 1, "the position that lost"
    assert query(db, f"select count(*) from orders where reduce_only = 0 and ts >= {trip_ts}"
                 ) == [(0,)]
    assert float(summary.max_drawdown_pct) > 10


async def test_stale_market_data_trips_when_the_feed_resumes_in_simulated_time(
    tmp_path: Path,
) -> None:
    """In simulated time nothing happens during a silence: the batch that ends it is
    the first moment the clock has moved, and the ESS trips there, on the defaults
    (a silence beyond ESS_STALE_HALT_S, 300 s)."""
    shapes = (stale("ETHUSDT", 900, 400),)
    summary, _ = await run(tmp_path, settings(), shapes=shapes, duration=1800)
    [trip] = summary.ess_trips
    assert trip.reason == "stale_data"
    assert "no ETHUSDT trade for" in trip.detail
    first_ts = summary.first_ts
    assert first_ts + 1200 * S < trip.since_ns < first_ts + 1330 * S


async def test_a_short_silence_only_pauses_and_trading_goes_on(tmp_path: Path) -> None:
    """45 s without an ETHUSDT trade is past the pause limit (30 s) but far from the
    trip (300 s): the ESS stays ACTIVE and orders keep leaving after the silence (a
    gap up after it makes momentum buy)."""
    shapes = (stale("ETHUSDT", 900, 45), gap("ETHUSDT", 1000, 5, 6))
    summary, _ = await run(tmp_path, settings(), shapes=shapes, duration=1800)
    assert summary.ess_trips == []
    assert summary.ess.state == "ACTIVE"
    db = tmp_path / "run.db"
    after = summary.first_ts + 945 * S
    assert query(db, f"select count(*) from orders where ts > {after}")[0][0] > 0


async def test_a_run_resumed_after_a_trip_stays_halted_until_reset_by_hand(
    tmp_path: Path,
) -> None:
    shapes = (flash_crash("BTCUSDT", 600, 25, 20),)
    first, _ = await run(tmp_path, settings(), shapes=shapes, duration=1200)
    assert first.ess.state == "HALTED"
    db = tmp_path / "run.db"

    second, _ = await run(tmp_path, settings(), duration=3 * 3600, resume=True)
    assert second.run_id == first.run_id, "the resumed run continues the session"
    assert second.ess_start == first.ess
    assert second.ess == first.ess, "came back HALTED, with the same trip"
    assert second.ess_trips == []
    assert second.orders == 0 or query(
        db, f"select count(*) from orders where reduce_only = 0 and ts > "
            f"{first.ess.since_ns}")[0][0] == 0
    assert second.rejections.get("ess_halted", 0) > 0
    assert query(db, "select count(*) from alerts where code = 'ess_restored'") == [(1,)]

    status = cdb("ess", "status", "--db", str(db), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "HALTED"
    reset = cdb("ess", "reset", "--db", str(db), "--actor", "alice", "--reason", "crash over")
    assert reset.returncode == 0, reset.stderr
    again = cdb("ess", "reset", "--db", str(db), "--actor", "alice", "--reason", "twice")
    assert again.returncode == 1
    assert "nothing to reset" in again.stderr
    assert query(db, "select state, actor, detail from ess_changes order by ts") == [
        ("HALTED", "embedded.risk", first.ess.detail), ("ACTIVE", "alice", "crash over")]

    third, _ = await run(tmp_path, settings(), duration=3 * 3600, resume=True)
    assert third.ess.state == "ACTIVE"
    assert third.orders > 0, "trading resumed"


async def test_a_fresh_run_on_a_halted_database_starts_active_and_repeats_the_first(
    tmp_path: Path,
) -> None:
    shapes = (flash_crash("BTCUSDT", 600, 25, 20),)
    first, _ = await run(tmp_path, settings(), shapes=shapes, duration=1200)
    assert first.ess.state == "HALTED"
    second, _ = await run(tmp_path, settings(), shapes=shapes, duration=1200)
    assert second.run_id != first.run_id
    assert second.ess_start.state == "ACTIVE"
    same = {"run_id": "", "wall_seconds": 0.0}
    assert msgspec.structs.replace(second, **same) == msgspec.structs.replace(first, **same)


async def test_reset_is_refused_in_the_cooldown_then_accepted_and_trading_resumes(
    tmp_path: Path,
) -> None:
    s = settings(ESS_COOLDOWN_S="300")
    attempts: list[tuple[int, EssState | ResetRefused]] = []

    async def operator(pipe: Driven, batch: list[Trade]) -> None:
        risk, now = pipe.risk, pipe.clock.now()
        if not risk.halted or len(attempts) >= 2:
            return
        tripped = risk.ess.state.since_ns
        if not attempts or now >= tripped + 300 * S:
            attempts.append((now, await risk.reset("alice", "market recovered")))

    summary, _ = await run(tmp_path, s, shapes=(flash_crash("SOLUSDT", 900, 30, 20),),
                           duration=4 * 3600, on_batch=operator)
    (early_at, early), (late_at, late) = attempts
    assert isinstance(early, ResetRefused)
    assert early.reason == "cooldown"
    trip = summary.ess_trips[0]
    assert early.retry_after_ns == trip.since_ns + 300 * S - early_at
    assert isinstance(late, EssState)
    assert late.state == "ACTIVE"
    assert summary.ess.state == "ACTIVE"
    db = tmp_path / "run.db"
    assert query(db, "select state, reason, actor, detail from ess_changes order by ts") == [
        ("HALTED", "flash_crash", "embedded.risk", trip.detail),
        ("ACTIVE", "manual_reset", "alice", "market recovered")]
    assert query(db, f"select count(*) from orders where reduce_only = 0 and ts between "
                     f"{trip.since_ns} and {late_at}") == [(0,)]
    resumed = query(db, f"select count(*) from orders where reduce_only = 0 and ts > {late_at}")
    assert resumed[0][0] > 0, "buys are approved again after the reset"


async def test_a_flood_of_50_signals_in_5_s_is_rate_limited_and_the_pipeline_stays_healthy(
    tmp_path: Path,
) -> None:
    s = settings(RISK_MAX_OPEN_ORDERS="1000", RISK_MAX_POSITION="1000000",
                 RISK_MAX_EXPOSURE="10000000")
    flooded: list[int] = []

    async def flood(pipe: Driven, batch: list[Trade]) -> None:
        now = pipe.clock.now()
        if flooded or now < pipe._first_ts + 600 * S:
            return
        last = next(t for t in reversed(batch) if t.symbol == "BTCUSDT")
        flooded.append(now)
        signals = [
            Signal(id=f"flood-{k}", ts=now + k * 100_000_000, correlation_id=last.id,
                   causation_id=last.id, source="flooder", strategy_id="flood",
                   symbol="BTCUSDT", side="BUY", price_e8=last.price_e8,
                   trade_id=last.trade_id, move_bp=500, volume_e8=10**6 * SCALE)
            for k in range(50)  # 50 signals within 4.9 s
        ]
        await pipe.bus.publish(SIGNALS, signals)

    summary, pipe = await run(tmp_path, s, duration=3600, on_batch=flood)
    assert flooded
    db = tmp_path / "run.db"
    decided = query(db, "select count(*) from orders where causation_id like 'flood-%'")[0][0]
    rejected = dict(query(db, "select reason, count(*) from risk_decisions where signal_id "
                              "like 'flood-%' group by reason"))  # type: ignore[arg-type]
    assert decided == 10, "the rate limit: 10 orders per 10 s"
    assert rejected == {"rate_limit": 40}
    assert summary.ess.state == "ACTIVE", "a flood is not an emergency"
    assert pipe.bus.published.get("stream.signals", 0) == summary.signals + 50
    assert summary.fills > 0
    assert await pipe.bus.pending(SIGNALS, "risk") == 0, "nothing queued"


def test_cdb_run_summary_reports_the_ess(tmp_path: Path) -> None:
    result = cdb("run", "--json", "--db", str(tmp_path / "x.db"), "--duration", "20m",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ess"]["state"] == "ACTIVE"
    assert summary["ess_trips"] == []


async def test_the_cancel_command_is_recorded_and_nothing_is_parked(tmp_path: Path) -> None:
    await run(tmp_path, settings(), shapes=(flash_crash("BTCUSDT", 300, 20, 20),), duration=900)
    db = tmp_path / "run.db"
    assert query(db, "select count(*) from alerts where code = 'event_parked'") == [(0,)]
