"""Scenario validation: every problem with its JSON path and its line in the file."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from cdb.chaos.scenario import schema, source
from cdb.chaos.scenario.validate import Problem, validate_file, validate_text

SCENARIOS = Path(__file__).resolve().parents[3] / "scenarios"


def problems(text: str) -> list[Problem]:
    return list(validate_text(textwrap.dedent(text).lstrip(), "s.yaml").problems)


def errors(text: str) -> list[tuple[int | None, str, str]]:
    return [(p.line, p.path, p.message) for p in problems(text) if p.severity == "error"]


def test_the_published_schema_is_a_valid_json_schema() -> None:
    doc = schema.build()
    Draft202012Validator.check_schema(doc)
    assert doc["$schema"].endswith("2020-12/schema")
    json.loads(schema.dumps())  # serialisable as published


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_is_valid(path: Path) -> None:
    result = validate_file(path)
    assert result.ok, [p.render(str(path)) for p in result.problems]


def test_six_scenarios_are_shipped() -> None:
    assert {p.stem for p in SCENARIOS.glob("*.yaml")} == {
        "flash-crash", "redis-down", "exchange-down-rate-limited", "signal-flood",
        "ess-trigger-reset", "service-killed-restarted"}


def test_yaml_syntax_error_has_line_and_column() -> None:
    (p,) = problems("title: x\ntimeline: [\n  {at: 1s\n")
    assert p.message.startswith("invalid YAML")
    assert p.line is not None
    assert p.line >= 2
    assert p.column is not None


def test_every_schema_problem_is_reported_with_path_and_line() -> None:
    found = errors("""
        title: t
        pipeline:
          mode: embeded
        timeline:
          - name: a
            at: 5 sec
            fault: {type: kil, service: risk}
          - name: b
            at: 1s
            fault: {type: stop, service: risk}
            extra: 1
          - name: c
            at: 2s
        """)
    assert (3, "$.pipeline.mode", "'embeded' is not one of: embedded, distributed "
            "(did you mean 'embedded'?)") in found
    assert any(line == 6 and path == "$.timeline[0].at" and "not a duration" in msg
               for line, path, msg in found)
    assert any(line == 7 and path == "$.timeline[0].fault.type" and "did you mean 'kill'" in msg
               for line, path, msg in found)
    assert (11, "$.timeline[1].extra", "unknown key 'extra'") in found
    assert (12, "$.timeline[2]", "needs one of fault, action, probe, parallel") in found
    assert len(found) == 5


def test_a_wrong_parameter_of_a_fault_is_named() -> None:
    found = errors("""
        title: t
        timeline:
          - name: crash
            at: 1s
            fault: {type: flash_crash, symbol: BTCUSDT, drop_pct: 150, over: 1m}
          - name: both
            at: 2s
            fault: {type: stop, service: risk}
            action: {type: wait, duration: 1s}
        """)
    assert any(path == "$.timeline[0].fault.drop_pct" and line == 5 for line, path, _ in found)
    assert any(path == "$.timeline[1]" and "exactly one of" in msg for _, path, msg in found)


def test_duplicate_and_non_string_keys_are_reported() -> None:
    found = errors("""
        title: t
        seed: 1
        seed: 2
        on: 3
        """)
    assert any(line == 3 and "duplicate key 'seed' (first at line 2" in msg
               for line, _, msg in found)
    assert any(line == 4 and "not a string" in msg for line, _, msg in found)


def test_what_the_schema_cannot_say_is_checked_too() -> None:
    found = errors("""
        title: t
        pipeline:
          services: [ws, signal, risk]
          modes: [embedded]
          market: {source: fake-binance}
        timeline:
          - {name: a, at: 1s, fault: {type: stop, service: execution}}
          - {name: a, at: 2s, fault: {type: kill, service: risk}}
        measurements:
          - {name: m, kind: trip, from: nowhere}
        expect:
          - {name: e, sampled: nope, tolerance: 1}
        """)
    messages = " | ".join(msg for _, _, msg in found)
    assert "service 'execution' is not started by this pipeline" in messages
    assert "step name 'a' is already used" in messages
    assert "fault 'kill' works in distributed mode only" in messages
    assert "'nowhere' names no timeline step" in messages
    assert "no sampled probe named 'nope'" in messages
    assert "the fake-binance market runs on the wall clock, in distributed mode only" in messages
    assert all(line is not None for line, _, _ in found)


def test_configuration_substitutes_with_types_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOS_TEST_SYMBOL", "ETHUSDT")
    result = validate_text(textwrap.dedent("""
        title: t
        configuration:
          drop: 20
          symbol: {type: env, key: CHAOS_TEST_SYMBOL}
        pipeline: {market: {symbols: ["${symbol}"]}}
        timeline:
          - name: crash
            at: 1s
            fault: {type: flash_crash, symbol: "${symbol}", drop_pct: "${drop}", over: 10s}
          - name: note
            at: 1s
            action: {type: wait, duration: "${drop}s"}
        """), "s.yaml")
    assert result.ok, result.problems
    assert result.scenario is not None
    crash = result.scenario.timeline[0].fault
    assert crash is not None
    assert crash.params == {"symbol": "ETHUSDT", "drop_pct": 20, "over": "10s"}
    wait = result.scenario.timeline[1].action
    assert wait is not None
    assert wait.params["duration"] == "20s"


def test_unknown_configuration_reference_is_an_error() -> None:
    found = errors("""
        title: t
        timeline:
          - {name: a, at: "${later}", action: {type: wait, duration: 1s}}
        """)
    assert found == [(3, "$.timeline[0].at", "unknown configuration ${later}")]


def test_positions_of_values_and_keys() -> None:
    located = source.load("a:\n  b: [1, {c: 2}]\n")
    assert located.position(("a", "b", 1, "c")) == source.Position(2, 14)
    assert located.position(("a", "b"), key=True) == source.Position(2, 3)
    assert located.position(("a", "missing")) == source.Position(2, 3)


def test_an_empty_file_is_not_a_scenario() -> None:
    (p,) = problems("")
    assert "not an empty file" in p.message or "empty file" in p.message


def test_market_shapes_belong_on_the_timeline() -> None:
    found = errors("""
        title: t
        method:
          - type: action
            name: crash
            provider: {type: flash_crash, symbol: BTCUSDT, drop_pct: 10, over: 5s}
        """)
    assert [(line, msg.split(",")[0]) for line, _, msg in found] == [
        (5, "'flash_crash' shapes the market")]
