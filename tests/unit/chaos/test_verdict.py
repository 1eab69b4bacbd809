"""The verdict rules: pass, fail, unknown (and their exit codes)."""

from __future__ import annotations

from cdb.chaos.checks.verdict import Assertion, decide


def a(category: str, status: str, name: str = "x") -> Assertion:
    return Assertion(name=name, category=category, status=status)  # type: ignore[arg-type]


def test_all_pass_is_pass() -> None:
    v = decide([a("invariant", "pass"), a("fault-effect", "pass"), a("expectation", "pass")])
    assert (v.status, v.exit_code) == ("pass", 0)


def test_nothing_checked_is_unknown() -> None:
    assert decide([]).status == "unknown"


def test_a_broken_invariant_fails_even_when_a_fault_did_not_take_effect() -> None:
    v = decide([a("invariant", "fail", "no_lost_events"), a("fault-effect", "unknown")])
    assert (v.status, v.exit_code) == ("fail", 1)
    assert "no_lost_events" in v.reasons[0]


def test_a_fault_without_effect_makes_expectations_meaningless() -> None:
    v = decide([a("fault-effect", "unknown", "crash took effect"),
                a("expectation", "fail", "ess tripped"), a("invariant", "pass")])
    assert (v.status, v.exit_code) == ("unknown", 2)
    assert "crash took effect" in v.reasons[0]
    assert "ess tripped" in v.reasons[-1]


def test_failed_expectation_with_effective_faults_fails() -> None:
    v = decide([a("fault-effect", "pass"), a("measurement", "fail", "time to trip")])
    assert v.status == "fail"


def test_anything_unknown_otherwise_is_unknown() -> None:
    v = decide([a("fault-effect", "pass"), a("run", "unknown", "requires")])
    assert v.status == "unknown"


def test_steady_state_failure_is_a_failure() -> None:
    assert decide([a("steady-state", "fail")]).status == "fail"
