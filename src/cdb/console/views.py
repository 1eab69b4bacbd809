"""What the console shows: frozen view structs, built by ``cdb.console.state``.

Values are already formatted for people (money as decimal strings): the templates only
lay them out.
"""

from __future__ import annotations

import msgspec


class DepView(msgspec.Struct, frozen=True, kw_only=True):
    """One dependency of an instance, as its ``/health`` says."""

    name: str
    status: str
    latency_ms: float | None = None
    last_error: str = ""


class InstanceView(msgspec.Struct, frozen=True, kw_only=True):
    """One service instance from discovery, with its health."""

    service: str
    instance: str
    address: str
    state: str
    """``live`` or ``gone`` (heartbeat expired or not answering)."""
    health: str
    """healthy, degraded, unhealthy, or gone."""
    uptime_s: float | None = None
    pid: int = 0
    restarts: int = 0
    """Times its supervisor restarted it (from its discovery record)."""
    buffered: int = 0
    deps: tuple[DepView, ...] = ()
    note: str = ""


class GroupLag(msgspec.Struct, frozen=True, kw_only=True):
    """A consumer group's backlog on one stream."""

    stream: str
    group: str
    lag: int
    pending: int


class TripView(msgspec.Struct, frozen=True, kw_only=True):
    """One change of the kill switch: a trip or a reset, with who and why."""

    at: str
    state: str
    reason: str
    actor: str
    detail: str = ""


class EssView(msgspec.Struct, frozen=True, kw_only=True):
    """The kill switch as the console knows it."""

    known: bool
    state: str = "UNKNOWN"
    reason: str = ""
    detail: str = ""
    actor: str = ""
    since: str = ""
    cooldown_s: float = 0.0
    cooldown_left_s: float = 0.0
    source: str = ""
    """Where it was read: risk's API or the database."""

    @property
    def halted(self) -> bool:
        return self.state == "HALTED"

    @property
    def can_reset(self) -> bool:
        return self.halted and self.cooldown_left_s <= 0


class AlertView(msgspec.Struct, frozen=True, kw_only=True):
    at: str
    level: str
    code: str
    message: str
    source: str


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the overview shows, taken at once by the watcher."""

    taken_at: str
    mode: str
    """``distributed`` or ``embedded``."""
    instances: tuple[InstanceView, ...] = ()
    lags: tuple[GroupLag, ...] = ()
    ess: EssView = EssView(known=False)
    alerts: tuple[AlertView, ...] = ()
    problems: tuple[str, ...] = ()
    """What could not be read (Redis, PostgreSQL, risk), in words."""

    @property
    def summary(self) -> str:
        """``healthy`` when every instance is, else the worst state seen."""
        if self.problems and not self.instances:
            return "unknown"
        states = {i.health for i in self.instances}
        for worst in ("gone", "unhealthy", "degraded"):
            if worst in states:
                return worst
        return "healthy" if states else "unknown"


class PositionView(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: str
    mark: str = ""
    exposure: str = ""


class OrderRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    at: str
    symbol: str
    side: str
    qty: str
    price: str
    status: str = ""
    reduce_only: bool = False


class FillRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    order_id: str
    at: str
    symbol: str
    side: str
    qty: str
    price: str
    fee: str
    status: str


class Book(msgspec.Struct, frozen=True, kw_only=True):
    """What the pipeline holds and did lately."""

    positions: tuple[PositionView, ...] = ()
    cash: str = ""
    equity: str = ""
    exposure: str = ""
    max_drawdown_pct: str = ""
    limits: tuple[tuple[str, str], ...] = ()
    open_orders: tuple[OrderRow, ...] = ()
    orders: tuple[OrderRow, ...] = ()
    fills: tuple[FillRow, ...] = ()
    problems: tuple[str, ...] = ()


class ChainStep(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    id: str
    at: str
    latency_ms: str
    source: str
    summary: str


class TimelineStep(msgspec.Struct, frozen=True, kw_only=True):
    """One thing a scenario run did (a fault applied or undone, an action, a probe)."""

    t_start: float
    t_end: float | None
    phase: str
    what: str
    status: str
    evidence: str = ""


class CheckView(msgspec.Struct, frozen=True, kw_only=True):
    """One check of a scenario run (an invariant, a measurement...) and its outcome."""

    category: str
    name: str
    status: str
    detail: str = ""


class ChaosRun(msgspec.Struct, frozen=True, kw_only=True):
    """A scenario run found in the reports directory."""

    name: str
    scenario: str
    verdict: str
    started: str
    duration_s: float | None
    mode: str
    reasons: tuple[str, ...]
    assertions: tuple[tuple[str, str], ...]
    """(name, status) of each check."""
    html: str
    """Path of ``report.html`` relative to the reports directory; empty when absent."""
    checks: tuple[CheckView, ...] = ()
    timeline: tuple[TimelineStep, ...] = ()
    """In scenario time (seconds from the start of the timeline; negative in warm-up)."""


class EquityView(msgspec.Struct, frozen=True, kw_only=True):
    """The equity curve for the book's chart: three aligned columns."""

    x: list[float] = msgspec.field(default_factory=list)
    """Event time, seconds since the epoch."""
    equity: list[float] = msgspec.field(default_factory=list)
    drawdown_pct: list[float] = msgspec.field(default_factory=list)
    """Below the running peak, in percent (0 or negative)."""
    source: str = ""


class RunRow(msgspec.Struct, frozen=True, kw_only=True):
    """One run of an embedded database, for the runs page."""

    run_id: str
    kind: str
    started: str
    finished: str
    legs: int
    trades: str
    orders: str
    fills: str
    pnl: str
    ess: str
    inputs: str
