"""Faults of the fake Binance: what to inject, and the book that hands them out.

A fault is one-shot (``times=1``, the default), N times, or for a duration, and counts
how often it fired: a scenario runner that injected a fault which never fired knows its
verdict is *unknown*, not *pass*.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Literal

import msgspec

FaultKind = Literal[
    "rate_limit", "order_rate_limit", "ban", "server_error", "timeout", "delay",
    "unknown_status", "partial_fill", "reject",
    "ws_drop", "ws_duplicate", "ws_reorder", "ws_skip", "ws_silence", "ws_refuse",
]
Apply = Literal["never", "before", "after"]


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """A fault to inject into the fake.

    Args:
        kind: what happens. REST: ``rate_limit`` (429, -1003), ``order_rate_limit``
            (429, -1015), ``ban`` (418 on every request for ``retry_after_s``),
            ``server_error`` (``status``, 503 by default), ``timeout`` (no answer for
            ``delay_s``, or until the fake stops when 0), ``delay`` (a slow but normal
            answer), ``unknown_status`` (-1007, execution status unknown),
            ``partial_fill`` (a market order fills ``fill_ratio`` in ``parts`` fills, the
            rest expires), ``reject`` (400 with ``code``/``msg``). Websocket:
            ``ws_drop`` (close every stream connection now, ``status`` as close code),
            ``ws_duplicate`` / ``ws_reorder`` / ``ws_skip`` (the next trades sent twice,
            swapped pairwise, or never sent), ``ws_silence`` (trades not sent, the
            connection kept), ``ws_refuse`` (new connections rejected).
        endpoint: ``"*"`` or ``"[METHOD ]PATH"`` such as ``"POST /api/v3/order"``.
        times: how many requests (or trades) it hits; None: every one while it lasts.
        duration_s: how long it lasts; None: until ``times`` is used up.
        status: HTTP status (or websocket close code) instead of the kind's default.
        retry_after_s: ``Retry-After`` of rate limits and bans (below 1 s it is sent
            fractional, so tests run fast; Binance sends whole seconds).
        delay_s: how long ``timeout``/``delay`` hold the request.
        apply: whether the request still takes effect: ``never``, ``before`` the fault
            (an order placed whose answer is lost or an error), ``after`` ``delay_s``
            (an order reaching the matching engine after the client gave up).
        fill_ratio, parts: of ``partial_fill``.
        code, msg: of ``reject``.
    """

    kind: FaultKind
    endpoint: str = "*"
    times: int | None = 1
    duration_s: float | None = None
    status: int = 0
    retry_after_s: float = 1.0
    delay_s: float = 0.0
    apply: Apply = "never"
    fill_ratio: float = 1.0
    parts: int = 1
    code: int = -2010
    msg: str = "Order would trigger immediately."


class FaultState(msgspec.Struct, kw_only=True):
    """An injected fault and how often it fired."""

    id: int
    fault: Fault
    fired: int = 0
    remaining: int | None = None
    until: float | None = None


class FaultBook:
    """The live faults, first injected first served.

    Args:
        clock: monotonic seconds (durations).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ids = itertools.count(1)
        self.live: list[FaultState] = []
        self.history: list[FaultState] = []
        """Every fault ever injected, with its final count (for reports)."""

    def add(self, fault: Fault) -> FaultState:
        until = None if fault.duration_s is None else self._clock() + fault.duration_s
        state = FaultState(id=next(self._ids), fault=fault, remaining=fault.times, until=until)
        self.history.append(state)
        self.live.append(state)
        return state

    def clear(self) -> None:
        self.live.clear()

    def take(self, kinds: tuple[str, ...], method: str = "", path: str = "") -> Fault | None:
        """The first live fault of ``kinds`` matching the request; uses one of its times."""
        now = self._clock()
        for state in list(self.live):
            fault = state.fault
            if (state.until is not None and now >= state.until) or state.remaining == 0:
                self.live.remove(state)
                continue
            if fault.kind not in kinds or not matches(fault.endpoint, method, path):
                continue
            state.fired += 1
            if state.remaining is not None:
                state.remaining -= 1
            return fault
        return None


def matches(pattern: str, method: str, path: str) -> bool:
    """Whether ``"[METHOD ]PATH"`` or ``"*"`` covers a request."""
    if pattern in ("*", "") or not path:
        return True
    want_method, _, want_path = pattern.rpartition(" ")
    return want_path == path and want_method in ("", method)
