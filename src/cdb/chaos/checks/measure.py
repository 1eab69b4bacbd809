"""Measurements (times to detect, to trip, to recover) and expectations, computed from
the recording.

A measurement runs from a point on the timeline (``from``) until a condition first
holds: an event recorded (``trip``: the ESS going HALTED), a sampled probe within its
tolerance, or every service healthy again (``recover``; ``until: {healthy: true,
max_lag: N}`` also waits for the consumer lag to be at most N). ``detect`` is the
first sign the pipeline noticed: a warning or critical alert, an ESS trip, or a
service not healthy.
"""

from __future__ import annotations

from typing import Any

from cdb.chaos.checks import tolerance as tol
from cdb.chaos.checks.context import CheckContext
from cdb.chaos.checks.verdict import Assertion
from cdb.chaos.faults.probes import matches
from cdb.chaos.history.recording import Sample
from cdb.chaos.scenario.model import Condition, Expectation, Measurement
from cdb.chaos.scenario.timeline import TimelineError, resolve

HEALTH = "__health__"
LAG = "__lag__"
ESS = "__ess__"

_TABLES = {"signal": "signals", "order": "orders", "fill": "fills",
           "risk_decision": "risk_decisions", "order_update": "order_updates",
           "alert": "alerts", "ess_change": "ess_changes"}


def _event_times(ctx: CheckContext, kind: str, match: dict[str, Any]) -> list[float]:
    rows = ctx.union(_TABLES.get(kind, ""), kind)
    return sorted(ctx.t_of(r["ts"]) for r in rows if all(r.get(k) == v for k, v in
                                                          match.items()))


def _healthy_times(ctx: CheckContext, max_lag: int | None = None) -> list[float]:
    """Sample times when every service was healthy (and, with ``max_lag``, the lag at
    most that)."""
    lag = {s.t: s.value for s in ctx.recording.samples.get(LAG, []) if s.error is None}
    out = []
    for s in ctx.recording.samples.get(HEALTH, []):
        if s.error is None and isinstance(s.value, dict) and s.value.get("status") == "healthy":
            if max_lag is not None:
                lag_value = lag.get(s.t)
                if not isinstance(lag_value, dict) or lag_value.get("total", 0) > max_lag:
                    continue
            out.append(s.t)
    return out


def _recovered_times(ctx: CheckContext, start: float, service: str | None,
                     down_by: float | None = None) -> list[float]:
    """Healthy sample times after the first unhealthy one from ``start`` (a restart
    that has not begun yet is not a recovery); all healthy ones if none was unhealthy.
    With ``service``, that service's health alone (other faults may overlap); with
    ``down_by``, only an outage that began by then counts."""
    down = next((t for t in _unhealthy_times(ctx, service) if start <= t <= (
        down_by if down_by is not None else t)), None)
    healthy = _service_times(ctx, service, healthy=True) if service else _healthy_times(ctx)
    return healthy if down is None else [t for t in healthy if t > down]


def _service_times(ctx: CheckContext, service: str, *, healthy: bool) -> list[float]:
    out = []
    for s in ctx.recording.samples.get(HEALTH, []):
        if s.error is None and isinstance(s.value, dict):
            status = (s.value.get("services") or {}).get(service)
            if status is not None and (status == "healthy") == healthy:
                out.append(s.t)
    return out


def _unhealthy_times(ctx: CheckContext, service: str | None = None) -> list[float]:
    if service:
        return _service_times(ctx, service, healthy=False)
    return [s.t for s in ctx.recording.samples.get(HEALTH, [])
            if s.error is None and isinstance(s.value, dict) and s.value.get("status") != "healthy"]


def _service_of(ref: Any, ctx: CheckContext) -> str | None:
    """The service a timeline step's fault is about, if any (``kill risk``: risk)."""
    if not isinstance(ref, str):
        return None
    name = ref.removesuffix(".end").partition("#")[0]
    step = next((s for s in ctx.steps if s.name == name), None)
    service = step.provider.params.get("service") if step is not None else None
    return service if isinstance(service, str) and service != "*" else None


def _sample_times(samples: list[Sample], tolerance: Any) -> tuple[list[float], str]:
    times, error = [], ""
    for s in samples:
        if s.error is not None:
            error = s.error
            continue
        try:
            if tol.met(tolerance, s.value):
                times.append(s.t)
        except tol.ToleranceError as exc:
            error = str(exc)
    return times, error


def _condition_times(ctx: CheckContext, until: Condition) -> tuple[list[float], str]:
    if until.event:
        return _event_times(ctx, until.event, until.match), ""
    if until.sampled:
        samples = ctx.recording.samples.get(until.sampled, [])
        times, error = _sample_times(samples, until.tolerance)
        if not times and samples and all(s.error for s in samples):
            return [], error or "every sample failed"
        return times, ""
    return _healthy_times(ctx, until.max_lag), ""


def _bad_since(ctx: CheckContext, start: float, service: str | None,
               max_lag: int | None = None, down_by: float | None = None) -> int:
    """Samples from ``start`` on when something was there to recover from: a service
    (``service``, else any) not healthy (by ``down_by`` when given), or the lag above
    ``max_lag``."""
    bad = sum(1 for t in _unhealthy_times(ctx, service) if start <= t <= (
        down_by if down_by is not None else t))
    if max_lag is not None:
        bad += sum(1 for s in ctx.recording.samples.get(LAG, []) if s.t >= start
                   and s.error is None and isinstance(s.value, dict)
                   and s.value.get("total", 0) > max_lag)
    return bad


def _ends(m: Measurement, ctx: CheckContext, start: float,
          ) -> tuple[list[float], str, str, int | None]:
    """When the measurement's end condition held, what it is, an error, and for a
    recovery the samples there was something to recover from (else None)."""
    until = m.until
    if until is not None:
        times, error = _condition_times(ctx, until)
        bad = _bad_since(ctx, start, None, until.max_lag) if until.healthy else None
        return times, _describe(until), error, bad
    if m.kind == "trip":
        return _event_times(ctx, "ess_change", {"state": "HALTED"}), "the ESS HALTED", "", None
    if m.kind == "detect":
        # An info alert (a replay that ended, trading resumed) is news, not a detection.
        times = sorted([*_event_times(ctx, "alert", {"level": "warning"}),
                        *_event_times(ctx, "alert", {"level": "critical"}),
                        *_event_times(ctx, "ess_change", {"state": "HALTED"}),
                        *_unhealthy_times(ctx)])
        return times, "a warning, an ESS trip or a service not healthy", "", None
    service = _service_of(m.start, ctx)
    what = f"{service} healthy again" if service else "every service healthy again"
    down_by = start + m.down_within if m.down_within is not None else None
    return (_recovered_times(ctx, start, service, down_by), what, "",
            _bad_since(ctx, start, service, down_by=down_by))


def measure(m: Measurement, ctx: CheckContext) -> Assertion:
    """One measurement as an assertion (``measured`` in seconds). A recovery from
    nothing (never unhealthy after its start) and an optional event that never came
    measured nothing: unknown, never pass."""
    examined: dict[str, int] = {}

    def result(status: str, detail: str, measured: float | None = None) -> Assertion:
        return Assertion(name=m.name, category="measurement", status=status,  # type: ignore[arg-type]
                         detail=detail, measured=measured, bound=m.max, path=m.path,
                         examined=examined)

    try:
        start = resolve(m.start, ctx.steps, ctx.ended)
    except TimelineError as exc:
        return result("unknown", str(exc))
    times, what, error, bad = _ends(m, ctx, start)
    examined["events" if bad is None else "healthy_samples"] = sum(1 for t in times
                                                                   if t >= start)
    if bad is not None:
        examined["unhealthy_samples"] = bad
        if not bad:
            by = (f" to t={start + m.down_within:g}s" if m.down_within is not None and
                  m.until is None else " on")
            return result("unknown", f"nothing to recover from: never unhealthy from "
                                     f"t={start:g}s{by} (measured nothing)")
    found = next((t for t in times if t >= start), None)
    if found is None:
        if error:
            return result("unknown", f"{what}: {error}")
        if m.kind == "trip" and m.until is None and not ctx.finished:
            return result("unknown", "the run did not finish")
        if m.required:
            return result("fail", f"{what} never happened after t={start:g}s")
        return result("unknown", f"{what} did not happen after t={start:g}s (measured "
                                 "nothing)")
    took = round(found - start, 3)
    if m.max is not None and took > m.max:
        return result("fail", f"{what} after {took:g}s (max {m.max:g}s)", took)
    bound = f" (max {m.max:g}s)" if m.max is not None else ""
    return result("pass", f"{what} after {took:g}s{bound}", took)


def _describe(until: Condition) -> str:
    if until.event:
        fields = ", ".join(f"{k}={v}" for k, v in until.match.items())
        return f"a {until.event}" + (f" with {fields}" if fields else "")
    if until.sampled:
        return f"{until.sampled} {tol.describe(until.tolerance)}"
    lag = f" with lag at most {until.max_lag}" if until.max_lag is not None else ""
    return f"every service healthy{lag}"


def _window(exp: Expectation, ctx: CheckContext) -> tuple[float, float]:
    start = resolve(exp.start, ctx.steps, ctx.ended) if exp.start is not None else float("-inf")
    end = resolve(exp.end, ctx.steps, ctx.ended) if exp.end is not None else float("inf")
    return start, end


def expect(exp: Expectation, ctx: CheckContext, end_value: tuple[Any, str | None] | None,
           ) -> Assertion:
    """One expectation as an assertion. ``end_value`` is the output (or error) of its
    probe at the end of the run, for probe expectations."""

    def result(status: str, detail: str) -> Assertion:
        return Assertion(name=exp.name, category="expectation", status=status,  # type: ignore[arg-type]
                         detail=detail, path=exp.path)

    try:
        start, end = _window(exp, ctx)
    except TimelineError as exc:
        return result("unknown", str(exc))
    if exp.probe is not None:
        if end_value is None:
            return result("unknown", "the probe did not run (the run ended early)")
        value, error = end_value
        if error is not None:
            return result("unknown", f"the probe could not run: {error}")
        return _judge(exp.tolerance, value, result)
    if exp.sampled is not None:
        return _sampled(exp, ctx, start, end, result)
    assert exp.event is not None
    rows = ctx.union(_TABLES.get(exp.event, ""), exp.event)
    count = sum(1 for r in rows if start <= ctx.t_of(r["ts"]) <= end
                and all(r.get(k) == v for k, v in exp.match.items()))
    wanted = exp.count if exp.count is not None else {"type": "range", "range": [1, None]}
    try:
        ok = tol.met(wanted, count)
    except tol.ToleranceError as exc:
        return result("unknown", str(exc))
    fields = ", ".join(f"{k}={v}" for k, v in exp.match.items())
    what = f"{count} {exp.event} event(s)" + (f" with {fields}" if fields else "")
    return result("pass" if ok else "fail", f"{what}, wanted {tol.describe(wanted)}")


def _sampled(exp: Expectation, ctx: CheckContext, start: float, end: float,
             result: Any) -> Assertion:
    assert exp.sampled is not None
    samples = [s for s in ctx.recording.samples.get(exp.sampled, []) if start <= s.t <= end]
    usable = [s for s in samples if s.error is None]
    if not usable:
        why = samples[-1].error if samples else "no samples in the window"
        out: Assertion = result("unknown", f"{exp.sampled}: {why}")
        return out
    try:
        hits = [s for s in usable if tol.met(exp.tolerance, s.value)]
    except tol.ToleranceError as exc:
        out = result("unknown", str(exc))
        return out
    want = tol.describe(exp.tolerance)
    n = len(usable)
    if exp.when == "last":
        return _judge(exp.tolerance, usable[-1].value, result)
    if exp.when == "always":
        bad = next((s for s in usable if s not in hits), None)
        out = result("pass", f"all {n} samples {want}") if bad is None else result(
            "fail", f"at t={bad.t:g}s {exp.sampled} was {bad.value!r}, not {want}")
    elif exp.when == "never":
        out = result("pass", f"none of {n} samples {want}") if not hits else result(
            "fail", f"at t={hits[0].t:g}s {exp.sampled} was {hits[0].value!r} ({want})")
    else:
        out = result("pass", f"{want} at t={hits[0].t:g}s") if hits else result(
            "fail", f"never {want} in {n} samples (last {usable[-1].value!r})")
    return out


def _judge(tolerance: Any, value: Any, result: Any) -> Assertion:
    try:
        ok = tol.met(tolerance, value)
    except tol.ToleranceError as exc:
        out: Assertion = result("unknown", str(exc))
        return out
    shown = repr(value)
    if isinstance(value, dict):
        shown = repr(next((value[k] for k in ("status", "state") if k in value), value))
    if len(shown) > 200:
        shown = shown[:200] + "..."
    out = result("pass" if ok else "fail", f"{shown} {'meets' if ok else 'does not meet'} "
                                          f"{tol.describe(tolerance)}")
    return out


__all__ = ["ESS", "HEALTH", "LAG", "expect", "matches", "measure"]
