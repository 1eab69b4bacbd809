"""Replay rows: one file's bytes decoded into ``Trade`` chunks, and the replay's counters.

Times are in ms (older files) or µs (spot files from 2025 on), told apart by magnitude
row by row and converted to ns. The file is streamed in chunks of ``_CHUNK`` bytes, so
memory stays flat whatever its size.

Why the fast path looks odd: a per-row ``split``/``int`` parser is too slow for the
pipeline's replay rate (benchmarks/README.md), so each chunk is rewritten with a few
C-level ``bytes.replace`` calls into a JSON array of integer arrays and decoded by
msgspec, which also validates every field against per-file constraints. A decimal
``42283.58000000`` becomes the two integers ``42283,158000000``: the ``1`` in front of
the fraction keeps its leading zeros and pins its length, so ``10**k <= frac < 2*10**k``
proves it has exactly the ``k`` decimals the file uses and the e8 value is exact integer
arithmetic. Each row ends with a ``null`` sentinel so a row with a column too many or
too few fails validation instead of shifting silently. A chunk that fails in any way is
parsed again line by line with a strict exact parser, which counts and records each
malformed row with its line number and keeps the good ones; both paths give identical
trades for good rows.
"""

from __future__ import annotations

import codecs
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any, Final, Protocol

import msgspec

from cdb.errors import InputError
from cdb.events import SCALE, Trade, trade_event_id
from cdb.marketdata.replay_files import BOOLS, ReplayFile, column_positions, open_binary

_CHUNK: Final = 32 * 1024
"""Bytes decoded per step. Small on purpose: the working set of a step (text, JSON,
rows, trades) then stays in CPU cache."""
_MAX_LINE: Final = 4 * _CHUNK
"""A longer line means a wrong file; refusing it keeps memory bounded."""
_MS_BELOW: Final = 10**14
"""A time below this is in ms (until year 5138); at or above, µs (from 1973 on)."""
_TIME_BELOW: Final = 10**17
"""Nanosecond or larger times are not a Binance format: rejected, not guessed."""
_MS: Final = 1_000_000
_US: Final = 1_000
_GIVE_UP_FAST: Final = 4
"""Consecutive mostly-failing chunks after which a file is read line by line only."""
_SLOW_BELOW: Final = 64
"""A failing piece this small is parsed line by line rather than halved again."""
_MAX_INT: Final = 2**63 - 1
"""Largest id, price_e8 or qty_e8 an event holds (int64 on the wire and in the database)."""
_MAX_WHOLE: Final = _MAX_INT // SCALE - 1
"""Largest whole part of a price or quantity whose e8 value (any 8 decimals) fits."""

_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
_INTEGER = re.compile(r"[0-9]+")
_LOWER_TF: Final = bytes.maketrans(b"TF", b"tf")
"""Turns Python-style ``True``/``False`` into JSON; no other byte of a valid row changes."""


class RowError(msgspec.Struct, frozen=True, kw_only=True):
    """One malformed row: where it was and what was wrong."""

    path: str
    line: int
    reason: str


class ReplayStats(msgspec.Struct, kw_only=True):
    """Counters of a replay, updated while it streams.

    ``rows`` counts data rows read (not the header or blank lines); every row is
    either ``decoded`` or ``malformed``. ``errors`` keeps the first ``max_errors``.
    """

    files: int = 0
    rows: int = 0
    decoded: int = 0
    malformed: int = 0
    backwards: int = 0
    """Rows whose time was before the previous row's (also counted as malformed)."""
    errors: list[RowError] = msgspec.field(default_factory=list)


class ReplayOwner(Protocol):
    """The replay a reader reads for: the events' venue and source, and its counters."""

    venue: str
    source: str
    stats: ReplayStats

    def record(self, path: str, line: int, reason: str) -> None:
        """Count one malformed row and keep its error (up to a limit)."""
        ...


class FileReader:
    """Reads one file into chunks of trades, fast path first, line by line on failure."""

    def __init__(self, file: ReplayFile, owner: ReplayOwner) -> None:
        self.file = file
        self.owner = owner
        self.prefix = trade_event_id(owner.venue, file.symbol, 0)[:-1]
        self.positions: tuple[int, ...] = ()
        self.decoder: msgspec.json.Decoder[list[Any]] | None = None
        self.fp = self.fq = self.unit = 0
        self.last_ts = 0
        """Time of the last trade kept: an earlier one is skipped as going backwards."""

    def chunks(self) -> Iterator[list[Trade]]:
        path = Path(self.file.path)
        with open_binary(path) as stream:
            yield from self._read(path, stream)

    def _read(self, path: Path, stream: IO[bytes]) -> Iterator[list[Trade]]:
        line_no = 0  # number of the last line consumed
        carry = b""
        started = False
        failures = 0
        while True:
            try:
                data = stream.read(_CHUNK)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise InputError(f"{path}: read failed after line {line_no} ({exc})") from exc
            if data:
                data = carry + data
                cut = data.rfind(b"\n") + 1
                if not cut:
                    if len(data) > _MAX_LINE:
                        raise InputError(
                            f"{path}: line {line_no + 1} is over {_MAX_LINE} bytes long; "
                            "not a Binance trades CSV"
                        )
                    carry = data
                    continue
                body, carry = data[:cut], data[cut:]
            elif carry:
                body, carry = carry + b"\n", b""
            else:
                return
            if not started:
                started = True
                body, line_no = self._start(path, body)
                if not body:
                    continue
            count = body.count(b"\n")
            if self.decoder is not None and failures < _GIVE_UP_FAST:
                trades: list[Trade] = []
                slow = self._decode(body, line_no, count, trades)
                failures = failures + 1 if slow * 2 > count else 0
            else:
                trades = self._slow(body, line_no)
            line_no += count
            if trades:
                yield trades

    def _decode(self, body: bytes, line_no: int, count: int, out: list[Trade]) -> int:
        """Append the trades of ``count`` whole lines to ``out``; return how many went slow.

        A failing chunk is halved until the fast path accepts the halves or they are
        small, so one bad row costs a few re-decodes instead of a slow chunk.
        """
        trades = self._fast(body, line_no, count)
        if trades is not None:
            out += trades
            return 0
        if count <= _SLOW_BELOW:
            out += self._slow(body, line_no)
            return count
        cut = body.find(b"\n", len(body) // 2) + 1
        if cut >= len(body):
            cut = body.rfind(b"\n", 0, len(body) - 1) + 1
        half = body.count(b"\n", 0, cut)
        slow = self._decode(body[:cut], line_no, half, out)
        return slow + self._decode(body[cut:], line_no + half, count - half, out)

    def _start(self, path: Path, body: bytes) -> tuple[bytes, int]:
        """Consume a BOM and the header, learn the columns, build the fast decoder."""
        body = body.removeprefix(codecs.BOM_UTF8)
        line_no = 0
        header = None
        if self.file.header:
            first = b""
            while not first.strip() and body:
                first, _, body = body.partition(b"\n")
                line_no += 1
            header = first.decode("utf-8", "replace").strip().split(",")
        self.positions = column_positions(path, header, self.file.layout)
        # The first row that fits sets the decimals and time unit; a bad first row
        # must not condemn the whole file to the slow path.
        for sample in body.split(b"\n", 8)[:8]:
            self.decoder = self._fast_decoder(sample.decode("ascii", "replace").split(","))
            if self.decoder is not None:
                break
        return body, line_no

    def _fast_decoder(self, sample: list[str]) -> msgspec.json.Decoder[list[Any]] | None:
        """A decoder whose constraints fit the first data row, or None if it cannot fit.

        Prices and quantities must have the same number of decimals (1 to 8) on every
        row, as Binance writes them; time must stay in the unit of the first row.
        """
        if len(sample) != self.file.columns:
            return None
        id_at, price_at, qty_at, time_at, maker_at = self.positions
        fields: list[tuple[str, Any]] = []
        for at, cell in enumerate(sample):
            cell = cell.strip()
            if at in (price_at, qty_at):
                whole, dot, frac = cell.partition(".")
                if not (dot and 0 < len(frac) <= 8 and frac.isdigit() and whole.isdigit()):
                    return None
                k = len(frac)
                name = "p" if at == price_at else "q"
                fields += [
                    (name + "w", Annotated[int, msgspec.Meta(ge=0, le=_MAX_WHOLE)]),
                    (name + "f", Annotated[int, msgspec.Meta(ge=10**k, lt=2 * 10**k)]),
                ]
                if at == price_at:
                    self.fp = 10 ** (8 - k)
                else:
                    self.fq = 10 ** (8 - k)
            elif at == id_at:
                fields.append(("tid", Annotated[int, msgspec.Meta(ge=0, le=_MAX_INT)]))
            elif at == time_at:
                if not cell.isdigit() or not 0 < int(cell) < _TIME_BELOW:
                    return None
                low, high, self.unit = (
                    (1, _MS_BELOW, _MS) if int(cell) < _MS_BELOW else (_MS_BELOW, _TIME_BELOW, _US)
                )
                fields.append(("t", Annotated[int, msgspec.Meta(ge=low, lt=high)]))
            elif at == maker_at:
                fields.append(("bm", bool))
            else:
                # Ignored columns only need the right number of scalar elements.
                fields += [(f"x{at}_{n}", int | bool) for n in range(cell.count(".") + 1)]
        fields.append(("end", None))
        row = msgspec.defstruct("_Row", fields, array_like=True, gc=False)
        return msgspec.json.Decoder(list[row])  # type: ignore[valid-type]

    def _fast(self, body: bytes, line_no: int, count: int) -> list[Trade] | None:
        """Decode a chunk of whole lines at C speed; None if its structure is off.

        Rows that decode but hold a zero price or quantity are recorded and skipped
        here, as the line-by-line parser would, rather than failing the chunk.
        """
        assert self.decoder is not None
        text = body.translate(_LOWER_TF).replace(b".", b",1").replace(b"\n", b",null],[")
        try:
            rows = self.decoder.decode(b"[[" + text[:-2] + b"]")
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if len(rows) != count:
            return None
        prefix = self.prefix
        file = self.file
        owner = self.owner
        symbol, venue, source = file.symbol, owner.venue, owner.source
        fp, fq, unit = self.fp, self.fq, self.unit
        scale = SCALE
        make = Trade
        out: list[Trade] = []
        add = out.append
        zeros: list[int] = []
        late: list[tuple[int, int, int]] = []
        last = self.last_ts
        # The hottest loop of a replay: locals only, one Struct built per row.
        for n, r in enumerate(rows):
            tid = r.tid
            price = r.pw * scale + r.pf * fp - scale
            qty = r.qw * scale + r.qf * fq - scale
            if not (price and qty):
                zeros.append(n)
                continue
            ts = r.t * unit
            if ts < last:
                late.append((n, ts, last))
                continue
            last = ts
            i = prefix + str(tid)
            add(
                make(
                    id=i,
                    ts=ts,
                    correlation_id=i,
                    causation_id=i,
                    source=source,
                    venue=venue,
                    symbol=symbol,
                    trade_id=tid,
                    price_e8=price,
                    qty_e8=qty,
                    buyer_maker=r.bm,
                )
            )
        self.last_ts = last
        stats = owner.stats
        stats.rows += count - len(zeros)
        stats.decoded += count - len(zeros) - len(late)
        for n, t, before in late:
            stats.backwards += 1
            owner.record(file.path, line_no + n + 1, _backwards(t, before))
        if zeros:
            lines = body.split(b"\n")
            for at in zeros:
                self._slow(lines[at] + b"\n", line_no + at)
        return out

    def _slow(self, body: bytes, line_no: int) -> list[Trade]:
        """Parse line by line; count, record and skip each malformed row."""
        path = self.file.path
        owner = self.owner
        stats = owner.stats
        columns = self.file.columns
        id_at, price_at, qty_at, time_at, maker_at = self.positions
        symbol, venue, source = self.file.symbol, owner.venue, owner.source
        out: list[Trade] = []
        for raw in body.split(b"\n")[:-1]:
            line_no += 1
            if not raw.strip():
                continue
            stats.rows += 1
            try:
                cells = raw.decode("ascii").split(",")
            except UnicodeDecodeError:
                owner.record(path, line_no, "not ASCII text")
                continue
            if len(cells) != columns:
                owner.record(path, line_no, f"{len(cells)} columns, expected {columns}")
                continue
            try:
                tid = _parse_int(cells[id_at], "trade id")
                price = _parse_e8(cells[price_at], "price")
                qty = _parse_e8(cells[qty_at], "qty")
                ts = _parse_time(cells[time_at])
                maker = BOOLS.get(cells[maker_at].strip())
                if maker is None:
                    raise ValueError(f"is_buyer_maker {cells[maker_at].strip()!r} is not a boolean")
            except ValueError as exc:
                owner.record(path, line_no, str(exc))
                continue
            if ts < self.last_ts:
                stats.backwards += 1
                owner.record(path, line_no, _backwards(ts, self.last_ts))
                continue
            self.last_ts = ts
            i = trade_event_id(venue, symbol, tid)
            out.append(
                Trade(
                    id=i,
                    ts=ts,
                    correlation_id=i,
                    causation_id=i,
                    source=source,
                    venue=venue,
                    symbol=symbol,
                    trade_id=tid,
                    price_e8=price,
                    qty_e8=qty,
                    buyer_maker=maker,
                )
            )
            stats.decoded += 1
        return out


def _backwards(ts: int, before: int) -> str:
    """The reason of a row going back in time (times in ns, shown in ms)."""
    return (f"time goes backwards: {ts / _MS:.3f} ms since the epoch is before the "
            f"previous row's {before / _MS:.3f}")


def _clip(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:24] + "..." + text[-8:])


def _parse_int(text: str, what: str) -> int:
    text = text.strip()
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{what} {_clip(text)} is not a non-negative integer")
    if len(text.lstrip("0")) > 19 or int(text) > _MAX_INT:
        raise ValueError(f"{what} {_clip(text)} is out of range (at most {_MAX_INT})")
    return int(text)


def _parse_e8(text: str, what: str) -> int:
    """Exact e8 value of a positive plain decimal with at most 8 significant decimals."""
    text = text.strip()
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise ValueError(f"{what} {_clip(text)} is not a plain decimal number")
    whole, frac = match.group(1), match.group(2) or ""
    if len(frac) > 8:
        if frac[8:].strip("0"):
            raise ValueError(f"{what} {_clip(text)} has more than 8 decimals")
        frac = frac[:8]
    if len(whole.lstrip("0")) > 11:
        raise ValueError(f"{what} {_clip(text)} is out of range")
    value = int(whole) * SCALE + int(frac.ljust(8, "0"))
    if value <= 0:
        raise ValueError(f"{what} {_clip(text)} is not positive")
    if value > _MAX_INT:
        raise ValueError(f"{what} {_clip(text)} is out of range")
    return value


def _parse_time(text: str) -> int:
    value = _parse_int(text, "time")
    if not 0 < value < _TIME_BELOW:
        raise ValueError(f"time {value} is neither epoch ms nor µs")
    return value * (_MS if value < _MS_BELOW else _US)
