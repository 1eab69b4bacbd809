"""Replay Binance public-data trade files (data.binance.vision) as ``Trade`` batches.

Files are sniffed and opened by ``replay_files``, decoded row by row (with a fast path)
by ``replay_rows``; this module merges several files by event time into batches.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from operator import attrgetter
from pathlib import Path

from cdb.errors import InputError
from cdb.events import Trade
from cdb.marketdata.replay_files import MAX_RATIO, MAX_UNCOMPRESSED, Layout, ReplayFile, sniff
from cdb.marketdata.replay_rows import FileReader, ReplayStats, RowError

__all__ = [
    "MAX_RATIO",
    "MAX_UNCOMPRESSED",
    "Layout",
    "ReplayFile",
    "ReplaySource",
    "ReplayStats",
    "RowError",
]


class ReplaySource:
    """Stream Binance trade files as batches of ``Trade`` in event-time order.

    Several files are merged by event time (each file is assumed time-ordered, as
    Binance's are; ties keep the order the paths were given in). Files are checked
    when the source is built, so a missing file or an unknown layout fails at once.
    Each call of ``batches`` replays from the start and resets ``stats``.

    Args:
        paths: one file or several; ``.csv`` or ``.zip`` holding one CSV.
        venue: venue of the trades (part of each trade's id).
        symbol: symbol of every file; by default taken from each file's name
            (``BTCUSDT-trades-2024-01-01.zip``).
        layout: ``"trades"`` or ``"aggTrades"``; by default detected from the header,
            the file name or the columns. An aggTrade's id is its aggregate id.
        source: the ``source`` of the events (the service instance).
        batch_size: most trades per batch.
        max_errors: how many malformed rows to keep in ``stats.errors``.
    """

    def __init__(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        venue: str = "binance",
        symbol: str | None = None,
        layout: Layout | None = None,
        source: str = "ws",
        batch_size: int = 1000,
        max_errors: int = 100,
    ) -> None:
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        if not paths:
            raise InputError("no replay file given")
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.venue = venue
        self.source = source
        self.batch_size = batch_size
        self.max_errors = max_errors
        self.files: tuple[ReplayFile, ...] = tuple(
            sniff(Path(p), symbol=symbol, layout=layout) for p in paths
        )
        self.stats = ReplayStats(files=len(self.files))

    def batches(self) -> Iterator[list[Trade]]:
        """Yield the trades of all files in event-time order, ``batch_size`` at most."""
        self.stats = ReplayStats(files=len(self.files))
        streams = [FileReader(f, self).chunks() for f in self.files]
        merged = streams[0] if len(streams) == 1 else _merge(streams)
        size = self.batch_size
        pending: list[Trade] = []
        for chunk in merged:
            if not pending and len(chunk) == size:
                yield chunk
                continue
            pending += chunk
            if len(pending) >= size:
                cut = len(pending) - len(pending) % size
                for start in range(0, cut, size):
                    yield pending[start : start + size]
                del pending[:cut]
        if pending:
            yield pending

    def record(self, path: str, line: int, reason: str) -> None:
        """Count one malformed row and keep its error (the first ``max_errors``)."""
        stats = self.stats
        stats.malformed += 1
        if len(stats.errors) < self.max_errors:
            stats.errors.append(RowError(path=path, line=line, reason=reason))


_ts = attrgetter("ts")


def _merge(streams: list[Iterator[list[Trade]]]) -> Iterator[list[Trade]]:
    """Merge time-ordered chunk streams into time-ordered chunks.

    Everything up to the earliest "last buffered time" of the live streams is safe to
    emit; sorting that slice is cheap because timsort merges the already sorted runs
    in C, where a per-trade heap merge would cost a Python step per trade.
    """
    buffers: list[list[Trade]] = [[] for _ in streams]
    live = list(range(len(streams)))
    while live:
        for i in list(live):
            if not buffers[i]:
                nxt = next(streams[i], None)
                while nxt is not None and not nxt:
                    nxt = next(streams[i], None)
                if nxt is None:
                    live.remove(i)
                else:
                    buffers[i] = nxt
        if not live:
            break
        horizon = min(buffers[i][-1].ts for i in live)
        out: list[Trade] = []
        for i in live:
            buf = buffers[i]
            cut = bisect_right(buf, horizon, key=_ts)
            if cut:
                out += buf[:cut]
                buffers[i] = buf[cut:]
        out.sort(key=_ts)
        yield out

