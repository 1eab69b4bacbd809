"""Leak detection: resources sampled through a run, and a slope test over them.

The ``resources`` probe reads, per service, its resident memory and open file
descriptors (the process collector's ``process_resident_memory_bytes`` and
``process_open_fds`` on its /metrics: distributed mode, one process per service) and
its asyncio tasks (embedded mode: the tasks named after it in the one process), and
Redis's memory and the length of each stream. ``analyse`` fits a line to each series
over the second half of the run (after warm-up and the first faults have settled): a
series that grows by more than its threshold over that half is flagged. Only service
series decide the check; Redis and stream lengths are shown and flagged as notes
(streams grow with traffic unless trimmed). The soak's report draws them
(``chaos.soak.report.chart``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

import msgspec

from cdb.bus.keys import ALL_STREAMS
from cdb.chaos.checks.verdict import Assertion
from cdb.chaos.faults.base import StepContext
from cdb.chaos.faults.probes import ProbeError, metric_value
from cdb.chaos.history.recording import Sample
from cdb.chaos.scenario.params import Params
from cdb.chaos.scenario.registry import PROBES, P

PROBE_NAME: Final = "resources"


class Threshold(msgspec.Struct, frozen=True, kw_only=True):
    """Growth over the second half that counts as a leak: above ``relative`` of the
    series' mean AND above ``absolute`` (noise in a small number is not a leak)."""

    relative: float
    absolute: float


THRESHOLDS: Final[dict[str, Threshold]] = {
    "rss": Threshold(relative=0.10, absolute=8 * 1024 * 1024),
    "fds": Threshold(relative=0.20, absolute=8),
    "tasks": Threshold(relative=0.20, absolute=8),
    "redis_memory": Threshold(relative=0.20, absolute=4 * 1024 * 1024),
    "stream": Threshold(relative=0.20, absolute=1000),
}
MIN_POINTS: Final = 4
"""Samples the second half needs for a fit (fewer: the series is not judged)."""


def _tasks_by_service(services: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(services, 0)
    for task in asyncio.all_tasks():
        owner = task.get_name().split(".", 1)[0]
        if owner in counts and not task.done():
            counts[owner] += 1
    return counts


@PROBES.register(PROBE_NAME, summary="per service: resident memory, open file descriptors "
                 "(distributed) and asyncio tasks (embedded); Redis memory and stream "
                 "lengths (for the soak's leak check)", params={
                     "streams": P.boolean("also the stream lengths (default true)")})
async def resources(ctx: StepContext, p: Params) -> Any:
    target = ctx.target
    services: dict[str, dict[str, float]] = {}
    embedded = target.mode == "embedded"
    tasks = _tasks_by_service(list(target.services)) if embedded else {}
    for service in target.services:
        values: dict[str, float] = {}
        if embedded:
            values["tasks"] = float(tasks.get(service, 0))
        else:
            with contextlib.suppress(ProbeError, OSError, Exception):
                text = await target.metrics_text(service)
                values["rss"] = metric_value(text, "process_resident_memory_bytes", {})
                values["fds"] = metric_value(text, "process_open_fds", {})
        services[service] = values
    out: dict[str, Any] = {"services": services}
    memory = await target.redis_memory()
    if memory is not None:
        out["redis_memory"] = memory
    if p.get("streams", True):
        streams: dict[str, int] = {}
        for stream in ALL_STREAMS:
            with contextlib.suppress(Exception):
                streams[stream] = int((await target.stream_info(stream)).get("length", 0))
        out["streams"] = streams
    return out


def probe_document(every: str | None = None) -> dict[str, Any]:
    """The sampled probe a soak adds to its scenario."""
    doc: dict[str, Any] = {"name": PROBE_NAME, "provider": {"type": PROBE_NAME}}
    if every is not None:
        doc["every"] = every
    return doc


class Series(msgspec.Struct, kw_only=True):
    """One sampled quantity: ``subject`` (a service, ``redis``, a stream) and ``metric``."""

    subject: str
    metric: str
    points: list[tuple[float, float]]
    slope_per_s: float | None = None
    growth: float | None = None
    """Fitted growth over the second half (slope x its length)."""
    threshold: float | None = None
    flagged: bool = False
    decides: bool = True
    """Service series decide the check; Redis and streams are notes."""


def series_of(samples: list[Sample]) -> list[Series]:
    """The ``resources`` samples as one series per subject and metric."""
    found: dict[tuple[str, str], Series] = {}

    def add(subject: str, metric: str, t: float, value: float, decides: bool) -> None:
        key = (subject, metric)
        if key not in found:
            found[key] = Series(subject=subject, metric=metric, points=[], decides=decides)
        found[key].points.append((t, value))

    for s in samples:
        if s.error is not None or not isinstance(s.value, dict):
            continue
        for service, values in (s.value.get("services") or {}).items():
            for metric, value in values.items():
                add(service, metric, s.t, float(value), True)
        if "redis_memory" in s.value:
            add("redis", "redis_memory", s.t, float(s.value["redis_memory"]), False)
        for stream, length in (s.value.get("streams") or {}).items():
            add(stream, "stream", s.t, float(length), False)
    return list(found.values())


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``points`` (value per second)."""
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in points) / var


def analyse(series: list[Series]) -> list[Series]:
    """Fit each series over its second half; flag growth above its threshold."""
    for s in series:
        if len(s.points) < 2:
            continue
        t0, t1 = s.points[0][0], s.points[-1][0]
        half = [p for p in s.points if p[0] >= (t0 + t1) / 2]
        if len(half) < MIN_POINTS:
            continue
        s.slope_per_s = slope(half)
        span = half[-1][0] - half[0][0]
        s.growth = s.slope_per_s * span
        mean = sum(v for _, v in half) / len(half)
        limit = THRESHOLDS[s.metric]
        s.threshold = max(limit.relative * mean, limit.absolute)
        s.flagged = s.growth > s.threshold
    return series


def assertion(series: list[Series]) -> Assertion:
    """The leak check under the vacuity rule: no service series judged is unknown."""
    judged = [s for s in series if s.decides and s.growth is not None]
    flagged = [s for s in judged if s.flagged]
    notes = [s for s in series if not s.decides and s.flagged]
    examined = {"series": len(judged), "services": len({s.subject for s in judged}),
                "samples": sum(len(s.points) for s in judged)}
    evidence = [f"{s.subject} {s.metric} grew {amount(s.metric, s.growth or 0)} over the "
                f"second half (limit {amount(s.metric, s.threshold or 0)})" for s in flagged]
    note = ("; growing (not judged): " + ", ".join(f"{s.subject} {s.metric}" for s in notes)
            if notes else "")
    if not judged:
        return Assertion(name="no_leaks", category="invariant", status="unknown",
                         detail="no resource series long enough to judge (measured nothing)",
                         examined=examined)
    if flagged:
        return Assertion(name="no_leaks", category="invariant", status="fail",
                         detail="; ".join(evidence) + note, evidence=tuple(evidence),
                         examined=examined)
    return Assertion(name="no_leaks", category="invariant", status="pass",
                     detail=f"{len(judged)} series of {examined['services']} service(s) "
                            f"flat over the second half{note}", examined=examined)


def amount(metric: str, value: float) -> str:
    if metric in ("rss", "redis_memory"):
        return f"{value / 1024 / 1024:.1f} MiB"
    return f"{value:.0f}"
