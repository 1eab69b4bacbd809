"""Leak detection: a line fitted over the second half flags growth, not noise or a
warm-up, and only service series decide."""

from __future__ import annotations

from cdb.chaos.checks.leaks import analyse, assertion, series_of, slope
from cdb.chaos.history.recording import Sample
from cdb.chaos.soak.report import chart


def _samples(execution: list[float], risk: list[float]) -> list[Sample]:
    return [Sample(t=float(i), value={"services": {"execution": {"tasks": e},
                                                   "risk": {"tasks": r}},
                                      "streams": {"stream.fills": i * 100}})
            for i, (e, r) in enumerate(zip(execution, risk, strict=True))]


def test_slope_is_the_least_squares_fit() -> None:
    assert slope([(0, 1), (1, 3), (2, 5)]) == 2
    assert slope([(0, 4), (1, 4)]) == 0


def test_a_growing_service_is_flagged_and_a_flat_one_is_not() -> None:
    leaking = [20 + 5 * i for i in range(40)]
    flat = [20 + (i % 3) for i in range(40)]
    series = analyse(series_of(_samples(leaking, flat)))
    flagged = {(s.subject, s.metric) for s in series if s.flagged and s.decides}
    assert flagged == {("execution", "tasks")}
    check = assertion(series)
    assert check.status == "fail"
    assert "execution tasks grew" in check.detail
    assert "risk" not in check.detail.split(";")[0]
    assert "(leak)" in chart(series)


def test_a_warm_up_in_the_first_half_is_not_a_leak() -> None:
    warm = [5 + 2 * i if i < 15 else 35 for i in range(40)]
    check = assertion(analyse(series_of(_samples(warm, warm))))
    assert check.status == "pass", check.detail


def test_streams_growing_are_a_note_not_a_failure() -> None:
    flat = [20.0] * 40
    check = assertion(analyse(series_of(_samples(flat, flat))))
    assert check.status == "pass"
    assert "stream.fills" in check.detail


def test_nothing_to_judge_is_unknown_never_pass() -> None:
    check = assertion(analyse(series_of(_samples([1, 2], [1, 2]))))
    assert check.status == "unknown"
    assert check.examined["series"] == 0
