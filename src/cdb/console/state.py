"""What the console knows about the pipeline, refreshed by one background watcher.

Pages never ask the pipeline themselves: the ``Watcher`` polls discovery, each
instance's ``/health``, the consumer groups, risk's ``/ess`` and the newest alerts once
per interval, whatever the number of open pages, and pages render its last
``Snapshot``. So a page is served from memory (fast with many instances), a slow or
stuck browser costs the pipeline nothing, and a dead Redis or PostgreSQL shows as a
problem while the rest stays visible (the last known instances keep being asked).

Distributed mode reads Redis (discovery, streams), the instances' HTTP APIs and
PostgreSQL; embedded mode (``cdb run``'s SQLite file) reads the database only.
Changes of the kill switch go to risk's API with the configured token.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

import httpx
import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from cdb.bus.keys import ALL_STREAMS, Namespace
from cdb.bus.redis_streams import undelivered
from cdb.clock import Clock, WallClock
from cdb.console.records import EquityCurve, Records, when
from cdb.console.views import (
    Book,
    ChainStep,
    DepView,
    EquityView,
    EssView,
    GroupLag,
    InstanceView,
    PositionView,
    RunRow,
    Snapshot,
    TripView,
)
from cdb.events import SCALE
from cdb.observability.logging import mask_text
from cdb.runtime.discovery import InstanceRecord, discover

_log = structlog.get_logger("cdb.console")
HTTP_TIMEOUT_S = 1.0
REDIS_TIMEOUT_S = 1.0


class ChangeResult(msgspec.Struct, frozen=True, kw_only=True):
    """What became of a requested change: done, or refused and why."""

    ok: bool
    message: str
    retry_after_s: float | None = None


def _ess_from_api(body: dict[str, Any]) -> EssView:
    return EssView(
        known=True, state=str(body.get("state", "UNKNOWN")), reason=str(body.get("reason", "")),
        detail=str(body.get("detail", "")), actor=str(body.get("actor", "")),
        since=str(body.get("since") or ""), cooldown_s=float(body.get("cooldown_s") or 0),
        cooldown_left_s=float(body.get("cooldown_left_s") or 0), source="risk API",
    )


def _instance(record: InstanceRecord, alive: bool, body: dict[str, Any] | None, error: str,
              now_ns: int) -> InstanceView:
    if body is None:
        note = error or ("heartbeat expired" if not alive else "not answering")
        return InstanceView(service=record.service, instance=record.instance,
                            address=record.address, pid=record.pid, state="gone",
                            health="gone", restarts=record.restarts, note=mask_text(note))
    deps = tuple(
        DepView(name=str(name), status=str(dep.get("status", "?")),
                latency_ms=dep.get("latency_ms"),
                last_error=mask_text(str(dep.get("last_error") or "")))
        for name, dep in (body.get("dependencies") or {}).items() if isinstance(dep, dict)
    )
    details = body.get("details") or {}
    down = [f"{d.name}: {d.last_error or 'down'}" for d in deps if d.status == "down"]
    return InstanceView(
        service=record.service, instance=record.instance, address=record.address,
        pid=int(details.get("pid") or record.pid), state="live",
        health=str(body.get("status", "?")),
        uptime_s=float(body.get("uptime_s") or max(0, now_ns - record.started_ns) / 1e9),
        restarts=record.restarts, buffered=int(details.get("buffered_events") or 0),
        deps=deps, note="; ".join(down),
    )


class Watcher:
    """Keeps the latest ``Snapshot`` of a pipeline (an async context manager).

    Args:
        records: the database reads, or None when it is not configured.
        redis: client of the pipeline's Redis (distributed), or None (embedded).
        namespace: the pipeline's namespace.
        api_token: risk's CDB_API_TOKEN, used for changes only.
        interval: seconds between two refreshes.
        risk_url: risk's API, when discovery is not to be used to find it.
    """

    def __init__(self, *, records: Records | None, redis: aioredis.Redis | None,
                 namespace: Namespace, api_token: str | None, interval: float = 1.0,
                 risk_url: str | None = None, clock: Clock | None = None,
                 initial_cash_e8: int = 100_000 * SCALE) -> None:
        self.records = records
        self.redis = redis
        self.namespace = namespace
        self._token = api_token
        self.interval = interval
        self.risk_url = risk_url
        self.clock = clock or WallClock()
        self.mode = "distributed" if redis is not None else "embedded"
        self.snapshot = Snapshot(taken_at="", mode=self.mode, problems=("starting",))
        self.refreshes = 0
        self._known: dict[str, tuple[InstanceRecord, bool]] = {}
        self._http = httpx.AsyncClient(timeout=HTTP_TIMEOUT_S)
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._initial_cash_e8 = initial_cash_e8
        self._curve = EquityCurve(initial_cash_e8)
        self._equity: tuple[float, EquityView] | None = None
        self._equity_lock = asyncio.Lock()

    async def __aenter__(self) -> Watcher:
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="console.watcher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        await self._http.aclose()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.interval)
            self._changed.clear()
            try:
                await self.refresh()
            except Exception:  # one failed refresh must not end the console's watching
                _log.exception("console refresh failed")

    @property
    def changes_enabled(self) -> bool:
        return bool(self._token) and self.mode == "distributed"

    async def refresh(self) -> Snapshot:
        """Read everything once; what cannot be read is listed in ``problems``."""
        problems: list[str] = []
        now = self.clock.now()
        instances, lags = await self._instances(problems, now)
        ess = await self._ess(problems)
        alerts = []
        if self.records is not None:
            try:
                alerts = await self.records.alerts(20)
            except Exception as exc:  # any driver error: the page says so and goes on
                problems.append(f"database: {why_text(exc)}")
        self.snapshot = Snapshot(taken_at=when(now), mode=self.mode, instances=instances,
                                 lags=lags, ess=ess, alerts=tuple(alerts),
                                 problems=tuple(problems))
        self.refreshes += 1
        return self.snapshot

    async def _instances(self, problems: list[str], now: int,
                         ) -> tuple[tuple[InstanceView, ...], tuple[GroupLag, ...]]:
        if self.redis is None:
            return (), ()
        lags: tuple[GroupLag, ...] = ()
        try:
            found = await asyncio.wait_for(discover(self.redis, self.namespace), REDIS_TIMEOUT_S)
            if found or not self._known:
                self._known = {r.record.key: (r.record, r.alive) for r in found}
            else:  # a Redis restarted empty: the instances register again within a beat
                problems.append("redis: the registry is empty (restarted?); showing the "
                                "instances last discovered")
            lags = await asyncio.wait_for(self._lags(), REDIS_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            problems.append(f"redis: {why_text(exc)} (showing the instances last discovered)")
        known = list(self._known.values())
        answers = await asyncio.gather(*[self._health(rec.address) for rec, _ in known])
        views = tuple(_instance(rec, alive, body, error, now)
                      for (rec, alive), (body, error) in zip(known, answers, strict=True))
        return views, lags

    async def _health(self, address: str) -> tuple[dict[str, Any] | None, str]:
        try:
            response = await self._http.get(f"{address}/health")
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return None, f"not answering: {type(exc).__name__}"
        return (body, "") if isinstance(body, dict) else (None, "bad /health answer")

    async def _lags(self) -> tuple[GroupLag, ...]:
        assert self.redis is not None
        out: list[GroupLag] = []
        # One round trip for every stream: the pipeline's Redis is asked once a second.
        pipe = self.redis.pipeline(transaction=False)
        for stream in ALL_STREAMS:
            pipe.xinfo_groups(self.namespace.key(stream))
            pipe.xinfo_stream(self.namespace.key(stream))
        replies = await pipe.execute(raise_on_error=False)
        for stream, groups, info in zip(ALL_STREAMS, replies[::2], replies[1::2], strict=True):
            if isinstance(groups, Exception):
                if isinstance(groups, RedisError) and "no such key" in str(groups).lower():
                    continue
                raise groups
            at = None if isinstance(info, Exception) else info
            for g in groups:
                name = g["name"]
                lag = undelivered(g, at) or 0
                out.append(GroupLag(
                    stream=stream, group=name.decode() if isinstance(name, bytes) else str(name),
                    lag=lag, pending=int(g.get("pending") or 0)))
        return tuple(out)

    def _risk_address(self) -> str | None:
        if self.risk_url:
            return self.risk_url.rstrip("/")
        for record, alive in self._known.values():
            if record.service == "risk" and alive:
                return record.address
        return None

    async def _ess(self, problems: list[str]) -> EssView:
        address = self._risk_address()
        if address is not None:
            try:
                response = await self._http.get(f"{address}/ess")
                return _ess_from_api(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                problems.append(f"risk API: {why_text(exc)}")
        if self.records is not None:
            with contextlib.suppress(Exception):  # the database problem is reported apart
                changes = await self.records.ess_changes(1)
                if not changes:
                    return EssView(known=True, state="ACTIVE", source="database (never tripped)")
                last = changes[0]
                return EssView(known=True, state=last.state, reason=last.reason,
                               detail=last.detail, actor=last.actor, since=last.at,
                               source="database (last recorded change)")
        return EssView(known=False)

    async def history(self) -> tuple[list[TripView], str]:
        """Trips and resets, newest first, and what could not be read."""
        if self.records is None:
            return [], "no database configured"
        try:
            return await self.records.ess_changes(100), ""
        except Exception as exc:  # shown on the page
            return [], f"database: {why_text(exc)}"

    async def book(self) -> Book:
        """Positions and limits (risk's API), orders and fills (database)."""
        problems: list[str] = []
        state: dict[str, Any] = {}
        address = self._risk_address()
        if address is not None:
            try:
                state = (await self._http.get(f"{address}/risk/state")).json()
            except (httpx.HTTPError, ValueError) as exc:
                problems.append(f"risk API: {why_text(exc)}")
        parts: dict[str, Any] = {"positions": (), "orders": (), "fills": (), "open_orders": ()}
        if self.records is not None:
            try:
                parts["orders"] = tuple(await self.records.orders(50))
                parts["fills"] = tuple(await self.records.fills(50))
                parts["open_orders"] = tuple(await self.records.open_orders())
                if not state:
                    parts["positions"] = tuple(await self.records.positions())
            except Exception as exc:  # shown on the page
                problems.append(f"database: {why_text(exc)}")
        if state:
            parts["positions"] = tuple(
                PositionView(symbol=s, qty=str(p.get("qty")), mark=str(p.get("mark")),
                             exposure=str(p.get("exposure")))
                for s, p in (state.get("positions") or {}).items())
        limits = tuple((str(k), str(v)) for k, v in (state.get("limits") or {}).items())
        return Book(cash=str(state.get("cash", "")), equity=str(state.get("equity", "")),
                    exposure=str(state.get("exposure", "")),
                    max_drawdown_pct=str(state.get("max_drawdown_pct", "")), limits=limits,
                    problems=tuple(problems), **parts)

    async def equity(self, max_age_s: float = 2.0) -> tuple[EquityView, str]:
        """The book's equity and drawdown curve, and what could not be read.

        Embedded: the series the newest run recorded, else its fills. Distributed: the
        fills recorded so far (read incrementally). One read per ``max_age_s``, however
        many pages ask.
        """
        if self.records is None:
            return EquityView(), "no database configured"
        async with self._equity_lock:
            now = asyncio.get_running_loop().time()
            if self._equity is not None and now - self._equity[0] < max_age_s:
                return self._equity[1], ""
            try:
                view = await self._read_equity(self.records)
            except Exception as exc:  # shown on the page; the last curve stays drawn
                return (self._equity[1] if self._equity else EquityView()), \
                    f"database: {why_text(exc)}"
            self._equity = (now, view)
            return view, ""

    async def _read_equity(self, records: Records) -> EquityView:
        if self.mode == "embedded":
            runs = await records.runs()
            if runs:
                recorded = await records.run_equity(runs[-1].run_id)
                if recorded is not None:
                    return msgspec.structs.replace(
                        recorded, source=f"run {runs[-1].run_id} (recorded series)")
        curve = await records.equity(self._curve)
        return msgspec.structs.replace(curve.series(), source="recorded fills")

    async def runs(self) -> tuple[list[RunRow], str]:
        """The recorded runs, newest first, and what could not be read."""
        if self.records is None:
            return [], "no database configured"
        try:
            return await self.records.run_rows(), ""
        except Exception as exc:  # shown on the page
            return [], f"database: {why_text(exc)}"

    async def chain(self, event_id: str) -> tuple[list[ChainStep], str]:
        if self.records is None:
            return [], "no database configured"
        try:
            return await self.records.chain(event_id), ""
        except Exception as exc:  # shown on the page
            return [], f"database: {why_text(exc)}"

    async def change(self, action: str, actor: str, reason: str) -> ChangeResult:
        """Trip or reset the kill switch through risk's API, with the token."""
        if not self.changes_enabled or self._token is None:
            return ChangeResult(ok=False, message="changes are disabled: the console has no "
                                "CDB_API_TOKEN (or runs on an embedded database)")
        address = self._risk_address()
        if address is None:
            return ChangeResult(ok=False, message="no live risk instance found in discovery")
        try:
            response = await self._http.post(
                f"{address}/ess/{action}", json={"actor": actor, "reason": reason},
                headers={"Authorization": f"Bearer {self._token}"}, timeout=5.0)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return ChangeResult(ok=False, message=f"risk API did not answer: {why_text(exc)}")
        finally:
            self._changed.set()
        if response.status_code == 200:
            done = "tripped: HALTED" if action == "trip" else "reset: ACTIVE"
            if not body.get("changed", True):
                done = "already HALTED (nothing changed)"
            return ChangeResult(ok=True, message=done)
        left = body.get("retry_after_s")
        retry = float(left) if isinstance(left, int | float) and math.isfinite(left) else None
        return ChangeResult(ok=False, retry_after_s=retry,
                            message=mask_text(str(body.get("detail") or response.status_code)))


def why_text(exc: BaseException) -> str:
    """The first line of ``exc``, short and with secrets masked, for a page."""
    text = str(exc) or type(exc).__name__
    return mask_text(text.splitlines()[0][:200])
