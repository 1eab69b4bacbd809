"""Replay Binance public-data trade files (data.binance.vision) as ``Trade`` batches.

Both layouts are read, spot and futures flavours, plain CSV or a ZIP holding one CSV,
with or without a header row::

    trades     id,price,qty,quote_qty,time,is_buyer_maker[,is_best_match]
    aggTrades  agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,
               is_buyer_maker[,is_best_match]

Times are in ms (older files) or µs (spot files from 2025 on), told apart by magnitude
row by row and converted to ns. The file is streamed in chunks of ``_CHUNK`` bytes, so
memory stays flat whatever its size.

Why the fast path looks odd: a per-row ``split``/``int`` parser tops out far below the
benchmark's needs, so each chunk is rewritten with a few C-level ``bytes.replace`` calls
into a JSON array of integer arrays and decoded by msgspec, which also validates every
field against per-file constraints. A decimal ``42283.58000000`` becomes the two
integers ``42283,158000000``: the ``1`` in front of the fraction keeps its leading zeros
and pins its length, so ``10**k <= frac < 2*10**k`` proves it has exactly the ``k``
decimals the file uses and the e8 value is exact integer arithmetic. Each row ends with
a ``null`` sentinel so a row with a column too many or too few fails validation
instead of shifting silently. A chunk that fails in any way is parsed again line by
line with a strict exact parser, which counts and records each malformed row with its
line number and keeps the good ones; both paths give identical trades for good rows.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import zipfile
import zlib
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from operator import attrgetter
from pathlib import Path
from typing import IO, Annotated, Any, Final, Literal

import msgspec

from cdb.errors import InputError
from cdb.events import SCALE, Trade, trade_event_id

Layout = Literal["trades", "aggTrades"]

_CHUNK: Final = 32 * 1024
"""Bytes decoded per step. Small on purpose: the working set of a step (text, JSON,
rows, trades) then stays in CPU cache; 512 KiB steps measured a third slower."""
_SNIFF: Final = 64 * 1024
_MAX_LINE: Final = 4 * _CHUNK
"""A longer line means a wrong file; refusing it keeps memory bounded."""
_SNIFF_LINES: Final = 8
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
MAX_UNCOMPRESSED: Final = 64 * 1024**3
"""Largest CSV inside a ZIP (a day of BTCUSDT trades is a few GiB)."""
MAX_RATIO: Final = 100
"""Largest uncompressed/compressed ratio of a ZIP member (trade CSVs compress about 5x;
a zip bomb thousands of times)."""
_RATIO_FROM: Final = 1024 * 1024
"""Members smaller than this are not ratio-checked (tiny files compress oddly)."""

_NAME = re.compile(r"^([A-Z0-9_]+)-(trades|aggTrades)-", re.IGNORECASE)
_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
_INTEGER = re.compile(r"[0-9]+")
_LOWER_TF: Final = bytes.maketrans(b"TF", b"tf")
"""Turns Python-style ``True``/``False`` into JSON; no other byte of a valid row changes."""
_BOOLS: Final = {"true": True, "false": False, "True": True, "False": False}

# Column positions of the headerless layouts; (trade id, price, qty, time, buyer maker).
_POSITIONS: Final[dict[Layout, tuple[int, int, int, int, int]]] = {
    "trades": (0, 1, 2, 4, 5),
    "aggTrades": (0, 1, 2, 5, 6),
}
_WIDTHS: Final[dict[Layout, tuple[int, ...]]] = {
    "trades": (6, 7),  # futures files lack is_best_match
    "aggTrades": (7, 8),
}
_HEADER_NAMES: Final = {
    "id": ("id", "trade_id", "agg_trade_id"),
    "price": ("price",),
    "qty": ("qty", "quantity"),
    "time": ("time", "transact_time", "timestamp"),
    "buyer_maker": ("is_buyer_maker", "isbuyermaker"),
}


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


class ReplayFile(msgspec.Struct, frozen=True, kw_only=True):
    """What sniffing a file found: its symbol, layout and shape."""

    path: str
    symbol: str
    layout: Layout
    header: bool
    columns: int
    zipped: bool


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
            _sniff(Path(p), symbol=symbol, layout=layout) for p in paths
        )
        self.stats = ReplayStats(files=len(self.files))

    def batches(self) -> Iterator[list[Trade]]:
        """Yield the trades of all files in event-time order, ``batch_size`` at most."""
        self.stats = ReplayStats(files=len(self.files))
        streams = [_FileReader(f, self).chunks() for f in self.files]
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

    def _record(self, path: str, line: int, reason: str) -> None:
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


# -- sniffing ---------------------------------------------------------------------------


@contextlib.contextmanager
def _open_binary(path: Path) -> Iterator[IO[bytes]]:
    """Open a CSV, or the one CSV inside a ZIP, for reading bytes."""
    try:
        if _is_zip(path):
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.infolist() if not m.is_dir()]
                if len(members) != 1:
                    names = ", ".join(m.filename for m in members) or "nothing"
                    raise InputError(
                        f"{path}: a replay ZIP must hold exactly one CSV file, it holds {names}"
                    )
                _check_member(path, members[0])
                with archive.open(members[0]) as stream:
                    yield stream
        else:
            with path.open("rb") as stream:
                yield stream
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such replay file") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a directory, not a replay file") from exc
    except PermissionError as exc:
        raise InputError(f"{path}: not readable (permission denied)") from exc
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise InputError(f"{path}: damaged ZIP file ({exc})") from exc
    except NotImplementedError as exc:  # zipfile: a compression method it cannot read
        raise InputError(f"{path}: unsupported ZIP file ({exc}); re-pack it with deflate"
                         ) from exc
    except RuntimeError as exc:  # zipfile: an encrypted member
        raise InputError(f"{path}: cannot read the ZIP ({exc})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read replay file ({exc})") from exc


_METHODS: Final = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
                   zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}


def _check_member(path: Path, member: zipfile.ZipInfo) -> None:
    """Refuse an encrypted, unreadable or bomb-like member before reading a byte of it."""
    if member.flag_bits & 0x1:
        raise InputError(f"{path}: {member.filename} is encrypted; replay reads plain ZIPs "
                         "(unzip it, or re-pack it without a password)")
    if member.compress_type not in _METHODS:
        raise InputError(f"{path}: {member.filename} uses ZIP compression method "
                         f"{member.compress_type}, which cannot be read; re-pack it with "
                         "deflate")
    size, packed = member.file_size, member.compress_size
    if size > MAX_UNCOMPRESSED:
        raise InputError(f"{path}: {member.filename} expands to {size:,} bytes, more than "
                         f"the {MAX_UNCOMPRESSED:,} a replay file may have; split it")
    if size > _RATIO_FROM and size > MAX_RATIO * max(packed, 1):
        raise InputError(f"{path}: {member.filename} expands {size // max(packed, 1):,} times "
                         f"(from {packed:,} to {size:,} bytes); a trades CSV compresses "
                         f"far less than {MAX_RATIO} times: not a replay file")


def _sniff(path: Path, *, symbol: str | None, layout: Layout | None) -> ReplayFile:
    with _open_binary(path) as stream:
        head = stream.read(_SNIFF)
    try:
        text = head.decode("utf-8-sig", "strict" if len(head) < _SNIFF else "ignore")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text CSV file ({exc.reason})") from exc
    lines = [ln.strip().split(",") for ln in text.split("\n")[:_SNIFF_LINES] if ln.strip()]
    if not lines:
        raise InputError(f"{path}: empty file, expected Binance trades or aggTrades CSV")
    first = lines[0]
    named = _NAME.match(path.name)
    if symbol is None:
        if named is None:
            raise InputError(
                f"{path}: cannot tell the symbol from the file name (expected e.g. "
                "BTCUSDT-trades-2024-01-01.csv); pass symbol= explicitly"
            )
        symbol = named.group(1).upper()
    header = not first[0].strip()[:1].isdigit()
    if header:
        found = _layout_from_header(path, first)
        if layout is not None and layout != found:
            raise InputError(f"{path}: has a {found} header but layout={layout!r} was requested")
        layout, columns = found, len(first)
    else:
        # The most common width of the first rows, so one bad row cannot hide the layout.
        widths = [len(row) for row in lines]
        columns = max(widths, key=widths.count)
        typical = lines[widths.index(columns)]
        layout = layout or _layout_from_row(path, typical, named)
    if columns not in _WIDTHS[layout]:
        raise InputError(
            f"{path}: {columns} columns is not a Binance {layout} layout "
            f"(expected {' or '.join(map(str, _WIDTHS[layout]))})"
        )
    return ReplayFile(
        path=str(path),
        symbol=symbol,
        layout=layout,
        header=header,
        columns=columns,
        zipped=_is_zip(path),
    )


def _is_zip(path: Path) -> bool:
    return path.suffix.lower() == ".zip" or zipfile.is_zipfile(path)


def _layout_from_header(path: Path, names: list[str]) -> Layout:
    lowered = [n.strip().lower() for n in names]
    if "agg_trade_id" in lowered or "first_trade_id" in lowered:
        return "aggTrades"
    if lowered and lowered[0] in ("id", "trade_id"):
        return "trades"
    raise InputError(
        f"{path}: unrecognised header {','.join(names)!r}; expected Binance trades "
        "(id,price,qty,quote_qty,time,is_buyer_maker,...) or aggTrades "
        "(agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,...)"
    )


def _layout_from_row(path: Path, row: list[str], named: re.Match[str] | None) -> Layout:
    if named is not None:
        return "aggTrades" if named.group(2).lower() == "aggtrades" else "trades"
    width = len(row)
    cells = [c.strip() for c in row]
    if width == 8:
        return "aggTrades"
    if width == 6:
        return "trades"
    if width == 7:
        if cells[5] in _BOOLS:
            return "trades"
        if cells[6] in _BOOLS and cells[5].isdigit():
            return "aggTrades"
    raise InputError(
        f"{path}: unrecognisable layout ({width} columns: {','.join(row)[:120]!r}); expected "
        "Binance trades or aggTrades CSV, or pass layout="
    )


def _positions(path: Path, header: list[str] | None, layout: Layout) -> tuple[int, ...]:
    """Column positions of (trade id, price, qty, time, buyer maker)."""
    if header is None:
        return _POSITIONS[layout]
    lowered = [n.strip().lower() for n in header]
    positions = []
    for field, aliases in _HEADER_NAMES.items():
        hit = next((lowered.index(a) for a in aliases if a in lowered), None)
        if hit is None:
            raise InputError(f"{path}: header has no {field} column ({','.join(header)!r})")
        positions.append(hit)
    return tuple(positions)


# -- reading ----------------------------------------------------------------------------


class _FileReader:
    """Reads one file into chunks of trades, fast path first, line by line on failure."""

    def __init__(self, file: ReplayFile, owner: ReplaySource) -> None:
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
        with _open_binary(path) as stream:
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
        self.positions = _positions(path, header, self.file.layout)
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
            owner._record(file.path, line_no + n + 1, _backwards(t, before))
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
                owner._record(path, line_no, "not ASCII text")
                continue
            if len(cells) != columns:
                owner._record(path, line_no, f"{len(cells)} columns, expected {columns}")
                continue
            try:
                tid = _parse_int(cells[id_at], "trade id")
                price = _parse_e8(cells[price_at], "price")
                qty = _parse_e8(cells[qty_at], "qty")
                ts = _parse_time(cells[time_at])
                maker = _BOOLS.get(cells[maker_at].strip())
                if maker is None:
                    raise ValueError(f"is_buyer_maker {cells[maker_at].strip()!r} is not a boolean")
            except ValueError as exc:
                owner._record(path, line_no, str(exc))
                continue
            if ts < self.last_ts:
                stats.backwards += 1
                owner._record(path, line_no, _backwards(ts, self.last_ts))
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
