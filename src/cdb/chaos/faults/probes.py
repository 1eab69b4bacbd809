"""Probes: what the coordinator can ask the running pipeline.

``health`` (the ``/health`` body, or the worst status of all services), ``metric``
(a Prometheus sample from ``/metrics``, parsed with prometheus_client), ``sql`` (on
the pipeline's database, in its namespace), ``stream`` (length, entries added,
dead letters, groups), ``lag`` (events not yet acknowledged), ``ess`` (the emergency
stop's state), ``events`` (what the coordinator recorded on the bus), and Chaos
Toolkit's ``http``, ``process`` and ``python`` providers, which also serve as
actions. A probe returns a JSON-able value; tolerances are applied by the caller.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import shlex
from decimal import Decimal
from typing import Any, Final

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cdb.bus.keys import ALL_STREAMS, SERVICES
from cdb.chaos.faults.base import StepContext
from cdb.chaos.scenario.params import Params
from cdb.chaos.scenario.registry import ACTIONS, PROBES, P
from cdb.chaos.scenario.schema import EVENT_KINDS

_RANK: Final = {"healthy": 0, "degraded": 1, "unhealthy": 2, "unreachable": 3}


class ProbeError(Exception):
    """The probe ran but got no usable answer (a typo in a metric name, bad SQL)."""


@PROBES.register("health", summary="a service's /health body; with service '*' the worst "
                 "status of all", params={"service": P.string(enum=["*", *SERVICES])})
async def health(ctx: StepContext, p: Params) -> Any:
    service = p.text("service", "*")
    target = ctx.target
    if service != "*":
        return await target.health(service)
    bodies = await asyncio.gather(*(target.health(s) for s in target.services))
    statuses = {s: str(b.get("status")) for s, b in zip(target.services, bodies, strict=True)}
    worst = max(statuses.values(), key=lambda s: _RANK.get(s, 3))
    return {"status": worst, "services": statuses}


@PROBES.register("metric", summary="the value of a Prometheus metric of a service (summed "
                 "over matching samples)",
                 params={"service": P.string(enum=list(SERVICES)), "name": P.string(
                     "metric or sample name, e.g. cdb_risk_rejections_total"),
                     "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                     "agg": P.string(enum=["sum", "max", "min", "count"]),
                     "rate_over": P.duration("give the rate per second over this window "
                                             "(two scrapes) instead of the value")},
                 required=("service", "name"))
async def metric(ctx: StepContext, p: Params) -> Any:
    service, name = p.text("service"), p.text("name")
    want = {"service": service, "instance": ctx.target.instance_of(service),
            **dict(p.get("labels") or {})}
    agg = p.text("agg", "sum")
    first = metric_value(await ctx.target.metrics_text(service), name, want, agg)
    window = p.duration("rate_over", 0.0)
    if window <= 0:
        return first
    # Per second of scenario time: the wall in distributed mode, the simulated market's
    # time in embedded mode (where the counters move with it).
    t0 = ctx.clock.now()
    await ctx.clock.sleep_until(t0 + window)
    second = metric_value(await ctx.target.metrics_text(service), name, want, agg)
    return (second - first) / max(ctx.clock.now() - t0, 1e-9)


def metric_value(text: str, name: str, labels: dict[str, str], agg: str = "sum") -> float:
    """Aggregate the samples named ``name`` (or ``name_total``) carrying ``labels``.

    A family that exists without a matching sample gives 0 (a counter never
    incremented for those labels); no such family raises ``ProbeError``.
    """
    found_family = False
    values: list[float] = []
    for family in text_string_to_metric_families(text):
        found_family = found_family or family.name in (name, name.removesuffix("_total"))
        for sample in family.samples:
            if sample.name not in (name, f"{name}_total") and family.name != name:
                continue
            if family.name == name and sample.name not in (name, f"{name}_total"):
                continue  # _created and bucket samples of the same family
            found_family = True
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                values.append(float(sample.value))
    if not found_family:
        raise ProbeError(f"no metric {name!r} in /metrics")
    if agg == "count":
        return float(len(values))
    if not values:
        return 0.0
    if agg == "max":
        return max(values)
    if agg == "min":
        return min(values)
    return sum(values)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode(errors="replace")
    return value


@PROBES.register("sql", summary="a query on the pipeline's database (its namespace); one "
                 "row of one column gives that value", params={"query": P.string()},
                 required=("query",))
async def sql(ctx: StepContext, p: Params) -> Any:
    rows = await ctx.target.sql(p.text("query"))
    rows = [{k: _plain(v) for k, v in row.items()} for row in rows]
    if len(rows) == 1 and len(rows[0]) == 1:
        return next(iter(rows[0].values()))
    return rows


@PROBES.register("stream", summary="a stream's length, entries added, dead letters or groups",
                 params={"stream": P.string(enum=list(ALL_STREAMS)), "measure": P.string(
                     enum=["length", "entries_added", "dead_lettered", "groups", "all"])},
                 required=("stream",))
async def stream(ctx: StepContext, p: Params) -> Any:
    info = await ctx.target.stream_info(p.text("stream"))
    measure = p.text("measure", "all")
    return info if measure == "all" else info.get(measure)


@PROBES.register("lag", summary="events not yet acknowledged (pending and undelivered), "
                 "summed over streams and consumer groups",
                 params={"stream": P.string(enum=list(ALL_STREAMS)),
                         "group": P.string(enum=list(SERVICES))})
async def lag(ctx: StepContext, p: Params) -> Any:
    by_stream = await ctx.target.lag()
    want_stream, want_group = p.get("stream"), p.get("group")
    return sum(
        n for s, groups in by_stream.items() if want_stream in (None, s)
        for g, n in groups.items() if want_group in (None, g)
    )


@PROBES.register("ess", summary="the emergency stop's state (ACTIVE or HALTED) and reason")
async def ess(ctx: StepContext, p: Params) -> Any:
    return await ctx.target.ess()


@PROBES.register("events", summary="how many events of a kind the coordinator recorded on "
                 "the bus so far (optionally with field values)",
                 params={"kind": P.string(enum=EVENT_KINDS), "match": {"type": "object"}},
                 required=("kind",))
async def events(ctx: StepContext, p: Params) -> Any:
    match = dict(p.get("match") or {})
    return sum(1 for r in ctx.recording.of(p.text("kind")) if matches(r.event, match))


def matches(event: Any, match: dict[str, Any]) -> bool:
    """Whether ``event`` has every field value of ``match``."""
    return all(getattr(event, k, None) == v for k, v in match.items())


# -- Chaos Toolkit providers --------------------------------------------------------------

_HTTP = {"url": P.string(), "method": P.string(enum=["GET", "POST", "PUT", "DELETE",
                                                     "PATCH", "HEAD"]),
         "headers": {"type": "object", "additionalProperties": {"type": "string"}},
         "arguments": P.anything("JSON body"), "timeout": P.duration()}
_PROCESS = {"path": P.string(), "arguments": {"type": ["array", "string"]},
            "timeout": P.duration()}
_PYTHON = {"module": P.string(), "func": P.string(), "arguments": {"type": "object"}}


async def http(ctx: StepContext, p: Params) -> Any:
    async with httpx.AsyncClient(timeout=p.duration("timeout", 10.0)) as client:
        response = await client.request(p.text("method", "GET"), p.text("url"),
                                        headers=p.get("headers"), json=p.get("arguments"))
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return {"status": response.status_code, "body": body}


async def process(ctx: StepContext, p: Params) -> Any:
    args = p.get("arguments") or []
    argv = [p.text("path"), *(shlex.split(args) if isinstance(args, str) else map(str, args))]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(p.duration("timeout", 60.0)):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ProbeError(f"{argv[0]} did not finish in time") from None
    return {"status": proc.returncode, "stdout": out.decode(errors="replace"),
            "stderr": err.decode(errors="replace")}


async def python(ctx: StepContext, p: Params) -> Any:
    module = importlib.import_module(p.text("module"))
    func = getattr(module, p.text("func"))
    result = func(**dict(p.get("arguments") or {}))
    if inspect.isawaitable(result):
        result = await result
    return result


for _name, _fn, _params, _req, _summary in (
    ("http", http, _HTTP, ("url",), "an HTTP request (Chaos Toolkit's http provider)"),
    ("process", process, _PROCESS, ("path",), "a command (Chaos Toolkit's process provider)"),
    ("python", python, _PYTHON, ("module", "func"),
     "a Python function (Chaos Toolkit's python provider)"),
):
    PROBES.register(_name, summary=_summary, params=_params, required=_req)(_fn)
    ACTIONS.register(_name, summary=_summary, params=_params, required=_req)(_fn)
