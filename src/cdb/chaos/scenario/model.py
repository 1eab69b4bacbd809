"""The scenario as frozen Structs, built from a document the schema has accepted.

Durations are seconds (floats) from here on. Provider parameters stay a mapping: each
fault, action or probe converts its own into a typed value when it is built, since
only it knows their meaning (the registry's schema has already checked them).

A scenario file is code: Chaos Toolkit's ``process``, ``python`` and ``http``
providers run commands, import functions and send requests as the user, and
``configuration`` entries of ``type: env`` read the user's environment. ``build``
lists each of those in ``Scenario.executes`` (``cdb scenario run`` refuses them
without ``--allow-exec``), and ``mask_secrets`` hides the values read from the
environment wherever the scenario is shown again (reports, messages).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from cdb.bus.keys import SERVICES
from cdb.chaos.scenario.registry import MODES, parse_duration
from cdb.urls import redact_url

Mode = Literal["embedded", "distributed"]


class Provider(msgspec.Struct, frozen=True, kw_only=True):
    """A fault, action or probe with its parameters (``type`` names the registry entry)."""

    type: str
    params: dict[str, Any]
    path: str = ""
    """JSON path in the file, for messages."""

    @classmethod
    def of(cls, data: dict[str, Any], path: str = "") -> Provider:
        params = {k: v for k, v in data.items() if k != "type"}
        return cls(type=str(data["type"]), params=params, path=path)


class Repeat(msgspec.Struct, frozen=True, kw_only=True):
    times: int
    every: float


class TimelineEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of ``timeline`` as written (groups not yet expanded)."""

    name: str
    at: float
    path: str
    duration: float | None = None
    repeat: Repeat | None = None
    fault: Provider | None = None
    action: Provider | None = None
    probe: Provider | None = None
    tolerance: Any = None
    parallel: tuple[TimelineEntry, ...] = ()


class Activity(msgspec.Struct, frozen=True, kw_only=True):
    """A Chaos Toolkit activity (method, rollbacks, steady-state probes)."""

    type: Literal["action", "probe"]
    name: str
    provider: Provider
    path: str
    tolerance: Any = None
    has_tolerance: bool = False
    duration: float | None = None
    pause_before: float = 0.0
    pause_after: float = 0.0
    background: bool = False


class SteadyState(msgspec.Struct, frozen=True, kw_only=True):
    title: str
    probes: tuple[Activity, ...]


class SampledProbe(msgspec.Struct, frozen=True, kw_only=True):
    """A probe sampled periodically through the run."""

    name: str
    every: float | None
    provider: Provider


class InvariantSpec(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    params: dict[str, Any]
    path: str


class Condition(msgspec.Struct, frozen=True, kw_only=True):
    """What ends a measurement: an event, a sampled probe within tolerance, or health."""

    event: str | None = None
    match: dict[str, Any] = msgspec.field(default_factory=dict)
    sampled: str | None = None
    tolerance: Any = None
    healthy: bool = False
    max_lag: int | None = None


TimeRef = str | float


class Expectation(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    path: str
    probe: Provider | None = None
    sampled: str | None = None
    event: str | None = None
    match: dict[str, Any] = msgspec.field(default_factory=dict)
    tolerance: Any = None
    count: Any = None
    when: Literal["always", "eventually", "never", "last"] = "eventually"
    start: TimeRef | None = None
    end: TimeRef | None = None
    reason: str = ""


class Measurement(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    path: str
    start: TimeRef
    kind: Literal["detect", "trip", "recover"] | None = None
    until: Condition | None = None
    max: float | None = None
    required: bool = True
    down_within: float | None = None
    """``recover``: the outage must begin within this many seconds of ``start``."""


class Market(msgspec.Struct, frozen=True, kw_only=True):
    source: Literal["synthetic", "fake-binance"] = "synthetic"
    """synthetic: ws generates the market; fake-binance: the same market prints on the
    fake Binance, and ws takes it from its websocket stream (distributed mode)."""
    symbols: tuple[str, ...] = ("BTCUSDT",)
    trades_per_s: float = 50.0
    bursts_per_hour: float = 0.0
    speed: float | None = None
    """None: as fast as the pipeline goes (embedded); 1.0 real time."""
    warmup: float = 10.0
    shapes: tuple[dict[str, Any], ...] = ()


class Strategy(msgspec.Struct, frozen=True, kw_only=True):
    id: str = "momentum"
    threshold_pct: float | None = None
    min_volume: float | None = None
    lookback: float | None = None


class Pipeline(msgspec.Struct, frozen=True, kw_only=True):
    mode: Mode = "embedded"
    modes: tuple[Mode, ...] = ("embedded", "distributed")
    services: tuple[str, ...] = SERVICES
    market: Market = msgspec.field(default_factory=Market)
    venue: Literal["paper", "fake-binance"] = "paper"
    strategy: Strategy = msgspec.field(default_factory=Strategy)
    limits: dict[str, float] = msgspec.field(default_factory=dict)
    ess: dict[str, Any] = msgspec.field(default_factory=dict)
    redis_persistence: Literal["aof", "none"] = "aof"
    proxy: Literal["auto", "always", "never"] = "auto"
    settings: dict[str, str] = msgspec.field(default_factory=dict)
    requires: tuple[str, ...] = ()


MASK = "***"
_MIN_SECRET_LEN = 4
"""Shorter values read from the environment are masked only where they are a whole
string: masking "5" inside every text would make reports unreadable."""


class Execution(msgspec.Struct, frozen=True, kw_only=True):
    """Something a scenario file makes cdb run or read as the user."""

    path: str
    kind: Literal["process", "python", "http", "env"]
    what: str


class Scenario(msgspec.Struct, frozen=True, kw_only=True):
    """A validated scenario."""

    title: str
    file: str
    document: dict[str, Any]
    """The document after substitutions (the journal's ``experiment``)."""
    description: str = ""
    tags: tuple[str, ...] = ()
    seed: int = 1
    duration: float | None = None
    settle: float = 10.0
    sample_every: float = 1.0
    pipeline: Pipeline = msgspec.field(default_factory=Pipeline)
    steady_state: SteadyState | None = None
    method: tuple[Activity, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()
    rollbacks: tuple[Activity, ...] = ()
    probes: tuple[SampledProbe, ...] = ()
    invariants: tuple[InvariantSpec, ...] = ()
    expect: tuple[Expectation, ...] = ()
    measurements: tuple[Measurement, ...] = ()
    executes: tuple[Execution, ...] = ()
    """Commands, functions, requests and environment reads in the file (``--allow-exec``)."""
    secrets: tuple[str, ...] = ()
    """Values read from the environment: masked in every report."""


def mask_secrets(value: Any, secrets: tuple[str, ...] | list[str]) -> Any:
    """``value`` (JSON-like) with each of ``secrets`` replaced by ``***`` in its strings."""
    if not secrets:
        return value
    long = sorted((s for s in secrets if len(s) >= _MIN_SECRET_LEN), key=len, reverse=True)
    whole = set(secrets)

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            if item in whole:
                return MASK
            for secret in long:
                item = item.replace(secret, MASK)
            return item
        if isinstance(item, dict):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [walk(v) for v in item]
        return item

    return walk(value)


def _shown_args(args: Any) -> str:
    if isinstance(args, str):
        return args
    if isinstance(args, list):
        return " ".join(str(a) for a in args)
    return ""


def _execution(provider: Provider) -> Execution | None:
    p = provider.params
    if provider.type == "process":
        command = f"{p.get('path', '')} {_shown_args(p.get('arguments'))}".strip()
        return Execution(path=provider.path, kind="process",
                         what=f"runs the command {command[:200]!r}")
    if provider.type == "python":
        return Execution(path=provider.path, kind="python",
                         what=f"calls the Python function {p.get('module')}.{p.get('func')}")
    if provider.type == "http":
        return Execution(path=provider.path, kind="http",
                         what=f"sends an HTTP {p.get('method', 'GET')} request to "
                              f"{redact_url(str(p.get('url', '')))[:200]}")
    return None


def _providers(scenario: Scenario) -> list[Provider]:
    found: list[Provider] = []

    def entries(items: tuple[TimelineEntry, ...]) -> None:
        for e in items:
            found.extend(p for p in (e.fault, e.action, e.probe) if p is not None)
            entries(e.parallel)

    entries(scenario.timeline)
    found += [a.provider for a in (*scenario.method, *scenario.rollbacks)]
    if scenario.steady_state is not None:
        found += [a.provider for a in scenario.steady_state.probes]
    found += [p.provider for p in scenario.probes]
    found += [e.probe for e in scenario.expect if e.probe is not None]
    return found


def _executions(scenario: Scenario, document: dict[str, Any]) -> tuple[Execution, ...]:
    out: list[Execution] = []
    config = document.get("configuration")
    if isinstance(config, dict):
        for key, value in config.items():
            if isinstance(value, dict) and value.get("type") == "env":
                out.append(Execution(path=f"$.configuration.{key}", kind="env",
                                     what=f"reads the environment variable {value.get('key')}"))
    out += [e for e in map(_execution, _providers(scenario)) if e is not None]
    return tuple(out)


# -- building from a validated document --------------------------------------------------


def _d(value: Any, default: float | None = None) -> float | None:
    return default if value is None else parse_duration(value)


def _provider(data: Any, path: str) -> Provider | None:
    return Provider.of(data, path) if isinstance(data, dict) else None


def _entry(data: dict[str, Any], path: str, index: int) -> TimelineEntry:
    repeat = data.get("repeat")
    return TimelineEntry(
        name=str(data.get("name") or f"step-{path.replace('$.', '')}"),
        at=_d(data.get("at"), 0.0) or 0.0,
        path=path,
        duration=_d(data.get("duration")),
        repeat=Repeat(times=int(repeat["times"]), every=parse_duration(repeat["every"]))
        if repeat else None,
        fault=_provider(data.get("fault"), f"{path}.fault"),
        action=_provider(data.get("action"), f"{path}.action"),
        probe=_provider(data.get("probe"), f"{path}.probe"),
        tolerance=data.get("tolerance"),
        parallel=tuple(
            _entry(child, f"{path}.parallel[{i}]", i)
            for i, child in enumerate(data.get("parallel") or [])
        ),
    )


def _activity(data: dict[str, Any], path: str) -> Activity:
    pauses = data.get("pauses") or {}
    return Activity(
        type=data["type"], name=data["name"], provider=Provider.of(data["provider"],
                                                                   f"{path}.provider"),
        path=path, tolerance=data.get("tolerance"), has_tolerance="tolerance" in data,
        duration=_d(data.get("duration")), pause_before=_d(pauses.get("before"), 0.0) or 0.0,
        pause_after=_d(pauses.get("after"), 0.0) or 0.0,
        background=bool(data.get("background", False)),
    )


def _condition(data: dict[str, Any] | None) -> Condition | None:
    if not data:
        return None
    return Condition(
        event=data.get("event"), match=dict(data.get("match") or {}),
        sampled=data.get("sampled"), tolerance=data.get("tolerance"),
        healthy=bool(data.get("healthy", False)), max_lag=data.get("max_lag"),
    )


def _ref(value: Any) -> TimeRef | None:
    if value is None:
        return None
    return float(value) if isinstance(value, int | float) else str(value)


def _speed(value: Any) -> float | None:
    if value is None or value == "max":
        return None
    if value == "realtime":
        return 1.0
    return float(value)


def _pipeline(data: dict[str, Any]) -> Pipeline:
    market = data.get("market") or {}
    strategy = data.get("strategy") or {}
    mode = data.get("mode", "embedded")
    modes: tuple[Mode, ...] = tuple(data.get("modes") or MODES)
    limits = dict(data.get("limits") or {})
    if "rate_window" in limits:
        limits["rate_window"] = parse_duration(limits["rate_window"])
    return Pipeline(
        mode=mode,
        modes=modes,
        services=tuple(data.get("services") or SERVICES),
        market=Market(
            source=market.get("source", "synthetic"),
            symbols=tuple(market.get("symbols") or ("BTCUSDT",)),
            trades_per_s=float(market.get("trades_per_s", 50.0)),
            bursts_per_hour=float(market.get("bursts_per_hour", 0.0)),
            speed=_speed(market.get("speed")),
            warmup=_d(market.get("warmup"), 10.0) or 0.0,
            shapes=tuple(market.get("shapes") or ()),
        ),
        venue=data.get("venue", "paper"),
        strategy=Strategy(
            id=strategy.get("id", "momentum"), threshold_pct=strategy.get("threshold_pct"),
            min_volume=strategy.get("min_volume"), lookback=_d(strategy.get("lookback")),
        ),
        limits={k: float(v) for k, v in limits.items()},
        ess=dict(data.get("ess") or {}),
        redis_persistence=(data.get("redis") or {}).get("persistence", "aof"),
        proxy=data.get("proxy", "auto"),
        settings={k: _env_text(v) for k, v in (data.get("settings") or {}).items()},
        requires=tuple(data.get("requires") or ()),
    )


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build(document: dict[str, Any], file: str, secrets: tuple[str, ...] = ()) -> Scenario:
    """The Scenario of a document that passed the schema.

    Args:
        document: the document after substitutions.
        file: where it came from.
        secrets: values the substitutions read from the environment (masked in
            ``Scenario.document``, which reports show).
    """
    scenario = _build(document, file)
    return msgspec.structs.replace(
        scenario, document=mask_secrets(document, secrets), secrets=secrets,
        executes=tuple(msgspec.structs.replace(e, what=mask_secrets(e.what, secrets))
                       for e in _executions(scenario, document)))


def _build(document: dict[str, Any], file: str) -> Scenario:
    doc = document
    ssh = doc.get("steady-state-hypothesis")
    invariants = []
    for i, item in enumerate(doc.get("invariants") or []):
        spec = {"type": item} if isinstance(item, str) else item
        invariants.append(InvariantSpec(
            type=spec["type"], params={k: v for k, v in spec.items() if k != "type"},
            path=f"$.invariants[{i}]",
        ))
    return Scenario(
        title=doc["title"],
        file=file,
        document=doc,
        description=doc.get("description", ""),
        tags=tuple(doc.get("tags") or ()),
        seed=int(doc.get("seed", 1)),
        duration=_d(doc.get("duration")),
        settle=_d(doc.get("settle"), 10.0) or 0.0,
        sample_every=_d(doc.get("sample_every"), 1.0) or 1.0,
        pipeline=_pipeline(doc.get("pipeline") or {}),
        steady_state=SteadyState(
            title=ssh.get("title", ""),
            probes=tuple(_activity(p, f"$['steady-state-hypothesis'].probes[{i}]")
                         for i, p in enumerate(ssh.get("probes") or [])),
        ) if ssh else None,
        method=tuple(_activity(a, f"$.method[{i}]") for i, a in enumerate(doc.get("method")
                                                                          or [])),
        timeline=tuple(_entry(e, f"$.timeline[{i}]", i)
                       for i, e in enumerate(doc.get("timeline") or [])),
        rollbacks=tuple(_activity(a, f"$.rollbacks[{i}]")
                        for i, a in enumerate(doc.get("rollbacks") or [])),
        probes=tuple(
            SampledProbe(name=p["name"], every=_d(p.get("every")),
                         provider=Provider.of(p["provider"], f"$.probes[{i}].provider"))
            for i, p in enumerate(doc.get("probes") or [])
        ),
        invariants=tuple(invariants),
        expect=tuple(
            Expectation(
                name=e["name"], path=f"$.expect[{i}]",
                probe=_provider(e.get("probe"), f"$.expect[{i}].probe"),
                sampled=e.get("sampled"), event=e.get("event"), match=dict(e.get("match")
                                                                          or {}),
                tolerance=e.get("tolerance"), count=e.get("count"),
                when=e.get("when", "eventually"), start=_ref(e.get("from")),
                end=_ref(e.get("until")), reason=e.get("reason", ""),
            )
            for i, e in enumerate(doc.get("expect") or [])
        ),
        measurements=tuple(
            Measurement(
                name=m["name"], path=f"$.measurements[{i}]", start=_ref(m["from"]) or 0.0,
                kind=m.get("kind"), until=_condition(m.get("until")),
                max=_d(m.get("max")), required=bool(m.get("required", m.get("max") is not None)),
                down_within=_d(m.get("down_within")),
            )
            for i, m in enumerate(doc.get("measurements") or [])
        ),
    )
