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


def run_all(tmp: Path, directory: Path, *args: str,
            timeout: float = 280) -> tuple[int, dict[str, Any], dict[str, dict[str, Any]]]:
    """``cdb scenario run-all DIRECTORY --json``: its exit code, its summary and each
    scenario's result by file stem (``outcome``: as ``cdb scenario run --json`` prints it,
    None when the scenario did not run)."""
    result = cdb("scenario", "run-all", str(directory), "--json", "--report-dir", str(tmp),
                 *args, cwd=ROOT, timeout=timeout)
    assert result.stdout.strip(), result.stderr
    summary = json.loads(result.stdout)
    return result.returncode, summary, {Path(r["file"]).stem: r for r in summary["results"]}


@pytest.fixture(scope="module")
def embedded_all(tmp_path_factory: pytest.TempPathFactory,
                 ) -> tuple[int, dict[str, Any], dict[str, dict[str, Any]], Path]:
    """Every shipped scenario in embedded mode, by one ``cdb scenario run-all``."""
    out = tmp_path_factory.mktemp("run-all-embedded")
    return (*run_all(out, SCENARIOS, "--mode", "embedded"), out)


def outcome_of(results: dict[str, dict[str, Any]], stem: str) -> tuple[int, dict[str, Any]]:
    """One scenario's exit code and outcome from a run-all summary."""
    entry = results[stem]
    assert entry["outcome"] is not None, entry["reasons"]
    return entry["exit_code"], entry["outcome"]


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


def test_run_all_gives_each_verdict_one_junit_and_an_index(embedded_all: Any) -> None:
    """Every shipped scenario is in the summary, the JUnit file and the index; the ones
    that cannot run embedded are unknown with the reason (never left out), so the exit
    code is 2 (the worst verdict: no fail, some unknown)."""
    code, summary, results, out = embedded_all
    assert set(results) == {p.stem for p in SCENARIOS.glob("*.yaml")}
    statuses = {stem: r["status"] for stem, r in results.items()}
    assert statuses == {"flash-crash": "pass", "ess-trigger-reset": "pass",
                        "signal-flood": "pass", "service-killed-restarted": "unknown",
                        "redis-down": "unknown", "exchange-down-rate-limited": "unknown"}, \
        {stem: r["reasons"] for stem, r in results.items() if r["status"] != "pass"}
    assert (code, summary["status"]) == (2, "unknown")
    assert any("distributed" in reason for reason in results["redis-down"]["reasons"])
    junit = (out / "junit.xml").read_text()
    assert junit.count("<testsuite ") == 6
    assert 'name="no_duplicates"' in junit
    index = (out / "index.html").read_text()
    for stem in results:
        assert f"{stem}.yaml" in index
    assert 'href="flash-crash/report.html"' in index


def test_signal_flood_passes_with_reports(embedded_all: Any) -> None:
    code, outcome = outcome_of(embedded_all[2], "signal-flood")
    assert code == 0, failing(outcome)
    assert outcome["seed"] == 11
    report_dir = Path(outcome["report_dir"])
    for name in ("journal.json", "junit.xml", "report.html"):
        assert (report_dir / name).is_file()
    journal = json.loads((report_dir / "journal.json").read_text())
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


def test_flash_crash_trips_the_ess(embedded_all: Any) -> None:
    code, outcome = outcome_of(embedded_all[2], "flash-crash")
    by_name = {a["name"]: a for a in outcome["assertions"]}
    assert by_name["the ESS tripped on the flash crash"]["status"] == "pass"
    assert by_name["time to trip"]["measured"] <= 65
    must_pass(code, outcome)
    trip = by_name["no_order_after_ess_trip"]["examined"]
    assert trip["open_at_trip"] >= 1
    assert trip["reduce_only_while_halted"] >= 1
    examined_something(outcome)


def test_ess_trip_and_reset(embedded_all: Any) -> None:
    code, outcome = outcome_of(embedded_all[2], "ess-trigger-reset")
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
