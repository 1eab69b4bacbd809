"""One must-fail self-test per check: a scenario with a deliberate bug (``sabotage``) or
a misbehaving part fails on exactly that check, with the evidence named, while every
other check it runs passes. Embedded runs, in this process: a few seconds each."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdb.chaos.run.runner import Options, Outcome, Runner
from cdb.chaos.scenario.validate import validate_file

SELF_TESTS = Path(__file__).parent / "scenarios"

pytestmark = pytest.mark.timeout(120)

CASES = [
    # (scenario, the one failing check, what its detail must name)
    ("lost-fill-must-fail.yaml", "no_lost_events", "is not a fill in the database"),
    ("lost-tail-must-fail.yaml", "no_lost_events", "stream.market_data: ws published"),
    ("duplicate-fill-must-fail.yaml", "no_duplicates", "fills with venue fill id"),
    ("duplicate-order-must-fail.yaml", "no_duplicates", "decided 2 times"),
    ("order-after-trip-must-fail.yaml", "no_order_after_ess_trip", "while HALTED since"),
    ("exposure-must-fail.yaml", "exposure_within_limit", "> limit 20,000.00 at t="),
    ("broken-chain-must-fail.yaml", "audit_chain_complete", "is not chained to order"),
    ("dead-letter-must-fail.yaml", "no_dead_letters", "dead-lettered"),
    ("stalled-consumer-must-fail.yaml", "lag_recovers", "lag never back to 0"),
    ("no-recovery-must-fail.yaml", "risk back", "healthy again never happened"),
    ("no-trip-must-fail.yaml", "time to trip", "the ESS HALTED never happened"),
    ("no-detect-must-fail.yaml", "time to detect",
     "a warning, an ESS trip or a service not healthy never happened"),
    ("lost-reset-must-fail.yaml", "reset", "answered as done but risk's ESS is still HALTED"),
]


async def run(name: str, tmp: Path) -> Outcome:
    result = validate_file(SELF_TESTS / name)
    assert result.scenario is not None, result.problems
    return await Runner(result.scenario, Options(report_dir=tmp)).run()


@pytest.mark.parametrize(("scenario", "check", "evidence"), CASES,
                         ids=[c[0].removesuffix("-must-fail.yaml") for c in CASES])
async def test_a_deliberate_bug_fails_exactly_its_check_naming_the_evidence(
    scenario: str, check: str, evidence: str, tmp_path: Path,
) -> None:
    outcome = await run(scenario, tmp_path)
    failed = {a.name: a for a in outcome.assertions if a.status == "fail"}
    assert set(failed) == {check}, {n: a.detail for n, a in failed.items()}
    assert (outcome.verdict.status, outcome.verdict.exit_code) == ("fail", 1)
    assert evidence in failed[check].detail
    # The other checks passed on real activity, not on nothing.
    for a in outcome.assertions:
        if a.category in ("invariant", "measurement") and a.name != check:
            assert a.status == "pass", (a.name, a.detail)
            assert any(a.examined.values()), (a.name, a.examined)


def test_every_check_has_its_must_fail_case() -> None:
    """Every invariant, and every kind of measurement (trip, detect, recover)."""
    from cdb.chaos.scenario.registry import INVARIANTS

    covered = {check for _, check, _ in CASES}
    assert set(INVARIANTS.names()) <= covered
    kinds = {"time to trip": "trip", "time to detect": "detect", "risk back": "recover"}
    assert set(kinds) <= covered
    assert set(kinds.values()) == {"trip", "detect", "recover"}
