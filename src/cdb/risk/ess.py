"""The emergency stop system (ESS): a state machine ACTIVE / HALTED and the guards that
trip it. Pure: no I/O and no clock.

Every transition is a function of the events handed in and of the time passed in (ns),
so the simulated clock drives it in tests and replays exactly as the wall clock does
live, and the same inputs always give the same trips.

- ``EmergencyStop`` holds the state. It trips on an ``Alarm`` (from a guard, or by
  hand) and resets only by hand, only after the cooldown, with who and why.
- The guards watch the portfolio and the market: ``DrawdownGuard`` (equity down from
  its peak by more than a limit), ``FlashCrashGuard`` (a price down at least a share
  within a window), ``ErrorBurstGuard`` (exchange errors or rejections piling up),
  ``StaleDataGuard`` (a symbol without trades for too long while the bus is up; a
  shorter silence only pauses new orders on it).

Limits are parts per million and compared in integers, so a boundary is exact: a
drawdown of exactly the limit does not trip (the limit is allowed, like every risk
limit), a drop of exactly the flash-crash share within exactly the window does.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable
from itertools import accumulate, compress, islice, pairwise
from operator import attrgetter, gt, le
from typing import Final, Literal

import msgspec

from cdb.events import Trade, fmt_e8

NS: Final = 1_000_000_000
PPM: Final = 1_000_000

EssStateName = Literal["ACTIVE", "HALTED"]
ACTIVE: Final = "ACTIVE"
HALTED: Final = "HALTED"

# Reasons of changes (EssChange.reason, label of cdb_ess_trips_total).
DRAWDOWN: Final = "drawdown"
FLASH_CRASH: Final = "flash_crash"
ERROR_BURST: Final = "error_burst"
STALE_DATA: Final = "stale_data"
MANUAL: Final = "manual"
RESET: Final = "manual_reset"
TRIP_REASONS: Final = (DRAWDOWN, FLASH_CRASH, ERROR_BURST, STALE_DATA, MANUAL)

# Why a reset is refused (ResetRefused.reason).
NOT_HALTED: Final = "not_halted"
COOLDOWN: Final = "cooldown"
MISSING_WHO_WHY: Final = "missing_who_or_why"


class EssConfig(msgspec.Struct, frozen=True, kw_only=True):
    """When the ESS trips by itself, and how long a trip holds at least.

    Shares are parts per million (100_000 is 10 %); times are ns.
    """

    drawdown_limit_ppm: int = 100_000
    """Trip when equity is more than this below its peak."""
    flash_crash_drop_ppm: int = 150_000
    """Trip when a price falls at least this much within ``flash_crash_window_ns``."""
    flash_crash_window_ns: int = 60 * NS
    error_burst_count: int = 5
    """Trip on this many exchange errors or rejections within ``error_burst_window_ns``."""
    error_burst_window_ns: int = 60 * NS
    stale_after_ns: int = 30 * NS
    """Pause new orders on a symbol seen before that has had no trade for longer (lifted
    at its next trade); 0 turns the stale-data guard off, pause and trip."""
    stale_halt_after_ns: int = 300 * NS
    """Trip when such a symbol stays silent this long while the bus is up; 0: never."""
    cooldown_ns: int = 300 * NS
    """A reset is refused until this long after the trip."""


class EssState(msgspec.Struct, frozen=True, kw_only=True):
    """The ESS state as persisted (Redis) and recorded (``EssChange``).

    ``reason``, ``detail`` and ``actor`` describe the change into this state;
    ``since_ns`` is when it happened (for HALTED, the trip time the cooldown runs from).
    """

    state: EssStateName = "ACTIVE"
    reason: str = ""
    detail: str = ""
    actor: str = ""
    since_ns: int = 0

    @property
    def halted(self) -> bool:
        return self.state == HALTED


class Alarm(msgspec.Struct, frozen=True, kw_only=True):
    """A condition that trips the ESS: a reason from ``TRIP_REASONS`` and what was seen."""

    reason: str
    detail: str
    cause_id: str = ""
    """The event that revealed it (a trade, a fill, an alert), for the audit chain."""


class ResetRefused(msgspec.Struct, frozen=True, kw_only=True):
    """Why a reset was refused; ``retry_after_ns`` is the cooldown left (else 0)."""

    reason: str
    detail: str
    retry_after_ns: int = 0


class EmergencyStop:
    """The ESS state machine.

    Args:
        config: the cooldown (the guards read the rest).
        state: the state to start in (restored after a restart); ACTIVE by default.
    """

    __slots__ = ("config", "history", "state")

    def __init__(self, config: EssConfig, state: EssState | None = None) -> None:
        self.config = config
        self.state = state or EssState()
        self.history: list[EssState] = []
        """Every change this process made or adopted, oldest first (for summaries)."""

    @property
    def halted(self) -> bool:
        return self.state.halted

    def trip(self, now: int, alarm: Alarm, actor: str) -> EssState | None:
        """HALT for ``alarm``; the new state, or None when already HALTED (first trip
        wins: its time starts the cooldown)."""
        if self.state.halted:
            return None
        self.state = EssState(
            state=HALTED, reason=alarm.reason, detail=alarm.detail, actor=actor,
            since_ns=self._after_last(now),
        )
        self.history.append(self.state)
        return self.state

    def plan_reset(self, now: int, actor: str, why: str) -> EssState | ResetRefused:
        """The ACTIVE state a reset by ``actor`` for ``why`` at ``now`` leads to, or why it
        is refused. Nothing changes until ``apply``: the caller persists first."""
        if not actor.strip() or not why.strip():
            return ResetRefused(
                reason=MISSING_WHO_WHY, detail="a reset needs who (actor) and why (reason)"
            )
        if not self.state.halted:
            return ResetRefused(reason=NOT_HALTED, detail="the ESS is ACTIVE; nothing to reset")
        left = self.cooldown_left_ns(now)
        if left > 0:
            return ResetRefused(
                reason=COOLDOWN,
                detail=f"cooldown: reset possible in {left / NS:.1f} s "
                f"(tripped for {self.state.reason}, cooldown {self.config.cooldown_ns / NS:g} s)",
                retry_after_ns=left,
            )
        return EssState(state=ACTIVE, reason=RESET, detail=why.strip(), actor=actor.strip(),
                        since_ns=self._after_last(now))

    def _after_last(self, now: int) -> int:
        # The latest change is the state: a change must sort after the one before it
        # even when this clock is behind the record (a simulated run restarting at its
        # start time after a change stamped later, by another run or by hand).
        return max(now, self.state.since_ns + 1)

    def restore(self, state: EssState) -> None:
        """Start from ``state`` as persisted (after a restart): not a change of this
        process, so not in ``history``."""
        self.state = state

    def apply(self, state: EssState) -> None:
        """Take ``state`` (a planned reset, or one adopted from another instance)."""
        self.state = state
        self.history.append(state)

    def cooldown_left_ns(self, now: int) -> int:
        """Time until a reset is allowed (0 when ACTIVE or when it is allowed now).

        Never more than the cooldown, even if ``now`` is before the trip (a restored
        state recorded by a simulated clock that ran further than this one).
        """
        if not self.state.halted:
            return 0
        cooldown = self.config.cooldown_ns
        return max(0, min(cooldown, self.state.since_ns + cooldown - now))

    def trips(self) -> list[EssState]:
        """The trips in ``history``, oldest first."""
        return [s for s in self.history if s.halted]


class DrawdownGuard:
    """Equity more than ``limit_ppm`` below its peak since start (or the last reset).

    Args:
        limit_ppm: the allowed drawdown; exactly this much does not trip.
        peak_e8: the equity to measure from (initial cash).
    """

    __slots__ = ("limit_ppm", "peak_e8")

    def __init__(self, limit_ppm: int, peak_e8: int) -> None:
        self.limit_ppm = limit_ppm
        self.peak_e8 = peak_e8

    def check(self, equity_e8: int) -> Alarm | None:
        peak = self.peak_e8
        if equity_e8 >= peak:
            self.peak_e8 = equity_e8
            return None
        if peak <= 0 or (peak - equity_e8) * PPM <= self.limit_ppm * peak:
            return None
        share = (peak - equity_e8) * 100 / peak
        return Alarm(
            reason=DRAWDOWN,
            detail=f"equity {fmt_e8(equity_e8)} is {share:.2f} % below its peak "
            f"{fmt_e8(peak)} (limit {self.limit_ppm / 10_000:g} %)",
        )

    def rebase(self, equity_e8: int) -> None:
        """Measure from ``equity_e8`` on (after a reset the loss so far is accepted)."""
        self.peak_e8 = equity_e8


class FlashCrashGuard:
    """A price down at least ``drop_ppm`` from its high within ``window_ns`` of trade time.

    Per symbol a deque of (ts, price) with prices strictly falling from front to back
    holds the candidates for the window's high: each trade is pushed and popped at most
    once, so the check costs O(1) per trade on the hot path.

    Speed: a symbol's batch whose lowest price is less than the limit below the highest
    it can be measured from (the deque's front or the batch's own high) cannot crash,
    whatever the order of its trades; when its times also run forward, it is absorbed
    with list operations that run in C, leaving the deque exactly as the trade-by-trade
    path would. Only batches that could trip take that path, the definition above.
    """

    __slots__ = ("_highs", "drop_ppm", "window_ns")

    def __init__(self, drop_ppm: int, window_ns: int) -> None:
        self.drop_ppm = drop_ppm
        self.window_ns = window_ns
        self._highs: dict[str, deque[tuple[int, int]]] = {}

    def on_trades(self, trades: Iterable[Trade]) -> Alarm | None:
        """Take in trades (in time order per symbol); the first crash seen, if any."""
        batch = trades if isinstance(trades, list) else list(trades)
        if not batch:
            return None
        symbols = dict.fromkeys(map(_SYMBOL, batch))
        if len(symbols) == 1:
            found = self._symbol(batch[0].symbol, batch)
            return found[1] if found else None
        groups: dict[str, list[Trade]] = {s: [] for s in symbols}
        for trade in batch:
            groups[trade.symbol].append(trade)
        # Symbols are independent: each group gives the same deque and alarm as the
        # mixed batch would; the first alarm in batch order wins.
        alarms = [f for s, group in groups.items() if (f := self._symbol(s, group))]
        if not alarms:
            return None
        if len(alarms) > 1:
            order = {id(t): n for n, t in enumerate(batch)}
            alarms.sort(key=lambda f: order[id(f[0])])
        return alarms[0][1]

    def _symbol(self, symbol: str, trades: list[Trade]) -> tuple[Trade, Alarm] | None:
        highs = self._highs.get(symbol)
        if highs is None:
            highs = self._highs[symbol] = deque()
        px = list(map(_PRICE, trades))
        low, high = min(px), max(px)
        top = max(high, highs[0][1]) if highs else high
        if low > 0 and (top - low) * PPM < self.drop_ppm * top:
            ts = list(map(_TS, trades))
            if _forward(highs, ts):
                self._absorb(highs, ts, px, high)
                return None
        return self._scan(symbol, highs, trades)

    def _absorb(
        self, highs: deque[tuple[int, int]], ts: list[int], px: list[int], high: int
    ) -> None:
        """The deque after a batch that cannot trip, its times running forward.

        An entry stays iff it is inside the window of the batch's last trade and priced
        strictly above every later trade (a later one at least as high pops it); the
        last trade always stays.
        """
        horizon = ts[-1] - self.window_ns
        while highs and highs[-1][1] <= high:
            highs.pop()
        while highs and highs[0][0] < horizon:
            highs.popleft()
        n = len(px)
        cut = bisect_left(ts, horizon, 0, n - 1)
        if cut < n - 1:
            later = list(accumulate(reversed(px), max))  # later[-1 - i] = max(px[i:])
            later.reverse()
            kept = compress(range(cut, n - 1), map(gt, px[cut:n - 1], later[cut + 1:]))
            highs.extend([(ts[i], px[i]) for i in kept])
        highs.append((ts[-1], px[-1]))

    def _scan(
        self, symbol: str, highs: deque[tuple[int, int]], trades: list[Trade]
    ) -> tuple[Trade, Alarm] | None:
        """Trade by trade: the definition of the guard."""
        found: tuple[Trade, Alarm] | None = None
        window, drop = self.window_ns, self.drop_ppm
        for trade in trades:
            ts, price = trade.ts, trade.price_e8
            horizon = ts - window
            while highs and highs[0][0] < horizon:
                highs.popleft()
            if highs:
                top = highs[0][1]
                if (top - price) * PPM >= drop * top and found is None:
                    found = (trade, self._alarm(symbol, highs[0][0], top, trade))
                while highs and highs[-1][1] <= price:
                    highs.pop()
            highs.append((ts, price))
        return found

    def _alarm(self, symbol: str, t0: int, top: int, trade: Trade) -> Alarm:
        price = trade.price_e8
        share = (top - price) * 100 / top
        return Alarm(
            reason=FLASH_CRASH,
            detail=f"{symbol} fell {share:.2f} % within {(trade.ts - t0) / NS:.1f} s "
            f"({fmt_e8(top)} -> {fmt_e8(price)}; limit {self.drop_ppm / 10_000:g} % in "
            f"{self.window_ns / NS:g} s)",
            cause_id=trade.id,
        )

    def clear(self) -> None:
        """Forget the highs (after a reset, the crash that tripped is not news)."""
        self._highs.clear()


class ErrorBurstGuard:
    """``count`` exchange errors or rejections within ``window_ns`` of event time.

    Errors older than the window when they arrive (a backlog read after a restart)
    are old news and ignored; the others are kept in time order, whatever order they
    arrive in.
    """

    __slots__ = ("_times", "count", "window_ns")

    def __init__(self, count: int, window_ns: int) -> None:
        self.count = count
        self.window_ns = window_ns
        self._times: list[int] = []

    def on_error(self, ts: int, now: int, what: str) -> Alarm | None:
        """One error at event time ``ts`` seen at ``now``; an alarm once it makes a burst."""
        window = self.window_ns
        if ts < now - window:
            return None
        times = self._times
        insort(times, ts)
        horizon = times[-1] - window
        drop = bisect_left(times, horizon)
        if drop:
            del times[:drop]
        if len(times) < self.count:
            return None
        return Alarm(
            reason=ERROR_BURST,
            detail=f"{len(times)} exchange errors or rejections within "
            f"{window / NS:g} s (last: {what})",
        )

    def clear(self) -> None:
        self._times.clear()


class StaleDataGuard:
    """Symbols seen before that have had no trade for too long, in clock time.

    Two limits, because a silent market is not always a dead market:

    - past ``after_ns`` a symbol is *stale*: risk pauses new orders on it (reducing
      ones still pass) and lifts the pause by itself at its next trade;
    - past ``halt_after_ns`` of silence *while the bus was healthy* it trips the
      latched ESS: the feed itself is dead, not cdb's own Redis. Time the bus was down
      does not count, so an outage of cdb's infrastructure never latches a HALT.

    Time is the clock's when the trades were received, not the trades' own: a replay of
    old trades is fresh data, a feed that stops is stale whatever its timestamps said.
    """

    __slots__ = ("_last", "after_ns", "halt_after_ns")

    def __init__(self, after_ns: int, halt_after_ns: int = 0) -> None:
        self.after_ns = after_ns
        self.halt_after_ns = halt_after_ns
        self._last: dict[str, int] = {}

    def seen(self, symbols: Iterable[str], now: int) -> None:
        last = self._last
        for symbol in symbols:
            last[symbol] = now

    def stale(self, now: int) -> frozenset[str]:
        """The symbols silent for more than ``after_ns`` (exactly the limit is fresh)."""
        after = self.after_ns
        if after <= 0:
            return frozenset()
        return frozenset(s for s, last in self._last.items() if now - last > after)

    def check(self, now: int, healthy_since: int | None) -> Alarm | None:
        """The latched trip: the stalest symbol silent for more than ``halt_after_ns``
        counted from ``healthy_since`` (when the bus last came back; None while it is
        down), if any."""
        after, halt = self.after_ns, self.halt_after_ns
        if after <= 0 or halt <= 0 or healthy_since is None or not self._last:
            return None
        symbol, last = min(self._last.items(), key=lambda kv: (kv[1], kv[0]))
        counted = now - max(last, healthy_since)
        if counted <= halt:
            return None
        silent = now - last
        since = "" if counted == silent else f", {counted / NS:.1f} s of it with the bus up"
        return Alarm(
            reason=STALE_DATA,
            detail=f"no {symbol} trade for {silent / NS:.1f} s{since} (limit {halt / NS:g} s)",
        )

    def forget(self) -> None:
        """Stop watching every symbol until it trades again (the source said it ended:
        a replay that finished is not a stale feed)."""
        self._last.clear()

    def restart(self, now: int) -> None:
        """Start every symbol's silence afresh: after a reset a feed still silent trips
        again, but only once the full limit has passed."""
        for symbol in self._last:
            self._last[symbol] = now


class Guards:
    """The four automatic triggers of one ESS.

    Args:
        config: their limits.
        equity_e8: the equity drawdown is measured from (initial cash).
    """

    __slots__ = ("drawdown", "errors", "flash_crash", "stale")

    def __init__(self, config: EssConfig, equity_e8: int) -> None:
        self.drawdown = DrawdownGuard(config.drawdown_limit_ppm, equity_e8)
        self.flash_crash = FlashCrashGuard(config.flash_crash_drop_ppm,
                                           config.flash_crash_window_ns)
        self.errors = ErrorBurstGuard(config.error_burst_count, config.error_burst_window_ns)
        self.stale = StaleDataGuard(config.stale_after_ns, config.stale_halt_after_ns)

    def rebase(self, equity_e8: int, now: int) -> None:
        """After a reset: measure afresh, so the condition that tripped needs to happen
        again (or still hold for a full limit) to trip again."""
        self.drawdown.rebase(equity_e8)
        self.flash_crash.clear()
        self.errors.clear()
        self.stale.restart(now)


_SYMBOL: Final = attrgetter("symbol")
_PRICE: Final = attrgetter("price_e8")
_TS: Final = attrgetter("ts")


def _forward(highs: deque[tuple[int, int]], ts: list[int]) -> bool:
    """Whether the deque's times and then the batch's never go back (the trade-by-trade
    path then drops a deque's expired entries from its front only)."""
    if not all(map(le, ts, islice(ts, 1, None))):
        return False
    if not highs:
        return True
    if highs[-1][0] > ts[0]:
        return False
    return len(highs) == 1 or all(a[0] <= b[0] for a, b in pairwise(highs))


def pct_to_ppm(pct: float) -> int:
    """A percentage as parts per million (10.0 -> 100_000), rounded to the nearest."""
    return round(pct * 10_000)
