"""``cdb scenario soak`` end to end: a seeded soak passes; a deliberate bug drawn at a
random moment fails it on the right check and shrinks to a small scenario that fails
on its own; a deliberate leak is flagged, the healthy services are not.

The soaks run in embedded mode (market time compressed: ten minutes of market in
seconds) and, for two minutes, in distributed mode (five service processes, real Redis
and PostgreSQL, about 2.5 minutes of wall time).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import cdb
from tests.e2e.test_scenarios_embedded import ROOT, failing

pytestmark = pytest.mark.timeout(400)


def soak(tmp: Path, *args: str, timeout: float = 380) -> tuple[int, dict[str, Any]]:
    result = cdb("scenario", "soak", "--json", "--report-dir", str(tmp), *args, cwd=ROOT,
                 timeout=timeout)
    assert result.stdout.strip(), result.stderr[-3000:]
    return result.returncode, json.loads(result.stdout)


def _checks(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in result["assertions"]}


def _history_checks_examined_something(result: dict[str, Any]) -> None:
    for a in result["assertions"]:
        if a["category"] in ("invariant", "measurement"):
            assert a["status"] == "pass", (a["name"], a["detail"])
            assert any(a["examined"].values()), a


def test_a_seeded_soak_passes_with_every_check_over_the_whole_history(tmp_path: Path) -> None:
    """Ten minutes of market time, faults of five kinds at random moments (flash crashes
    that trip the ESS and are reset, paused consumers, gaps, stale and flat feeds,
    floods): every invariant passes on real activity, and no service leaks."""
    code, result = soak(tmp_path, "--mode", "embedded", "--duration", "600s", "--seed", "3",
                        "--weight", "flash_crash=2")
    assert code == 0, result["reasons"]
    assert result["status"] == "pass"
    assert len(result["faults_by_kind"]) >= 5, result["faults_by_kind"]
    assert result["faults"] >= 40
    _history_checks_examined_something(result)
    checks = _checks(result)
    assert checks["no_order_after_ess_trip"]["examined"]["trips"] >= 2
    assert checks["no_leaks"]["status"] == "pass"
    assert not [s for s in result["series"] if s["decides"] and s["flagged"]]
    # The same seed gives the same schedule.
    again = cdb("scenario", "soak", "--dry-run", "--mode", "embedded", "--duration", "600s",
                "--seed", "3", "--weight", "flash_crash=2", cwd=ROOT)
    planned = (tmp_path / "soak.yaml").read_text()
    assert again.stdout.split("timeline:")[1] == planned.split("timeline:")[1]
    for name in ("soak.json", "soak.html", "soak.yaml", "run/report.html"):
        assert (tmp_path / name).is_file()


def test_a_doubled_fill_at_a_random_moment_fails_and_shrinks_to_a_scenario_that_fails_alone(
    tmp_path: Path,
) -> None:
    """The nemesis may also draw a test-only sabotage that publishes every fill twice:
    the soak fails on no_duplicates (and on nothing else), the shrinking finds at most
    two faults that still fail, and ``cdb scenario run`` of the written file fails on
    no_duplicates by itself."""
    code, result = soak(tmp_path, "--mode", "embedded", "--duration", "120s", "--seed", "7",
                        "--sabotage", "duplicate_fills=1", "--max-trials", "16")
    assert code == 1
    assert result["faults_by_kind"].get("sabotage:duplicate_fills"), result["faults_by_kind"]
    failed = {a["name"] for a in result["assertions"] if a["status"] == "fail"}
    assert failed == {"no_duplicates"}
    assert "fills with venue fill id" in _checks(result)["no_duplicates"]["detail"]
    shrunk = result["shrunk"]
    assert shrunk["check"] == "no_duplicates"
    assert 1 <= len(shrunk["faults"]) <= 2
    assert any(f.startswith("sabotage-duplicate_fills") for f in shrunk["faults"])
    assert shrunk["reproduced"]
    # On its own, as a user would run it.
    alone = cdb("scenario", "run", shrunk["file"], "--json", "--report-dir",
                str(tmp_path / "alone"), cwd=ROOT, timeout=120)
    outcome = json.loads(alone.stdout)
    assert alone.returncode == 1
    assert set(failing(outcome)) >= {"no_duplicates"}
    assert {a["name"] for a in outcome["assertions"] if a["status"] == "fail"} == \
        {"no_duplicates"}


def test_a_deliberate_leak_is_flagged_and_the_healthy_services_are_not(tmp_path: Path) -> None:
    """A test-only sabotage makes execution leave a task (and 64 KiB) behind per fill:
    the slope test flags execution's tasks, and no other service's."""
    code, result = soak(tmp_path, "--mode", "embedded", "--duration", "240s", "--seed", "5",
                        "--sabotage", "leak_tasks=2", "--no-shrink")
    assert code == 1
    flagged = {(s["subject"], s["metric"]) for s in result["series"]
               if s["decides"] and s["flagged"]}
    assert flagged == {("execution", "tasks")}
    judged = {s["subject"] for s in result["series"] if s["decides"] and s["growth"] is not None}
    assert judged == {"signal", "risk", "execution", "db_writer", "ws"}
    failed = {a["name"] for a in result["assertions"] if a["status"] == "fail"}
    assert failed == {"no_leaks"}
    assert "(leak)" in (tmp_path / "soak.html").read_text()


def test_a_two_minute_distributed_soak_passes(tmp_path: Path) -> None:
    """Five service processes, their own Redis and PostgreSQL: processes paused, killed
    and restarted, Redis and PostgreSQL taken down, toxics and cut links, flash crashes,
    gaps, stale and flat feeds, floods; every check passes and every service recovers
    within its bound."""
    code, result = soak(tmp_path, "--mode", "distributed", "--duration", "120s", "--seed",
                        "3", timeout=390)
    assert code == 0, result["reasons"]
    _history_checks_examined_something(result)
    assert any(r["measured"] for r in result["recovery"])
    assert not [s for s in result["series"] if s["decides"] and s["flagged"]]
