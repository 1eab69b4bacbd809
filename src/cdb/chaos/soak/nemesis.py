"""The soak's nemesis: a seeded random schedule of faults, written as a plain scenario.

Jepsen's shape: a nemesis draws faults from the catalog (``chaos/faults``) by weight,
at random moments, overlapping where the faults do not touch the same part, each one
undone (a duration, or a fault that undoes itself: a kill comes back, a crash
recovers, a reset ends a trip). The same seed gives the same schedule. The schedule is
turned into an ordinary scenario document, so the soak runs through the same runner,
the same invariants over the whole recorded history and the same verdict rules (a check
that examined nothing is unknown), and a failing subset (``chaos.soak.shrink``) is written
out as a file that ``cdb scenario run`` reproduces on its own.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Final

import msgspec

from cdb.bus.keys import SERVICES
from cdb.chaos.scenario.model import Mode

USES_POSTGRES: Final = ("risk", "db_writer")
SYMBOL: Final = "BTCUSDT"
BACKGROUND_CHUNK_S: Final = 10.0


class Planned(msgspec.Struct, frozen=True, kw_only=True):
    """One fault of the schedule: its timeline entries (a flash crash brings the buys it
    blocks and the reset that ends it) and the parts it holds while active."""

    name: str
    kind: str
    at: float
    until: float
    """When it is undone and recovered from (overlap is judged on [at, until))."""
    entries: tuple[dict[str, Any], ...]
    holds: tuple[str, ...]
    recover: bool = False
    """Whether the pipeline must visibly recover from it (a measurement per fault)."""


class SoakSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What the nemesis draws from.

    Args:
        duration: seconds of scenario time with faults (market time: compressed in
            embedded mode, real in distributed mode).
        weights: kind -> weight (kinds of ``KINDS``; 0 leaves one out).
        mean_gap: mean seconds between two fault starts (exponential).
        max_overlap: at most this many faults active at once (1: none overlap).
        recover_within: the bound on each recovery, in seconds.
        sabotage: test-only deliberate bugs the nemesis may also draw (their weight).
    """

    duration: float
    seed: int = 1
    mode: Mode = "embedded"
    weights: dict[str, float] = msgspec.field(default_factory=dict)
    mean_gap: float = 6.0
    max_overlap: int = 2
    recover_within: float = 30.0
    trades_per_s: float = 50.0
    signals_every: float = 0.5
    sabotage: dict[str, float] = msgspec.field(default_factory=dict)


_Make = Callable[[random.Random, str, float, SoakSpec], Planned]

ESS_COOLDOWN_S: Final = 3.0
_MARKET_CONSUMERS: Final = ("signal", "risk", "execution")


def _service_fault(kind: str) -> _Make:
    def make(rng: random.Random, name: str, at: float, spec: SoakSpec) -> Planned:
        # Embedded: ws drives the simulated clock, so it cannot be paused; and a pause is
        # shown by the lag it leaves, so it goes to a consumer of the market data, which
        # always flows (db_writer's inputs can be quiet for the whole pause: unknown).
        service = rng.choice(SERVICES if spec.mode == "distributed" else _MARKET_CONSUMERS)
        fault: dict[str, Any] = {"type": kind, "service": service}
        entry: dict[str, Any] = {"name": name, "at": f"{at:g}s", "fault": fault}
        if kind == "stop":
            # Distributed: long enough for a health sample (1 s apart, each waiting for
            # an answer) to meet the frozen process, or its recovery measures nothing.
            low, high = (4.0, 8.0) if spec.mode == "distributed" else (1.0, 4.0)
            held = round(rng.uniform(low, high), 1)
            entry["duration"] = f"{held:g}s"
        elif kind == "kill":
            held = 1.0
            fault["hold"] = "1s"  # frozen first, so the kill meets events in flight
        else:
            held = 1.0
        return Planned(name=name, kind=kind, at=at, until=at + held + spec.recover_within / 3,
                       entries=(entry,), holds=(f"service:{service}",),
                       recover=spec.mode == "distributed")
    return make


def _server_fault(kind: str, server: str, *, empty: bool = False) -> _Make:
    fault_type = f"{server}_down"

    def make(rng: random.Random, name: str, at: float, spec: SoakSpec) -> Planned:
        held = round(rng.uniform(2.0, 6.0), 1)
        fault: dict[str, Any] = {"type": fault_type, "mode": rng.choice(["stop", "kill"])}
        if empty:
            fault["empty"] = True
        return Planned(name=name, kind=kind, at=at, until=at + held + spec.recover_within / 3,
                       entries=({"name": name, "at": f"{at:g}s", "duration": f"{held:g}s",
                                 "fault": fault},), holds=(server,), recover=True)
    return make


def _toxic(rng: random.Random, name: str, at: float, spec: SoakSpec) -> Planned:
    held = round(rng.uniform(2.0, 5.0), 1)
    target = rng.choice(["redis", "postgres"])
    toxic = rng.choice(["latency", "bandwidth"])
    attributes = ({"latency": rng.choice([50, 100, 200]), "jitter": 20} if toxic == "latency"
                  else {"rate": 64})
    return Planned(name=name, kind="network", at=at, until=at + held + 2,
                   entries=({"name": name, "at": f"{at:g}s", "duration": f"{held:g}s",
                             "fault": {"type": "network", "target": target, "toxic": toxic,
                                       "attributes": attributes}},),
                   holds=(f"link:{target}",))


def _link_down(rng: random.Random, name: str, at: float, spec: SoakSpec) -> Planned:
    held = round(rng.uniform(1.0, 4.0), 1)
    target = rng.choice(["redis", "postgres"])
    # Only risk and db_writer talk to PostgreSQL: the others have no such link.
    service = rng.choice(SERVICES if target == "redis" else USES_POSTGRES)
    return Planned(name=name, kind="network_down", at=at,
                   until=at + held + spec.recover_within / 3,
                   entries=({"name": name, "at": f"{at:g}s", "duration": f"{held:g}s",
                             "fault": {"type": "network_down", "target": target,
                                       "service": service}},),
                   holds=(f"link:{target}", f"service:{service}"))


def _flash_crash(rng: random.Random, name: str, at: float, spec: SoakSpec) -> Planned:
    """A crash that trips the ESS, buys that it must block, and the reset after the
    cooldown that ends the trip (the next crash may trip it again)."""
    over = round(rng.uniform(2.0, 3.0), 1)
    drop = 15  # as scenarios/flash-crash.yaml: deep enough to trip, always reached
    blocked = round(at + over + 1.0, 1)
    reset = round(at + over + ESS_COOLDOWN_S + 3.0, 1)
    entries = (
        {"name": name, "at": f"{at:g}s",
         "fault": {"type": "flash_crash", "symbol": SYMBOL, "drop_pct": drop,
                   "over": f"{over:g}s"}},
        {"name": f"{name} blocked buys", "at": f"{blocked:g}s",
         "fault": {"type": "signal_flood", "count": 3, "over": "1s", "symbol": SYMBOL,
                   "side": "BUY"}},
        {"name": f"{name} reset", "at": f"{reset:g}s",
         "action": {"type": "ess_reset", "actor": "cdb-soak", "reason": "crash over"}},
    )
    # The ESS, the market and whatever decides or sends orders are the crash's while it
    # trips and resets: a service down then would make the reset's outcome undecidable.
    return Planned(name=name, kind="flash_crash", at=at, until=reset + 2.0, entries=entries,
                   holds=("ess", "market", "service:risk", "service:ws", "service:signal",
                          "service:execution", "redis", "postgres", "exchange"))


def _market_shape(kind: str) -> _Make:
    def make(rng: random.Random, name: str, at: float, spec: SoakSpec) -> Planned:
        over = round(rng.uniform(2.0, 5.0), 1)
        fault: dict[str, Any] = {"type": kind, "symbol": SYMBOL, "over": f"{over:g}s"}
        if kind == "gap":
            fault["jump_pct"] = rng.choice([-2, -1, 1, 2])
        return Planned(name=name, kind=kind, at=at, until=at + over + 1.0,
                       entries=({"name": name, "at": f"{at:g}s", "fault": fault},),
                       holds=("market",))
    return make


def _flood(rng: random.Random, name: str, at: float, spec: SoakSpec) -> Planned:
    count = rng.choice([10, 20, 30])
    over = round(rng.uniform(1.0, 3.0), 1)
    return Planned(name=name, kind="signal_flood", at=at, until=at + over,
                   entries=({"name": name, "at": f"{at:g}s",
                             "fault": {"type": "signal_flood", "count": count,
                                       "over": f"{over:g}s", "symbol": SYMBOL,
                                       "side": "alternate"}},),
                   holds=("flood",))


def _exchange(rng: random.Random, name: str, at: float, spec: SoakSpec) -> Planned:
    held = round(rng.uniform(2.0, 4.0), 1)
    error = rng.choice(["-1003", "-1015", "429", "5xx", "timeout"])
    return Planned(name=name, kind="exchange", at=at, until=at + held + 2.0,
                   entries=({"name": name, "at": f"{at:g}s", "duration": f"{held:g}s",
                             "fault": {"type": "exchange", "error": error}},),
                   holds=("exchange",))


def _sabotage(bug: str) -> _Make:
    def make(rng: random.Random, name: str, at: float, spec: SoakSpec) -> Planned:
        held = round(rng.uniform(2.0, 4.0), 1)
        return Planned(name=name, kind=f"sabotage:{bug}", at=at, until=at + held,
                       entries=({"name": name, "at": f"{at:g}s", "duration": f"{held:g}s",
                                 "fault": {"type": "sabotage", "bug": bug}},),
                       holds=(f"sabotage:{bug}",))
    return make


class Kind(msgspec.Struct, frozen=True, kw_only=True):
    make: _Make
    modes: tuple[Mode, ...]
    weight: float


KINDS: Final[dict[str, Kind]] = {
    "stop": Kind(make=_service_fault("stop"), modes=("embedded", "distributed"), weight=3),
    "kill": Kind(make=_service_fault("kill"), modes=("distributed",), weight=3),
    "restart": Kind(make=_service_fault("restart"), modes=("distributed",), weight=2),
    "redis_down": Kind(make=_server_fault("redis_down", "redis"), modes=("distributed",),
                       weight=1),
    "redis_empty": Kind(make=_server_fault("redis_empty", "redis", empty=True),
                        modes=("distributed",), weight=0),
    "postgres_down": Kind(make=_server_fault("postgres_down", "postgres"),
                          modes=("distributed",), weight=1),
    "network": Kind(make=_toxic, modes=("distributed",), weight=2),
    "network_down": Kind(make=_link_down, modes=("distributed",), weight=1),
    "exchange": Kind(make=_exchange, modes=("distributed",), weight=0),
    "flash_crash": Kind(make=_flash_crash, modes=("embedded", "distributed"), weight=1),
    "gap": Kind(make=_market_shape("gap"), modes=("embedded", "distributed"), weight=1),
    "stale": Kind(make=_market_shape("stale"), modes=("embedded", "distributed"), weight=1),
    "flat": Kind(make=_market_shape("flat"), modes=("embedded", "distributed"), weight=1),
    "signal_flood": Kind(make=_flood, modes=("embedded", "distributed"), weight=2),
}
"""The catalog with default weights. 0 unless asked for: ``exchange`` (it needs the fake
Binance venue) and ``redis_empty`` (Redis stopped and restarted with its data deleted,
as a Redis replaced by a new one)."""


def weights_for(spec: SoakSpec) -> dict[str, float]:
    """The weight of every kind the spec's mode can inject (the spec's over the defaults)."""
    out = {name: spec.weights.get(name, k.weight) for name, k in KINDS.items()
           if spec.mode in k.modes}
    out.update({f"sabotage:{bug}": w for bug, w in spec.sabotage.items()})
    return {name: w for name, w in out.items() if w > 0}


def _maker(kind: str) -> _Make:
    if kind.startswith("sabotage:"):
        return _sabotage(kind.split(":", 1)[1])
    return KINDS[kind].make


def schedule(spec: SoakSpec) -> list[Planned]:
    """The seeded schedule: the same spec and seed always give the same faults."""
    rng = random.Random(f"nemesis:{spec.seed}")
    weights = weights_for(spec)
    if not weights:
        return []
    names, values = list(weights), list(weights.values())
    planned: list[Planned] = []
    counts: dict[str, int] = {}
    t = 1.0 + rng.expovariate(1.0 / spec.mean_gap)
    while t < spec.duration:
        for _ in range(5):  # a few draws for one that fits beside the active ones
            kind = rng.choices(names, values)[0]
            n = counts.get(kind, 0) + 1
            # Whole seconds: a market shape's effect is judged on price buckets of half a
            # second, and a start inside a bucket would count part of it as "before".
            candidate = _maker(kind)(rng, f"{kind.replace(':', '-')} {n}", float(round(t)),
                                     spec)
            active = [p for p in planned if p.at <= candidate.at < p.until
                      or candidate.at <= p.at < candidate.until]
            if candidate.until <= spec.duration + spec.recover_within and \
                    len(active) < spec.max_overlap and \
                    not any(set(p.holds) & set(candidate.holds) for p in active):
                planned.append(candidate)
                counts[kind] = n
                break
        t += rng.expovariate(1.0 / spec.mean_gap)
    return planned


def _background(spec: SoakSpec, planned: list[Planned], end: float) -> list[dict[str, Any]]:
    """Trading all along, both ways (the position stays within its limits), so every
    invariant has orders and fills to examine around every fault: floods of
    ``BACKGROUND_CHUNK_S``, except while Redis is down (the coordinator publishes them
    to Redis: a flood then would fail, not test anything)."""
    down = [(p.at, p.until) for p in planned if "redis" in p.holds]
    out: list[dict[str, Any]] = []
    t = 0.0
    while t < end:
        chunk = min(BACKGROUND_CHUNK_S, end - t)
        if not any(a < t + chunk and t < b for a, b in down):
            out.append({"name": f"background signals {len(out) + 1}", "at": f"{t:g}s",
                        "fault": {"type": "signal_flood",
                                  "count": max(2, int(chunk / spec.signals_every)),
                                  "over": f"{chunk:g}s", "symbol": SYMBOL,
                                  "side": "alternate"}})
        t += chunk
    return out


def document(spec: SoakSpec, planned: list[Planned], title: str | None = None,
             leak_probes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The soak as a scenario document (``planned`` may be a subset, when shrinking)."""
    distributed = spec.mode == "distributed"
    end = max([spec.duration, *(p.until for p in planned)])
    timeline = _background(spec, planned, end)
    for p in sorted(planned, key=lambda p: p.at):
        timeline.extend(p.entries)
    crashes = any(p.kind == "flash_crash" for p in planned)
    invariants: list[Any] = ["no_lost_events", "no_dead_letters", "no_duplicates",
                             "exposure_within_limit", "audit_chain_complete",
                             {"type": "lag_recovers", "within": f"{spec.recover_within:g}s"}]
    if crashes:
        invariants.insert(0, "no_order_after_ess_trip")
    doc: dict[str, Any] = {
        "version": "1",
        "title": title or f"Soak: {len(planned)} random fault(s) over {spec.duration:g}s, "
                          f"seed {spec.seed}",
        "description": "Generated by cdb scenario soak (chaos.soak.nemesis): a seeded random "
                       "schedule of faults from the catalog; the checker runs every "
                       "invariant over the whole recorded history.",
        "tags": ["soak", "nemesis"],
        "seed": spec.seed,
        "settle": "5s",
        "sample_every": "1s" if distributed else "0.5s",
        "pipeline": {
            "mode": spec.mode, "modes": [spec.mode],
            "market": {"symbols": [SYMBOL], "trades_per_s": spec.trades_per_s,
                       "warmup": "3s"},
            "limits": {"initial_cash": 1000000, "order_notional": 1000,
                       "max_order_notional": 5000, "max_position": 200000,
                       "max_exposure": 200000, "max_open_orders": 200,
                       "max_orders_per_window": 1000, "rate_window": "10s"},
            # Flash crashes trip; the drawdown of a long position must not trip first,
            # and a silent feed is a fault of its own (stale), not a trip.
            "ess": {"cooldown_s": ESS_COOLDOWN_S, "stale_data_s": 0,
                    "drawdown_limit_pct": 90},
            "requires": ["ess"],
        },
        "steady-state-hypothesis": {"title": "every service healthy", "probes": [
            {"type": "probe", "name": "services healthy",
             "provider": {"type": "health", "service": "*"}, "tolerance": "healthy"}]},
        "timeline": timeline,
        "invariants": invariants,
    }
    if spec.mode == "distributed" and any(p.kind == "exchange" for p in planned):
        doc["pipeline"]["venue"] = "fake-binance"
        doc["pipeline"]["requires"] = ["ess", "fake_binance", "binance_venue"]
    # The outage must begin while the fault is on (plus a little for the health
    # samples): a service unhealthy later is another fault's doing.
    measurements = [{"name": f"{p.name} recovered", "kind": "recover", "from": p.name,
                     "max": f"{spec.recover_within:g}s",
                     "down_within": f"{round(p.until - p.at - spec.recover_within / 3 + 3, 1):g}s"}
                    for p in planned if p.recover]
    if measurements:
        doc["measurements"] = measurements
    if leak_probes:
        doc["probes"] = leak_probes
    return doc


def kinds_of(planned: list[Planned]) -> dict[str, int]:
    """Faults by kind."""
    out: dict[str, int] = {}
    for p in planned:
        out[p.kind] = out.get(p.kind, 0) + 1
    return dict(sorted(out.items()))
