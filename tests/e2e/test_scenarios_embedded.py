"""`cdb scenario`: validate, schema, list, and runs of the shipped scenarios in embedded
mode, plus the self-tests that must fail with the right assertion named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import cdb

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
SELF_TESTS = Path(__file__).parent / "scenarios"

pytestmark = pytest.mark.timeout(300)


def run(tmp: Path, scenario: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = cdb("scenario", "run", str(scenario), "--json", "--report-dir", str(tmp), *args,
                 cwd=ROOT, timeout=280)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def failing(outcome: dict[str, Any]) -> dict[str, str]:
    return {a["name"]: a["detail"] for a in outcome["assertions"] if a["status"] != "pass"}


def must_pass(code: int, outcome: dict[str, Any]) -> None:
    """The run passed; otherwise fail naming every assertion that did not."""
    if code != 0 or outcome["verdict"]["status"] != "pass":
        pytest.fail(f"exit {code}: {failing(outcome)}")


def test_validate_every_shipped_scenario() -> None:
    result = cdb("scenario", "validate", *sorted(str(p) for p in SCENARIOS.glob("*.yaml")))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": valid") == 6


def test_validate_reports_lines_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: x\ntimeline:\n  - name: a\n    at: soon\n    fault: {type: kil}\n")
    result = cdb("scenario", "validate", str(bad))
    assert result.returncode == 2
    assert f"{bad}:4:9: error: $.timeline[0].at: 'soon' is not a duration" in result.stderr
    assert "did you mean 'kill'" in result.stderr


def test_schema_is_published_as_json() -> None:
    result = cdb("scenario", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert "flash_crash" in json.dumps(schema["$defs"]["fault"])


def test_list_shows_the_shipped_scenarios() -> None:
    result = cdb("scenario", "list", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "Signal flood is rate-limited" in result.stdout
    assert result.stdout.count(" valid\n") == 6
    assert "modes: distributed; needs: fake_binance, binance_venue" in result.stdout


def test_dry_run_starts_nothing() -> None:
    result = cdb("scenario", "run", str(SCENARIOS / "flash-crash.yaml"), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "flash_crash" in result.stdout


def test_signal_flood_passes_with_reports(tmp_path: Path) -> None:
    code, outcome = run(tmp_path, SCENARIOS / "signal-flood.yaml")
    assert code == 0, failing(outcome)
    assert outcome["seed"] == 11
    for name in ("journal.json", "junit.xml", "report.html"):
        assert (tmp_path / name).is_file()
    journal = json.loads((tmp_path / "journal.json").read_text())
    assert journal["cdb"]["verdict"] == "pass"
    assert journal["cdb"]["recording"]["events"]["signal"]
    examined_something(outcome)


def test_a_scenario_made_to_lose_fills_fails_naming_the_invariant(tmp_path: Path) -> None:
    """Through the command: exit 1, and the failure is the lost fills, named (not any
    failure of the check: the other must-fail cases are in test_scenarios_must_fail)."""
    code, outcome = run(tmp_path, SELF_TESTS / "lost-fill-must-fail.yaml")
    assert code == 1
    bad = {a["name"]: a["detail"] for a in outcome["assertions"] if a["status"] == "fail"}
    assert set(bad) == {"no_lost_events"}
    assert "venue execution" in bad["no_lost_events"]
    assert "is not a fill in the database" in bad["no_lost_events"]
    assert outcome["verdict"]["reasons"][0].startswith("invariant 'no_lost_events'")


def test_a_scenario_made_to_double_orders_fails_naming_the_invariant(tmp_path: Path) -> None:
    code, outcome = run(tmp_path, SELF_TESTS / "duplicate-order-must-fail.yaml")
    assert code == 1
    assert set(failing(outcome)) == {"no_duplicates"}


def examined_something(outcome: dict[str, Any]) -> None:
    """Every invariant and measurement of the run examined something (its counts are
    in the journal): none passed on nothing."""
    for a in outcome["assertions"]:
        if a["category"] in ("invariant", "measurement"):
            assert a.get("examined"), a
            assert any(a["examined"].values()), a


def test_flash_crash_trips_the_ess(tmp_path: Path) -> None:
    code, outcome = run(tmp_path, SCENARIOS / "flash-crash.yaml")
    by_name = {a["name"]: a for a in outcome["assertions"]}
    assert by_name["the ESS tripped on the flash crash"]["status"] == "pass"
    assert by_name["time to trip"]["measured"] <= 65
    must_pass(code, outcome)
    trip = by_name["no_order_after_ess_trip"]["examined"]
    assert trip["open_at_trip"] >= 1
    assert trip["reduce_only_while_halted"] >= 1
    examined_something(outcome)


def test_ess_trip_and_reset(tmp_path: Path) -> None:
    code, outcome = run(tmp_path, SCENARIOS / "ess-trigger-reset.yaml")
    by_name = {a["name"]: a for a in outcome["assertions"]}
    assert by_name["trading resumes after the reset"]["status"] == "pass"
    must_pass(code, outcome)
    examined_something(outcome)


def test_exchange_scenario_is_refused_in_embedded_mode_naming_distributed(
    tmp_path: Path,
) -> None:
    """The exchange faults act on a fake Binance beside the service processes: asked for
    an embedded run, the coordinator says so instead of passing on faults never made (the
    distributed run passes: tests/e2e/test_scenarios_distributed.py)."""
    result = cdb("scenario", "run", str(SCENARIOS / "exchange-down-rate-limited.yaml"),
                 "--mode", "embedded", "--json", "--report-dir", str(tmp_path), cwd=ROOT)
    assert result.returncode == 2
    assert "distributed" in result.stdout + result.stderr
