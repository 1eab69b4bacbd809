"""Measurements (detect, trip, recover) and expectations over a recording."""

from __future__ import annotations

from typing import Any

from tests.unit.chaos.test_invariants import CLEAN, S, context, ess

from cdb.chaos.checks.measure import expect, measure
from cdb.chaos.scenario.model import Condition, Expectation, Measurement, Provider
from cdb.chaos.scenario.timeline import expand


def m(**kw: Any) -> Measurement:
    return Measurement(name=kw.pop("name", "m"), path="$.m", **kw)


def test_time_to_trip_from_a_point_in_time() -> None:
    ctx = context([*CLEAN, ess("HALTED", 7 * S)])
    result = measure(m(start=5.0, kind="trip", max=3.0), ctx)
    assert (result.status, result.measured) == ("pass", 2.0)
    late = measure(m(start=5.0, kind="trip", max=1.0), ctx)
    assert late.status == "fail"


def test_a_trip_that_never_happens_fails_when_required() -> None:
    ctx = context(CLEAN)
    assert measure(m(start=0.0, kind="trip", max=5.0), ctx).status == "fail"
    optional = measure(m(start=0.0, kind="trip", required=False), ctx)
    assert optional.status == "unknown"  # it measured nothing
    assert "measured nothing" in optional.detail


def test_recover_and_detect_from_health_samples() -> None:
    ctx = context(CLEAN)
    for t, status in ((1.0, "healthy"), (2.0, "degraded"), (3.0, "degraded"), (4.5, "healthy")):
        ctx.recording.sample("__health__", t, {"status": status})
        ctx.recording.sample("__lag__", t, {"total": 0 if t > 4 else 9})
    assert measure(m(start=1.5, kind="detect"), ctx).measured == 0.5
    assert measure(m(start=3.0, kind="recover"), ctx).measured == 1.5
    joint = measure(m(start=0.0, until=Condition(healthy=True, max_lag=0)), ctx)
    assert joint.measured == 4.5


def test_a_recovery_from_nothing_is_unknown() -> None:
    """Never unhealthy after the start: the first healthy sample proves nothing."""
    ctx = context(CLEAN)
    for t in (1.0, 2.0, 3.0):
        ctx.recording.sample("__health__", t, {"status": "healthy"})
        ctx.recording.sample("__lag__", t, {"total": 0})
    result = measure(m(start=1.5, kind="recover", max=5.0), ctx)
    assert result.status == "unknown"
    assert "nothing to recover from" in result.detail
    assert result.examined["unhealthy_samples"] == 0
    joint = measure(m(start=0.0, until=Condition(healthy=True, max_lag=0)), ctx)
    assert joint.status == "unknown"


def test_measure_until_a_sampled_probe_meets_its_tolerance() -> None:
    ctx = context(CLEAN)
    for t, value in ((1.0, 5), (2.0, 3), (3.0, 0)):
        ctx.recording.sample("depth", t, value)
    cond = Condition(sampled="depth", tolerance={"type": "range", "range": [None, 1]})
    assert measure(m(start=0.5, until=cond), ctx).measured == 2.5


def test_sampled_expectations_always_eventually_never_last() -> None:
    ctx = context(CLEAN)
    for t, value in ((1.0, "ok"), (2.0, "bad"), (3.0, "ok")):
        ctx.recording.sample("probe", t, value)

    def e(when: str, **kw: Any) -> str:
        exp = Expectation(name="e", path="$.e", sampled="probe", tolerance="ok", when=when,
                          **kw)  # type: ignore[arg-type]
        return expect(exp, ctx, None).status

    assert e("always") == "fail"
    assert e("always", start=2.5) == "pass"
    assert e("eventually") == "pass"
    assert e("never") == "fail"
    assert e("last") == "pass"
    assert e("always", start=10.0) == "unknown"  # no samples in the window


def test_event_expectations_count_in_a_window() -> None:
    ctx = context([*CLEAN, ess("HALTED", 7 * S)])
    ctx.steps = expand([])
    halted = Expectation(name="e", path="$.e", event="ess_change", match={"state": "HALTED"})
    assert expect(halted, ctx, None).status == "pass"
    before = Expectation(name="e", path="$.e", event="ess_change", end=6.0)
    assert expect(before, ctx, None).status == "fail"
    orders = Expectation(name="e", path="$.e", event="order",
                         count={"type": "range", "range": [2, 2]})
    assert expect(orders, ctx, None).status == "pass"


def test_probe_expectations_judge_the_final_value_or_say_unknown() -> None:
    ctx = context(CLEAN)
    exp = Expectation(name="e", path="$.e", tolerance=3,
                      probe=Provider(type="sql", params={"query": "select 3"}))
    assert expect(exp, ctx, (3, None)).status == "pass"
    assert expect(exp, ctx, (4, None)).status == "fail"
    assert expect(exp, ctx, (None, "unavailable: no ESS")).status == "unknown"


def test_recovery_of_the_faulted_service_ignores_overlapping_faults() -> None:
    from cdb.chaos.scenario.model import TimelineEntry

    ctx = context(CLEAN)
    ctx.steps = expand([TimelineEntry(name="kill risk", at=1.0, path="$.k",
                                      fault=Provider(type="kill", params={"service": "risk"}))])
    states = [(1.0, "healthy", "healthy"), (2.0, "unreachable", "healthy"),
              (3.0, "healthy", "unreachable"), (4.0, "healthy", "healthy")]
    for t, risk, execution in states:
        worst = "healthy" if risk == execution == "healthy" else "unreachable"
        ctx.recording.sample("__health__", t, {"status": worst, "services": {
            "risk": risk, "execution": execution}})
    result = measure(m(start="kill risk", kind="recover"), ctx)
    assert result.measured == 2.0
    assert "risk healthy again" in result.detail


def test_a_recovery_with_down_within_ignores_a_later_outage() -> None:
    """The soak bounds when a fault's outage may begin: a service unhealthy long after
    (another fault's doing) is not this fault's recovery: nothing to recover from."""
    ctx = context(CLEAN)
    for t, status in ((1.0, "healthy"), (2.0, "healthy"), (30.0, "degraded"),
                      (31.0, "healthy")):
        ctx.recording.sample("__health__", t, {"status": status})
    later = measure(m(start=1.5, kind="recover", max=5.0, down_within=4.0), ctx)
    assert later.status == "unknown"
    assert "never unhealthy from t=1.5s to t=5.5s" in later.detail
    unbounded = measure(m(start=1.5, kind="recover", max=5.0), ctx)
    assert (unbounded.status, unbounded.measured) == ("fail", 29.5)
    inside = measure(m(start=28.0, kind="recover", max=5.0, down_within=4.0), ctx)
    assert (inside.status, inside.measured) == ("pass", 3.0)
