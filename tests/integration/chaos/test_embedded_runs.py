"""Scenario runs against the embedded pipeline in this process: shipped scenarios pass
and repeat exactly with one seed, deliberate bugs fail with the right assertion named,
faults on services take effect and are undone, Ctrl-C leaves a clean pipeline."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from cdb.chaos.run.runner import Options, Outcome, Runner
from cdb.chaos.scenario.validate import validate_file, validate_text

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = ROOT / "scenarios"
SELF_TESTS = ROOT / "tests" / "e2e" / "scenarios"

pytestmark = pytest.mark.timeout(180)


async def run_file(path: Path, tmp: Path, **options: object) -> Outcome:
    result = validate_file(path)
    assert result.scenario is not None, result.problems
    return await Runner(result.scenario, Options(report_dir=tmp, **options)).run()  # type: ignore[arg-type]


async def run_text(text: str, tmp: Path) -> Outcome:
    result = validate_text(textwrap.dedent(text), "inline.yaml")
    assert result.scenario is not None, result.problems
    return await Runner(result.scenario, Options(report_dir=tmp)).run()


def failing(outcome: Outcome) -> dict[str, str]:
    return {a.name: a.detail for a in outcome.assertions if a.status != "pass"}


async def test_signal_flood_passes_and_one_seed_repeats_the_run(tmp_path: Path) -> None:
    first = await run_file(SCENARIOS / "signal-flood.yaml", tmp_path / "a")
    second = await run_file(SCENARIOS / "signal-flood.yaml", tmp_path / "b")
    assert first.verdict.status == "pass", failing(first)
    assert [(a.name, a.status, a.detail, a.measured) for a in first.assertions] == [
        (a.name, a.status, a.detail, a.measured) for a in second.assertions]
    other = await run_file(SCENARIOS / "signal-flood.yaml", tmp_path / "c", seed=99)
    assert other.seed == 99


async def test_lost_fills_fail_no_lost_events(tmp_path: Path) -> None:
    outcome = await run_file(SELF_TESTS / "lost-fill-must-fail.yaml", tmp_path)
    assert outcome.verdict.status == "fail"
    assert outcome.verdict.exit_code == 1
    bad = failing(outcome)
    assert "no_lost_events" in bad
    assert "is not a fill in the database" in bad["no_lost_events"]
    assert outcome.verdict.reasons[0].startswith("invariant 'no_lost_events'")
    effects = {a.name: a.status for a in outcome.assertions if a.category == "fault-effect"}
    assert effects["lose fills took effect"] == "pass"


async def test_duplicate_orders_fail_no_duplicates(tmp_path: Path) -> None:
    outcome = await run_file(SELF_TESTS / "duplicate-order-must-fail.yaml", tmp_path)
    assert outcome.verdict.status == "fail"
    bad = failing(outcome)
    assert set(bad) == {"no_duplicates"}
    assert "decided 2 times" in bad["no_duplicates"]


async def test_a_paused_consumer_falls_behind_and_catches_up(tmp_path: Path) -> None:
    outcome = await run_text("""
        title: pause risk
        seed: 2
        settle: 3s
        pipeline: {mode: embedded, market: {symbols: [BTCUSDT], warmup: 2s}}
        timeline:
          - {name: freeze risk, at: 1s, duration: 3s, fault: {type: stop, service: risk}}
        probes:
          - {name: risk lag, provider: {type: lag, group: risk}}
        invariants: [{type: lag_recovers, within: 2s}]
        expect:
          - {name: risk fell behind, sampled: risk lag, when: eventually,
             from: freeze risk, until: freeze risk.end,
             tolerance: {type: range, range: [10, null]}}
          - {name: risk caught up, sampled: risk lag, when: last, tolerance: 0}
        """, tmp_path)
    assert outcome.verdict.status == "pass", failing(outcome)


async def test_market_shapes_are_checked_on_the_recorded_prices(tmp_path: Path) -> None:
    outcome = await run_text("""
        title: shapes
        seed: 3
        settle: 1s
        pipeline:
          mode: embedded
          market: {symbols: [BTCUSDT, ETHUSDT], warmup: 2s}
          ess: {stale_data_s: 0, flash_crash_pct: 90, drawdown_limit_pct: 90}
        timeline:
          - {name: silence, at: 1s, fault: {type: stale, symbol: ETHUSDT, over: 4s}}
          - {name: jump, at: 2s, fault: {type: gap, symbol: BTCUSDT, over: 3s, jump_pct: 5}}
          - {name: pump, at: 8s, fault: {type: spike, symbol: ETHUSDT, rise_pct: 8, over: 4s}}
        """, tmp_path)
    effects = {a.name: (a.status, a.detail) for a in outcome.assertions
               if a.category == "fault-effect"}
    assert effects["silence took effect"][0] == "pass", effects
    assert "0 trades during the 4s silence" in effects["silence took effect"][1]
    assert effects["jump took effect"][0] == "pass", effects
    assert effects["pump took effect"][0] == "pass", effects


async def test_cancelling_an_embedded_run_undoes_and_stops_the_pipeline(tmp_path: Path) -> None:
    result = validate_text(textwrap.dedent("""
        title: long
        seed: 1
        pipeline: {mode: embedded, market: {symbols: [BTCUSDT], warmup: 1s, speed: 1}}
        timeline:
          - {name: freeze, at: 0s, fault: {type: stop, service: execution}}
          - {name: later, at: 60s, fault: {type: stop, service: signal}}
        """), "long.yaml")
    assert result.scenario is not None
    runner = Runner(result.scenario, Options(report_dir=tmp_path))
    task = asyncio.create_task(runner.run())
    for _ in range(300):
        if runner.applied:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runner.outcome is not None
    assert runner.outcome.verdict.status == "unknown"
    assert "freeze" in runner.ended  # undone
    target = runner.target
    assert target is not None
    assert not target.chaos_bus.paused  # type: ignore[attr-defined]
    leftover = [t for t in asyncio.all_tasks() if t.get_name().startswith(("chaos.", "step."))]
    assert leftover == []
