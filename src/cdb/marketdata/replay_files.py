"""Replay files on disk: opening a CSV or the one CSV in a ZIP, and sniffing its layout.

Binance public-data trade files (data.binance.vision) come in two layouts, spot and
futures flavours, plain CSV or a ZIP holding one CSV, with or without a header row::

    trades     id,price,qty,quote_qty,time,is_buyer_maker[,is_best_match]
    aggTrades  agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,
               is_buyer_maker[,is_best_match]
"""

from __future__ import annotations

import contextlib
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final, Literal

import msgspec

from cdb.errors import InputError

Layout = Literal["trades", "aggTrades"]

_SNIFF: Final = 64 * 1024
_SNIFF_LINES: Final = 8
MAX_UNCOMPRESSED: Final = 64 * 1024**3
"""Largest CSV inside a ZIP (a day of BTCUSDT trades is a few GiB)."""
MAX_RATIO: Final = 100
"""Largest uncompressed/compressed ratio of a ZIP member (trade CSVs compress about 5x;
a zip bomb thousands of times)."""
_RATIO_FROM: Final = 1024 * 1024
"""Members smaller than this are not ratio-checked (tiny files compress oddly)."""

_NAME = re.compile(r"^([A-Z0-9_]+)-(trades|aggTrades)-", re.IGNORECASE)
BOOLS: Final = {"true": True, "false": False, "True": True, "False": False}
"""The spellings of ``is_buyer_maker`` a row may use."""

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


class ReplayFile(msgspec.Struct, frozen=True, kw_only=True):
    """What sniffing a file found: its symbol, layout and shape."""

    path: str
    symbol: str
    layout: Layout
    header: bool
    columns: int
    zipped: bool


@contextlib.contextmanager
def open_binary(path: Path) -> Iterator[IO[bytes]]:
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


def sniff(path: Path, *, symbol: str | None, layout: Layout | None) -> ReplayFile:
    with open_binary(path) as stream:
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
        if cells[5] in BOOLS:
            return "trades"
        if cells[6] in BOOLS and cells[5].isdigit():
            return "aggTrades"
    raise InputError(
        f"{path}: unrecognisable layout ({width} columns: {','.join(row)[:120]!r}); expected "
        "Binance trades or aggTrades CSV, or pass layout="
    )


def column_positions(path: Path, header: list[str] | None, layout: Layout) -> tuple[int, ...]:
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
