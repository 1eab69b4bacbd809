"""One synthetic symbol's price path: its spec, its random walk and its overlay.

Each symbol's price is a multiplicative random walk (GBM in the small-step limit),
stepped once per trade with a volatility scaled so the annualised figure of its
``SymbolSpec`` holds at its trade rate. Trades arrive as a Poisson process
(exponential inter-arrival times); sizes are heavy-tailed around the spec's mean
notional. Defaults give the feel of a spot market: 50 trades/s in total and a quote
volume of some 150k to 700k USDT per symbol per minute.

On top of the walk sits a deterministic price *overlay*, piecewise linear in time,
which carries the shapes (flash crash, spike, gap jump) and the natural momentum
moves: ``bursts_per_hour`` times per symbol per hour (on a jittered grid, so the
count is fixed and the timing random) the price trends 3.5 to 6 % up or down over
10 to 40 s and stays there. A momentum strategy with a 3 % threshold in a 60 s
lookback therefore sees about ``bursts_per_hour`` signals per symbol per hour; bursts
keep 60 s clear of any shape on the same symbol so shapes stay exact.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from math import floor
from typing import Final

import msgspec

from cdb.events import SCALE, Trade, trade_event_id
from cdb.marketdata.shapes import Shape

_NS: Final = 1_000_000_000
_YEAR_S: Final = 365 * 24 * 3600
_HOLD_MIN_S: Final = 1.0
_QUIET_S: Final = 60.0
"""Bursts keep this far from a shape on the same symbol."""
_BITS: Final = 10
_LEVELS: Final = 1 << _BITS
_HALF: Final = _LEVELS // 2


class SymbolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How one synthetic symbol trades.

    Args:
        symbol: the symbol name.
        price: start price.
        tick_e8: price step (e8).
        lot_e8: quantity step (e8); every trade is at least one lot.
        weight: share of the trades (normalised over the chosen symbols).
        vol: annualised volatility of the random walk (0.5 is 50 %).
        notional: mean trade value in quote currency.
    """

    symbol: str
    price: float
    tick_e8: int
    lot_e8: int
    weight: float
    vol: float
    notional: float


DEFAULT_SPECS: Final = {
    s.symbol: s
    for s in (
        SymbolSpec(
            symbol="BTCUSDT",
            price=42_000.0,
            tick_e8=1_000_000,
            lot_e8=1_000,
            weight=0.5,
            vol=0.5,
            notional=450.0,
        ),
        SymbolSpec(
            symbol="ETHUSDT",
            price=2_300.0,
            tick_e8=1_000_000,
            lot_e8=10_000,
            weight=0.3,
            vol=0.65,
            notional=300.0,
        ),
        SymbolSpec(
            symbol="SOLUSDT",
            price=100.0,
            tick_e8=1_000_000,
            lot_e8=100_000,
            weight=0.2,
            vol=0.9,
            notional=250.0,
        ),
        SymbolSpec(
            symbol="BNBUSDT",
            price=310.0,
            tick_e8=10_000_000,
            lot_e8=100_000,
            weight=0.15,
            vol=0.6,
            notional=200.0,
        ),
        SymbolSpec(
            symbol="XRPUSDT",
            price=0.62,
            tick_e8=10_000,
            lot_e8=100_000_000,
            weight=0.15,
            vol=0.8,
            notional=150.0,
        ),
        SymbolSpec(
            symbol="DOGEUSDT",
            price=0.09,
            tick_e8=1_000,
            lot_e8=100_000_000,
            weight=0.15,
            vol=0.9,
            notional=150.0,
        ),
    )
}
"""Specs of well-known symbols; any other symbol gets ``generic_spec``."""


def generic_spec(symbol: str) -> SymbolSpec:
    """The spec of a symbol without a default: price 100, tick 0.01, lot 0.001."""
    return SymbolSpec(
        symbol=symbol,
        price=100.0,
        tick_e8=1_000_000,
        lot_e8=100_000,
        weight=0.15,
        vol=0.8,
        notional=200.0,
    )


_WALK, _FROZEN, _FLAT, _SILENT = 0, 1, 2, 3


class _Segment(msgspec.Struct, frozen=True):
    """A stretch of time with one mode and a linear overlay ``a + b * (t - start)``."""

    start_ns: int
    end_ns: int
    mode: int
    a: float
    b: float


Ramp = list[tuple[float, float]]
"""A piecewise-linear overlay factor: (seconds, factor) knots, 1 before, last value after."""


def segments(
    spec: SymbolSpec, *, shapes: Sequence[Shape], duration_s: float, start_ns: int,
    bursts_per_hour: float, rng: random.Random,
) -> Iterator[_Segment]:
    """Cut one symbol's run into segments, lazily, from its shapes and momentum bursts.

    Lazy because a long run has many bursts: a finished ramp is folded into ``base``
    so each step costs only the ramps still active.
    """
    shape_ramps, modes, busy = _shape_plan(spec, shapes)
    duration = duration_s
    ramps = heapq.merge(
        sorted(shape_ramps), _bursts(bursts_per_hour, duration_s, rng, busy),
        key=lambda ramp: ramp[0][0],
    )
    bounds = sorted({t for a, b, _ in modes for t in (a, b) if 0 < t < duration})
    upcoming = next(ramps, None)
    active: list[Ramp] = []
    base = 1.0
    t = 0.0
    while t < duration:
        while upcoming is not None and upcoming[0][0] <= t:
            active.append(upcoming)
            upcoming = next(ramps, None)
        cuts = [duration, *(k for ramp in active for k, _ in ramp if k > t)]
        if upcoming is not None:
            cuts.append(upcoming[0][0])
        if (at := bisect_right(bounds, t)) < len(bounds):
            cuts.append(bounds[at])
        nxt = min(cuts)
        mid = (t + nxt) / 2
        mode = max((mo for a, b, mo in modes if a <= mid < b), default=_WALK)
        a = base * _overlay(active, t)
        b = (base * _overlay(active, nxt) - a) / ((nxt - t) * _NS)
        yield _Segment(start_ns + int(t * _NS), start_ns + int(nxt * _NS), mode, a, b)
        t = nxt
        for ramp in [r for r in active if r[-1][0] <= t]:
            base *= ramp[-1][1]
            active.remove(ramp)


def _shape_plan(
    spec: SymbolSpec, shapes: Sequence[Shape]
) -> tuple[list[Ramp], list[tuple[float, float, int]], list[tuple[float, float]]]:
    """The overlay ramps, the modes (from, to, mode) and the busy spans of the shapes."""
    ramps: list[Ramp] = []
    modes: list[tuple[float, float, int]] = []  # where they overlap, the higher mode wins
    busy: list[tuple[float, float]] = []
    for shape in shapes:
        if shape.symbol not in ("*", spec.symbol):
            continue
        at, d, m = shape.at_s, shape.duration_s, shape.magnitude_pct / 100
        # Overshoot the requested level by a hair so tick rounding never leaves it short.
        edge = 1e-4 + 2 * spec.tick_e8 / (spec.price * SCALE * (1 - min(m, 0.99)))
        hold = max(_HOLD_MIN_S, 0.2 * d)
        if shape.kind == "flash_crash":
            low = (1 - m) * (1 - edge)
            ramps.append(
                [(at, 1.0), (at + d, low), (at + d + hold, low), (at + 3 * d + hold, 1 - m / 2)]
            )
            modes.append((at, at + d + hold, _FROZEN))
            busy.append((at, at + 3 * d + hold))
        elif shape.kind == "spike":
            high = (1 + m) * (1 + edge)
            ramps.append(
                [(at, 1.0), (at + d, high), (at + d + hold, high), (at + 2 * d + hold, 1.0)]
            )
            modes.append((at, at + d + hold, _FROZEN))
            busy.append((at, at + 2 * d + hold))
        elif shape.kind == "gap":
            # The jump happens unseen, while nothing trades.
            ramps.append([(at, 1.0), (at + d, 1 + m)])
            modes.append((at, at + d, _SILENT))
            busy.append((at, at + d))
        else:
            modes.append((at, at + d, _FLAT if shape.kind == "flat" else _SILENT))
            busy.append((at, at + d))
    return ramps, modes, busy


def _bursts(
    bursts_per_hour: float, duration_s: float, rng: random.Random,
    busy: list[tuple[float, float]],
) -> Iterator[Ramp]:
    """Momentum moves in start order: one per slot of a jittered grid, clear of shapes."""
    if bursts_per_hour <= 0:
        return
    every = 3600 / bursts_per_hour
    slot = rng.uniform(-every, 0)  # so the first burst can fall anywhere
    while slot < duration_s:
        t0 = slot + rng.uniform(0, every)
        d = rng.uniform(10, 40)
        m = rng.uniform(0.035, 0.06) * rng.choice((-1, 1))
        slot += every
        if t0 < 0 or t0 >= duration_s:
            continue
        if any(t0 < b + _QUIET_S and t0 + d > a - _QUIET_S for a, b in busy):
            continue
        yield [(t0, 1.0), (t0 + d, 1 + m)]


def _overlay(ramps: list[Ramp], t: float) -> float:
    value = 1.0
    for ramp in ramps:
        at = bisect_right(ramp, (t, math.inf))
        if at == 0:
            continue
        if at == len(ramp):
            value *= ramp[-1][1]
            continue
        (t0, v0), (t1, v1) = ramp[at - 1], ramp[at]
        value *= v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return value


class PricePath:
    """One symbol's trades: its walk, its clock and its segments."""

    def __init__(
        self,
        spec: SymbolSpec,
        *,
        rate: float,
        rng: random.Random,
        start_ns: int,
        segments: Iterator[_Segment],
        venue: str,
        source: str,
    ) -> None:
        self.spec = spec
        self.rng = rng
        # Draws come from tables indexed by random bits: a table lookup is several times
        # cheaper than a call into ``random`` plus ``log``. 1024 levels are plenty, and
        # small tables stay in cache: 4096 levels measured a third slower.
        levels = [(k + 0.5) / _LEVELS for k in range(_LEVELS)]
        gap_ns = _NS / rate
        self.gaps = [int(-math.log(1.0 - u) * gap_ns) for u in levels]
        # A uniform step of half-width h has standard deviation h / sqrt(3).
        half_width = math.sqrt(3) * spec.vol / math.sqrt(_YEAR_S * rate)
        self.steps = [1.0 + (2 * u - 1) * half_width for u in levels]
        # E**2 / 2 with E exponential has mean 1 and the fat tail of real trade sizes.
        lots = spec.notional * SCALE / spec.lot_e8
        self.sizes = [lots * math.log(1.0 - u) ** 2 / 2 for u in levels]
        self.walk = spec.price
        self.t_ns = start_ns + self.gaps[rng.getrandbits(_BITS)]
        self.segments = segments
        self.seg: _Segment | None = next(segments, None)
        self.trade_id = 1_000_000 + rng.randrange(1_000_000)
        self.last_price = 0
        self.prefix = trade_event_id(venue, spec.symbol, 0)[:-1]
        self.venue = venue
        self.source = source

    def until(self, end_ns: int) -> list[Trade]:
        """The trades from where the path stands up to (excluding) ``end_ns``."""
        out: list[Trade] = []
        while self.t_ns < end_ns and (seg := self.seg) is not None:
            if self.t_ns >= seg.end_ns:
                self.seg = next(self.segments, None)
                continue
            stop = min(end_ns, seg.end_ns)
            if seg.mode == _SILENT:
                self.t_ns = max(self.t_ns, stop)
                if stop == seg.end_ns:
                    self.t_ns += self.gaps[self.rng.getrandbits(_BITS)]
                continue
            self._run(seg, stop, out)
        return out

    def _run(self, seg: _Segment, stop: int, out: list[Trade]) -> None:
        """Generate trades within one segment up to ``stop``: the hot loop."""
        spec = self.spec
        bits = self.rng.getrandbits
        steps, gaps, sizes = self.steps, self.gaps, self.sizes
        make = Trade
        add = out.append
        prefix, venue, source, symbol = self.prefix, self.venue, self.source, spec.symbol
        t, walk, tid = self.t_ns, self.walk, self.trade_id
        a, b, s0 = seg.a, seg.b, seg.start_ns
        tick, lot = spec.tick_e8, spec.lot_e8
        per_tick = SCALE / tick
        walking = seg.mode == _WALK
        fixed = seg.mode == _FLAT
        if fixed and not self.last_price:
            self.last_price = (floor(walk * a * per_tick + 0.5) or 1) * tick
        price = self.last_price
        while t < stop:
            k = bits(_BITS)
            if walking:
                walk *= steps[k]
            level = walk * (a + b * (t - s0)) if b else walk * a
            # floor() rather than int(): calling the int type costs several times more.
            if not fixed:
                price = (floor(level * per_tick + 0.5) or 1) * tick
            qty = (floor(sizes[bits(_BITS)] / level) or 1) * lot
            tid += 1
            i = prefix + str(tid)
            # A down-tick is a sell hitting the bid, so the buyer was the maker.
            add(
                make(
                    id=i,
                    ts=t,
                    correlation_id=i,
                    causation_id=i,
                    source=source,
                    venue=venue,
                    symbol=symbol,
                    trade_id=tid,
                    price_e8=price,
                    qty_e8=qty,
                    buyer_maker=k < _HALF,
                )
            )
            t += gaps[bits(_BITS)]
        self.t_ns, self.walk, self.trade_id, self.last_price = t, walk, tid, price
