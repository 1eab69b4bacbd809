"""The runner's own logic against a fake target: order of faults and undos, undo on
failure and on Ctrl-C, steady state, verdict rules, reports."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.unit.chaos.conftest import RunFactory

from cdb.chaos.scenario.model import Scenario

HEAD = """
title: runner test
seed: 4
settle: 0s
sample_every: 50ms
pipeline: {mode: embedded, market: {warmup: 0s}}
"""


def read(path: str) -> str:
    return Path(path).read_text()


async def interrupt_after(r: Any, log: list[str], entry: str) -> None:
    """Run ``r`` until ``entry`` is logged, then cancel it as Ctrl-C does."""
    task = asyncio.create_task(r.run())
    for _ in range(200):
        if entry in log:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def spec(body: str) -> str:
    return HEAD + body


async def test_faults_apply_in_time_order_and_undo_in_reverse(
    scenario: Callable[[str], Scenario], runner: RunFactory, log: list[str]
) -> None:
    """Undos run when a duration ends, the rest last-applied first at the end."""
    sc = scenario(spec("""
timeline:
  - {name: b, at: 0.05s, fault: {type: test_switch, name: b}}
  - {name: a, at: 0s, fault: {type: test_switch, name: a}}
  - {name: c, at: 0.1s, duration: 0.05s, fault: {type: test_switch, name: c}}
"""))
    outcome = await runner(sc).run()
    assert log == ["start", "apply a", "apply b", "apply c", "undo c", "undo b", "undo a",
                   "finish", "stop"]
    assert outcome.verdict.status == "pass", outcome.verdict.reasons
    assert {a.name for a in outcome.assertions} == {"a took effect", "b took effect",
                                                   "c took effect"}


async def test_parallel_group_and_repeat(scenario: Callable[[str], Scenario],
                                         runner: RunFactory, log: list[str]) -> None:
    sc = scenario(spec("""
timeline:
  - name: burst
    at: 0.02s
    repeat: {times: 2, every: 0.1s}
    parallel:
      - {name: x, at: 0s, duration: 0.02s, fault: {type: test_switch, name: x}}
      - {name: y, at: 0.04s, duration: 0.02s, fault: {type: test_switch, name: y}}
"""))
    await runner(sc).run()
    assert log[1:-2] == ["apply x", "undo x", "apply y", "undo y"] * 2


async def test_undo_runs_when_the_run_fails(scenario: Callable[[str], Scenario],
                                            runner: RunFactory, log: list[str]) -> None:
    """A failure mid-timeline still takes back what was applied, then stops the target."""
    sc = scenario(spec("""
duration: 5s
timeline:
  - {name: a, at: 0s, fault: {type: test_switch, name: a}}
  - {name: boom, at: 0.05s, probe: {type: test_value, boom: true}, tolerance: ok}
  - {name: b, at: 0.1s, fault: {type: test_switch, name: b, fail: true}}
  - {name: end, at: 0.15s, fault: {type: test_switch, name: end, ends_market: true}}
  - {name: never, at: 1s, fault: {type: test_switch, name: never}}
"""))
    outcome = await runner(sc).run()
    assert log == ["start", "apply a", "undo a", "stop"]
    assert outcome.verdict.status == "unknown"
    assert any("market ended before the scenario" in r for r in outcome.verdict.reasons)
    names = {a.name: a for a in outcome.assertions}
    assert names["boom"].status == "unknown"  # the probe failed: cannot judge
    assert names["b took effect"].status == "unknown"  # apply failed: no effect
    assert "never took effect" not in names


async def test_ctrl_c_undoes_everything_and_still_reports(
    scenario: Callable[[str], Scenario], runner: RunFactory, log: list[str], tmp_path: Path
) -> None:
    """Cancelling the run (what Ctrl-C does) undoes the faults in reverse and writes the
    reports with an unknown verdict."""
    sc = scenario(spec("""
timeline:
  - {name: a, at: 0s, fault: {type: test_switch, name: a}}
  - {name: b, at: 0.02s, fault: {type: test_switch, name: b}}
  - {name: late, at: 30s, fault: {type: test_switch, name: late}}
"""))
    r = runner(sc)
    await interrupt_after(r, log, "apply b")
    assert log == ["start", "apply a", "apply b", "undo b", "undo a", "stop"]
    assert r.outcome is not None
    assert r.outcome.interrupted
    assert r.outcome.verdict.status == "unknown"
    assert "interrupted" in " ".join(r.outcome.verdict.reasons)
    journal = json.loads(read(r.outcome.reports["json"]))
    assert journal["status"] == "interrupted"


async def test_a_terminated_run_is_unknown_even_when_expectations_missed(
    scenario: Callable[[str], Scenario], runner: RunFactory, log: list[str]
) -> None:
    """Cut short, an expectation that had no time to come true proves nothing."""
    sc = scenario(spec("""
timeline:
  - {name: a, at: 0s, fault: {type: test_switch, name: a}}
  - {name: late, at: 30s, fault: {type: test_switch, name: late}}
expect:
  - {name: never seen, event: order, count: {type: range, range: [1, null]}}
"""))
    r = runner(sc)
    await interrupt_after(r, log, "apply a")
    assert r.outcome is not None
    assert r.outcome.verdict.status == "unknown", r.outcome.verdict.reasons
    missed = next(a for a in r.outcome.assertions if a.name == "never seen")
    assert missed.status == "unknown"
    assert missed.detail.startswith("interrupted before the end")


async def test_a_step_hung_past_the_end_of_the_timeline_is_cancelled(
    scenario: Callable[[str], Scenario], runner: RunFactory, log: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One stuck fault does not hold the run: it is cancelled after a grace period, the
    rest is undone and reported, and the verdict is unknown naming the step."""
    from cdb.chaos.run import runner as runner_module

    monkeypatch.setattr(runner_module, "_OVERRUN_S", 0.2)
    sc = scenario(spec("""
timeline:
  - {name: a, at: 0s, fault: {type: test_switch, name: a}}
  - {name: stuck, at: 0.02s, fault: {type: test_switch, name: stuck, hangs: true}}
"""))
    outcome = await asyncio.wait_for(runner(sc).run(), 10)
    assert log == ["start", "apply a", "apply stuck", "undo a", "finish", "stop"]
    assert outcome.verdict.status == "unknown"
    late = [a for a in outcome.assertions if a.category == "run"]
    assert any(a.name == "step.stuck" and "still running" in a.detail for a in late), late


async def test_nothing_is_sampled_once_the_run_is_over(
    scenario: Callable[[str], Scenario], runner: RunFactory, log: list[str]
) -> None:
    """A sampler that swallows its cancellation must not record the pipeline being
    stopped (a last 'unreachable' would read as a failure after recovery)."""
    sc = scenario(spec("""
timeline:
  - {name: a, at: 0s, duration: 0.1s, fault: {type: test_switch, name: a}}
probes:
  - {name: slow, provider: {type: test_value, stubborn: true}}
"""))
    r = runner(sc)
    outcome = await r.run()
    assert outcome.verdict.status == "pass", outcome.verdict.reasons
    assert r.target is not None
    values = [s.value for s in r.target.recording.samples["slow"]]
    assert values
    assert "late" not in values
    assert r.left_behind == []


async def test_the_coordinator_serves_health_and_metrics_on_a_free_port(
    scenario: Callable[[str], Scenario], runner: RunFactory, log: list[str]
) -> None:
    sc = scenario(spec("""
timeline:
  - {name: a, at: 0s, duration: 1s, fault: {type: test_switch, name: a}}
"""))
    r = runner(sc, http_port=0)
    task = asyncio.create_task(r.run())
    for _ in range(500):
        if r.http_url is not None or task.done():
            break
        await asyncio.sleep(0.01)
    assert r.http_url is not None
    async with httpx.AsyncClient(base_url=r.http_url) as client:
        health = (await client.get("/health")).json()
        metrics = (await client.get("/metrics")).text
    assert health["service"] == "coordinator"
    assert "cdb_chaos_scenario_seconds" in metrics
    outcome = await task
    assert outcome.http_url == r.http_url


async def test_steady_state_not_met_injects_nothing(
    scenario: Callable[[str], Scenario], runner: RunFactory, log: list[str]
) -> None:
    sc = scenario(spec("""
steady-state-hypothesis:
  title: all good
  probes:
    - {type: probe, name: value, provider: {type: test_value, value: bad}, tolerance: ok}
timeline:
  - {name: a, at: 0s, fault: {type: test_switch, name: a}}
"""))
    outcome = await runner(sc).run()
    assert "apply a" not in log
    assert outcome.verdict.status == "fail"
    assert outcome.verdict.reasons[0].startswith("steady-state 'before: value'")


async def test_a_fault_that_did_not_take_effect_makes_the_run_unknown(
    scenario: Callable[[str], Scenario], runner: RunFactory, log: list[str]
) -> None:
    """Even with a failing expectation: it proves nothing without its fault."""
    sc = scenario(spec("""
timeline:
  - {name: a, at: 0s, fault: {type: test_switch, name: a, effect: false}}
expect:
  - {name: never, event: alert}
"""))
    outcome = await runner(sc).run()
    assert outcome.verdict.status == "unknown"
    assert "did not demonstrably take effect" in outcome.verdict.reasons[0]
    assert "prove nothing" in outcome.verdict.reasons[-1]
    assert outcome.verdict.exit_code == 2


async def test_unavailable_fault_and_failed_undo_are_unknown(
    scenario: Callable[[str], Scenario], runner: RunFactory, log: list[str]
) -> None:
    sc = scenario(spec("""
timeline:
  - {name: a, at: 0s, fault: {type: test_switch, name: a, missing: true}}
  - {name: b, at: 0s, fault: {type: test_switch, name: b, undo_fails: true}}
"""))
    outcome = await runner(sc).run()
    assert outcome.verdict.status == "unknown"
    details = " ".join(a.detail for a in outcome.assertions)
    assert "a needs a feature that is not there" in details
    assert "the undo failed" in details


async def test_method_runs_in_sequence_with_pauses_and_rollbacks_after(
    scenario: Callable[[str], Scenario], runner: RunFactory, log: list[str]
) -> None:
    sc = scenario(spec("""
duration: 0.3s
method:
  - {type: action, name: m1, provider: {type: test_switch, name: m1}, pauses: {after: 0.05s}}
  - {type: probe, name: p, provider: {type: test_value, value: 3},
     tolerance: {type: range, range: [1, 5]}}
  - {type: action, name: m2, provider: {type: test_switch, name: m2}, duration: 0.05s}
rollbacks:
  - {type: action, name: r, provider: {type: test_switch, name: r}}
"""))
    outcome = await runner(sc).run()
    assert log == ["start", "apply m1", "apply m2", "undo m2", "undo m1", "apply r", "finish",
                   "stop"]
    assert {a.name: a.status for a in outcome.assertions}["p@1"] == "pass"


async def test_reports_journal_junit_and_html(scenario: Callable[[str], Scenario],
                                              runner: RunFactory, log: list[str]) -> None:
    sc = scenario(spec("""
timeline:
  - {name: a, at: 0s, duration: 0.05s, fault: {type: test_switch, name: a}}
  - {name: look, at: 0.1s, probe: {type: test_value, value: 7}, tolerance: 7}
"""))
    outcome = await runner(sc).run()
    journal = json.loads(read(outcome.reports["json"]))
    for key in ("experiment", "status", "deviated", "steady_states", "run", "rollbacks",
                "start", "end", "duration"):
        assert key in journal, key
    assert journal["cdb"]["verdict"] == "pass"
    assert journal["cdb"]["seed"] == 4
    assert [r["activity"]["name"] for r in journal["run"]] == ["a", "look"]
    suite = ET.fromstring(read(outcome.reports["junit"])).find("testsuite")  # noqa: S314 - ours
    assert suite is not None
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [a.name for a in outcome.assertions]
    assert {p.get("name"): p.get("value") for p in suite.iter("property")}["seed"] == "4"
    page = read(outcome.reports["html"])
    assert "<svg" in page
    assert "PASS" in page
    svg = page[page.index("<svg"):page.index("</svg>") + 6]
    ET.fromstring(svg)  # noqa: S314 - our own output; checks it is well-formed


async def test_dry_run_plan_lists_steps_in_order(scenario: Callable[[str], Scenario],
                                                 runner: RunFactory) -> None:
    sc = scenario(spec("""
timeline:
  - {name: late, at: 2s, fault: {type: test_switch, name: late}}
  - {name: early, at: 1s, duration: 1s, fault: {type: test_switch, name: early}}
"""))
    lines = runner(sc, dry_run=True).describe_plan()
    steps = [line for line in lines if "test_switch" in line]
    assert "early" in steps[0]
    assert "for 1s" in steps[0]
    assert "late" in steps[1]
