"""A seeded synthetic market: trades for several symbols, with shapes on request.

Each symbol trades along its own ``PricePath`` (a random walk under an overlay that
carries the shapes and momentum bursts); this module merges the paths into batches.

``trades_per_s`` is the rate of the whole feed, shared out by the specs' weights.

Determinism: everything derives from ``seed`` through ``random.Random`` instances
seeded with the seed and the symbol (one for the walk, one for the bursts), so the
same seed gives the same trades, ``batch_size`` does not change them, and a shape
leaves the trades well before it unchanged. Nothing reads the clock: time starts at
``start_ns``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter
from typing import Final

from cdb.errors import InputError
from cdb.events import Trade
from cdb.marketdata.pricepath import DEFAULT_SPECS, PricePath, SymbolSpec, generic_spec, segments
from cdb.marketdata.shapes import (
    Shape,
    check_shape,
)

START_NS: Final = 1_704_067_200_000_000_000
"""2024-01-01T00:00:00Z, the default start of synthetic time."""
_NS: Final = 1_000_000_000
_BLOCK_S_MIN: Final = 1.0


class SyntheticSource:
    """Generate trades lazily, in event-time order, ``batch_size`` at most per batch.

    Each call of ``batches`` generates the same trades again.

    Args:
        seed: drives all randomness.
        symbols: names (known ones get ``DEFAULT_SPECS``) or full ``SymbolSpec``s.
        duration_s: simulated seconds to generate.
        start_ns: event time of the start.
        shapes: market shapes to inject.
        source: the ``source`` of the events.
        venue: venue of the trades (part of each trade's id).
        batch_size: most trades per batch.
        trades_per_s: mean trades per second over all symbols.
        bursts_per_hour: momentum moves per symbol per hour (0 for none).
    """

    def __init__(
        self,
        *,
        seed: int,
        symbols: Sequence[str | SymbolSpec] = ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
        duration_s: float,
        start_ns: int = START_NS,
        shapes: Iterable[Shape] = (),
        source: str = "ws",
        venue: str = "synthetic",
        batch_size: int = 1000,
        trades_per_s: float = 50.0,
        bursts_per_hour: float = 2.0,
    ) -> None:
        specs = [
            s if isinstance(s, SymbolSpec) else DEFAULT_SPECS.get(s) or generic_spec(s)
            for s in symbols
        ]
        names = [s.symbol for s in specs]
        if not specs or len(set(names)) != len(names):
            raise InputError(f"symbols must be non-empty and distinct, got {names}")
        for s in specs:
            if min(s.price, s.tick_e8, s.lot_e8, s.weight, s.notional) <= 0 or s.vol < 0:
                raise InputError(f"{s}: price, tick, lot, weight and notional must be > 0")
        if duration_s < 0 or trades_per_s <= 0 or batch_size < 1 or bursts_per_hour < 0:
            raise InputError(
                "duration_s must be >= 0, trades_per_s > 0, batch_size >= 1 and "
                f"bursts_per_hour >= 0 (got {duration_s}, {trades_per_s}, {batch_size}, "
                f"{bursts_per_hour})"
            )
        self.shapes = tuple(shapes)
        for shape in self.shapes:
            check_shape(shape, names, duration_s)
        self.seed = seed
        self.specs = tuple(specs)
        self.duration_s = duration_s
        self.start_ns = start_ns
        self.source = source
        self.venue = venue
        self.batch_size = batch_size
        self.trades_per_s = trades_per_s
        self.bursts_per_hour = bursts_per_hour

    def batches(self) -> Iterator[list[Trade]]:
        """Yield the trades in event-time order, ``batch_size`` at most per batch."""
        end_ns = self.start_ns + int(self.duration_s * _NS)
        paths = [self._path(spec) for spec in self.specs]
        # Blocks of about one batch keep memory flat and amortise the per-block merge.
        block_ns = int(max(_BLOCK_S_MIN, self.batch_size / self.trades_per_s) * _NS)
        size = self.batch_size
        pending: list[Trade] = []
        block_end = self.start_ns
        while block_end < end_ns:
            block_end = min(block_end + block_ns, end_ns)
            for path in paths:
                pending += path.until(block_end)
            if len(paths) > 1:
                # Sorted runs per symbol: timsort merges them in C; ties keep symbol order.
                pending.sort(key=_ts)
            while len(pending) >= size:
                yield pending[:size]
                del pending[:size]
        if pending:
            yield pending

    def _path(self, spec: SymbolSpec) -> PricePath:
        # Separate generators for the walk and the bursts: shapes displace bursts, and
        # that must not reshuffle the walk, or a shape would change the trades before it.
        walk_rng = random.Random(f"cdb.synthetic:{self.seed}:{spec.symbol}")
        burst_rng = random.Random(f"cdb.bursts:{self.seed}:{spec.symbol}")
        return PricePath(
            spec,
            rate=self.trades_per_s * spec.weight / sum(s.weight for s in self.specs),
            rng=walk_rng,
            start_ns=self.start_ns,
            segments=segments(
                spec, shapes=self.shapes, duration_s=self.duration_s, start_ns=self.start_ns,
                bursts_per_hour=self.bursts_per_hour, rng=burst_rng,
            ),
            venue=self.venue,
            source=self.source,
        )


_ts = attrgetter("ts")
