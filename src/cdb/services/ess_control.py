"""The risk service's emergency stop with its I/O: trip, reset, restore, adoption of
another instance's change, the stale-data pause, and the outbox that saves and publishes
each change; the decisions themselves are ``cdb.risk.ess`` (pure).

When the ESS trips, in this order: the state is HALTED in memory (no new non-reducing
order from the next decision on), it is saved (Redis and the database), execution is
told to cancel open orders, the change is recorded (``EssChange`` on
``stream.risk_events``) and an alert goes out. What could not be saved or published is
kept and retried, so a trip is never lost to a passing outage. A reset is saved before
it takes effect: if it cannot be made durable it is refused, and a restart never finds
an ACTIVE that was not recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import msgspec
from prometheus_client import Counter, Gauge

from cdb.bus.keys import ALERTS_STREAM, ORDERS, RISK_EVENTS
from cdb.events import Alert, AnyEvent, CancelOrders, EssChange, IdGen, Level
from cdb.observability import metrics
from cdb.risk.ess import (
    MANUAL,
    NS,
    Alarm,
    EmergencyStop,
    EssConfig,
    EssState,
    Guards,
    ResetRefused,
)
from cdb.risk.persistence import EssStore
from cdb.services.base import ServiceContext

# Alert codes risk publishes about its ESS.
ESS_TRIPPED: Final = "ess_tripped"
ESS_RESET: Final = "ess_reset"
ESS_RESTORED: Final = "ess_restored"
TRADING_PAUSED: Final = "trading_paused"
TRADING_RESUMED: Final = "trading_resumed"

_L = ("service", "instance")
ess_trips = Counter(
    "cdb_ess_trips", "ESS trips, by reason", (*_L, "reason"), registry=metrics.REGISTRY
)
ess_changed = Gauge(
    "cdb_ess_changed_timestamp_seconds",
    "When the ESS last changed state (seconds since the epoch, clock time)", _L,
    registry=metrics.REGISTRY,
)
paused_symbols = Gauge(
    "cdb_risk_paused_symbols",
    "Symbols whose new orders are paused because their market data is stale", _L,
    registry=metrics.REGISTRY,
)
ess_info = Gauge(
    "cdb_ess_state_info", "1 for the ESS state and the reason of its last change",
    (*_L, "state", "reason"), registry=metrics.REGISTRY,
)


def iso(ns: int) -> str:
    """A clock time (ns) as ISO 8601 UTC."""
    return datetime.fromtimestamp(ns / NS, tz=UTC).isoformat(timespec="milliseconds")


class EssControl:
    """One risk instance's ESS: the state machine, its guards, and the saving and
    publishing of its changes.

    Args:
        ctx: the risk service's bus, clock and identity.
        config: when the ESS trips by itself, and its cooldown.
        equity: the portfolio's equity now (the drawdown guard is rebased to it after a
            reset).
        initial_equity_e8: the equity drawdown is measured from at start.
        store: where the ESS state survives restarts (None: it does not).
        watch: where other instances' changes show up (None: this is the only one).
    """

    def __init__(
        self, ctx: ServiceContext, config: EssConfig, equity: Callable[[], int],
        initial_equity_e8: int, *, store: EssStore | None = None,
        watch: EssStore | None = None,
    ) -> None:
        self.ctx = ctx
        self.config = config
        self.ess = EmergencyStop(config)
        self.guards = Guards(config, initial_equity_e8)
        self.store = store
        self.watch = watch
        self._equity = equity
        self.paused: frozenset[str] = frozenset()
        """Symbols whose new orders are paused: their market data is stale."""
        self._unsaved: tuple[EssState, EssChange] | None = None
        self._last_save_try = 0
        self._outbox: list[tuple[str, list[AnyEvent]]] = []
        self._flush_lock = asyncio.Lock()
        self._reset_lock = asyncio.Lock()
        labels = (ctx.name, ctx.instance)
        self._labels = labels
        self._halted_gauge = metrics.ess_state.labels(*labels)
        self._paused_gauge = paused_symbols.labels(*labels)
        self._changed_gauge = ess_changed.labels(*labels)
        self._info_labels: tuple[str, str] | None = None
        self._show()

    @property
    def halted(self) -> bool:
        return self.ess.halted

    @property
    def pending(self) -> bool:
        """Whether a change waits to be saved or published."""
        return bool(self._outbox) or self._unsaved is not None

    async def restore(self) -> None:
        """Come back in the state persisted before (HALTED means HALTED)."""
        if self.store is None:
            return
        state = await self.store.load()
        if state is None or state == self.ess.state:
            return
        self.ess.restore(state)
        self._show()
        if not state.halted:
            return
        ctx = self.ctx
        ctx.log.warning("ESS restored HALTED", reason=state.reason, detail=state.detail,
                        since=iso(state.since_ns))
        # A simulated clock has not started yet: the restart is placed at the trip.
        now = state.since_ns if ctx.clock.simulated else ctx.clock.now()
        # Ids name the restart, not a sequence that starts again at each one.
        key = f"{ctx.instance}:restored"
        cancel_id = IdGen.derived(now, key + ":cancel")
        alert_id = IdGen.derived(now, key + ":alert")
        # A crash between the trip and its cancel command must not leave orders open.
        cancel = self._cancel_command(now, state, "")
        alert = self._alert(
            now, "warning", ESS_RESTORED,
            f"risk restarted HALTED (tripped {iso(state.since_ns)} for {state.reason}: "
            f"{state.detail}); reset by hand after the cooldown", "",
        )
        replace = msgspec.structs.replace
        self._outbox.append((ORDERS, [replace(cancel, id=cancel_id, correlation_id=cancel_id)]))
        self._outbox.append(
            (ALERTS_STREAM, [replace(alert, id=alert_id, correlation_id=alert_id)]))
        await self.flush_soon()

    async def poll(self) -> None:
        """Adopt a newer state another instance saved and announced."""
        if self.watch is None:
            return
        shared = await self.watch.load()
        current = self.ess.state
        if (shared is not None and shared.since_ns > current.since_ns
                and shared.state != current.state):
            self.ess.apply(shared)
            if not shared.halted:
                self.guards.rebase(self._equity(), self.ctx.clock.now())
            self._show()
            self.ctx.log.warning("ESS state adopted from another instance", state=shared.state,
                                 reason=shared.reason, actor=shared.actor)

    async def stop(self) -> None:
        """Flush what waits; say loudly what could not be."""
        await self.flush_soon()
        if self.pending:
            # Left to the next start: a HALTED in memory that never reached the store is
            # the one loss a stop can cause.
            self.ctx.log.error("stopping with ESS changes not saved or published",
                               unsaved=self._unsaved is not None, unpublished=len(self._outbox))

    async def trip(self, alarm: Alarm, actor: str) -> EssState | None:
        """HALT for ``alarm`` (a guard's, or an operator's with ``MANUAL``); the new
        state, or None when it was HALTED already."""
        now = self.ctx.clock.now()
        state = self.ess.trip(now, alarm, actor)
        if state is None:
            return None
        self.ctx.log.error("ESS tripped: HALTED", reason=alarm.reason, detail=alarm.detail,
                           actor=actor)
        ess_trips.labels(*self._labels, alarm.reason).inc()
        self._show()
        change = self._change_event(state, alarm.cause_id)
        self._unsaved = (state, change)
        self._last_save_try = 0
        self._outbox.append((ORDERS, [self._cancel_command(now, state, change.id)]))
        self._outbox.append((RISK_EVENTS, [change]))
        self._outbox.append((ALERTS_STREAM, [self._alert(
            now, "critical", ESS_TRIPPED,
            f"ESS HALTED by {actor}: {alarm.reason}: {alarm.detail}", change.id,
        )]))
        await self.flush_soon()
        return state

    async def trip_manually(self, actor: str, why: str) -> EssState | None:
        """An operator's trip (API, CLI)."""
        return await self.trip(Alarm(reason=MANUAL, detail=why), actor)

    async def reset(self, actor: str, why: str) -> EssState | ResetRefused:
        """An operator's reset: refused while ACTIVE or within the cooldown; otherwise
        saved first, then applied.

        Raises:
            Exception: the store failed; the ESS stays HALTED.
        """
        async with self._reset_lock:
            now = self.ctx.clock.now()
            plan = self.ess.plan_reset(now, actor, why)
            if isinstance(plan, ResetRefused):
                return plan
            change = self._change_event(plan, "")
            if self.store is not None:
                await self.store.save(plan, change)
            # The reset supersedes a trip still unsaved (the bus records that one).
            self._unsaved = None
            self.ess.apply(plan)
            self.guards.rebase(self._equity(), now)
            self._show()
            self.ctx.log.warning("ESS reset: ACTIVE", actor=plan.actor, why=plan.detail)
            self._outbox.append((RISK_EVENTS, [change]))
            self._outbox.append((ALERTS_STREAM, [self._alert(
                now, "info", ESS_RESET, f"ESS reset to ACTIVE by {plan.actor}: {plan.detail}",
                change.id,
            )]))
            await self.flush_soon()
            return plan

    async def update_pause(self, now: int) -> None:
        """Pause new orders on the symbols whose data is stale now; lift the pause of
        those that traded again. Each change is logged and alerted once."""
        stale = self.guards.stale.stale(now)
        if stale == self.paused:
            return
        started, ended = sorted(stale - self.paused), sorted(self.paused - stale)
        self.paused = stale
        self._paused_gauge.set(len(stale))
        limit = self.config.stale_after_ns / NS
        if started:
            message = (f"new orders paused on {', '.join(started)}: no trade for more than "
                       f"{limit:g} s; they resume at the next trade")
            self.ctx.log.warning("trading paused: stale market data", symbols=started)
            self._outbox.append(
                (ALERTS_STREAM, [self._alert(now, "warning", TRADING_PAUSED, message, "")]))
        if ended:
            self.ctx.log.info("trading resumed: market data flows", symbols=ended)
            self._outbox.append((ALERTS_STREAM, [self._alert(
                now, "info", TRADING_RESUMED,
                f"new orders resumed on {', '.join(ended)}: trades again", "")]))
        await self.flush_soon()

    def _change_event(self, state: EssState, cause: str) -> EssChange:
        ts = state.since_ns
        change_id = self.ctx.ids.next(ts)
        return EssChange(
            id=change_id, ts=ts, correlation_id=cause or change_id, causation_id=cause,
            source=self.ctx.instance, state=state.state, reason=state.reason,
            actor=state.actor, detail=state.detail,
        )

    def _cancel_command(self, now: int, state: EssState, cause: str) -> CancelOrders:
        command_id = self.ctx.ids.next(now)
        return CancelOrders(
            id=command_id, ts=now, correlation_id=cause or command_id, causation_id=cause,
            source=self.ctx.instance, reason=f"ESS HALTED: {state.reason}",
        )

    def _alert(self, now: int, level: Level, code: str, message: str, cause: str) -> Alert:
        alert_id = self.ctx.ids.next(now)
        return Alert(
            id=alert_id, ts=now, correlation_id=cause or alert_id, causation_id=cause,
            source=self.ctx.instance, level=level, code=code, message=message,
        )

    async def flush(self) -> None:
        """Save the ESS state if unsaved, then publish what waits, in order.

        A failed save is retried at most once per second of clock time (a dead store
        must not slow every batch down); a failed publish raises, so the batch in hand
        is retried and the outbox goes first then.
        """
        async with self._flush_lock:
            pending = self._unsaved
            now = self.ctx.clock.now()
            if (pending is not None and self.store is not None
                    and (not self._last_save_try or now - self._last_save_try >= NS)):
                self._last_save_try = now
                try:
                    await self.store.save(*pending)
                except Exception as exc:
                    self.ctx.log.error("ESS state not saved; retrying", error=str(exc))
                else:
                    if self._unsaved is pending:
                        self._unsaved = None
            elif self.store is None:
                self._unsaved = None
            outbox = self._outbox
            while outbox:
                topic, events = outbox[0]
                await self.ctx.publish(topic, events)
                outbox.pop(0)

    async def flush_soon(self) -> None:
        """Flush now if the bus lets us; else the next batch or tick does (the change
        itself has happened: it must not be undone by a failed publish)."""
        try:
            await self.flush()
        except Exception as exc:
            self.ctx.log.error("ESS change not published yet; retrying", error=str(exc))

    def _show(self) -> None:
        state = self.ess.state
        self._halted_gauge.set(1 if state.halted else 0)
        self._changed_gauge.set(state.since_ns / NS)
        labels = (state.state, state.reason or "start")
        if labels != self._info_labels:
            if self._info_labels is not None:
                ess_info.remove(*self._labels, *self._info_labels)
            ess_info.labels(*self._labels, *labels).set(1)
            self._info_labels = labels

    def status(self) -> dict[str, object]:
        """The ESS for people and probes: state, why, since when, cooldown, trips."""
        state = self.ess.state
        left = self.ess.cooldown_left_ns(self.ctx.clock.now())
        return {
            "state": state.state,
            "reason": state.reason,
            "detail": state.detail,
            "actor": state.actor,
            "since": iso(state.since_ns) if state.since_ns else None,
            "since_ns": state.since_ns,
            "cooldown_s": self.config.cooldown_ns / NS,
            "cooldown_left_s": round(left / NS, 3),
            "saved": self._unsaved is None,
            "trips": [
                {"reason": t.reason, "detail": t.detail, "actor": t.actor,
                 "at": iso(t.since_ns), "ts": t.since_ns}
                for t in self.ess.trips()
            ],
        }
