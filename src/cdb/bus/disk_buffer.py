"""A durable local buffer of events, for producers while Redis is unreachable.

One SQLite file per producer instance, in WAL mode with ``synchronous=FULL``: every
``append`` is one transaction whose commit is fsynced, so an event the buffer
accepted survives a crash of the process (kill -9) and of the machine. Entries keep
the order they were appended in (``seq``, never reused), across topics, and are read
back oldest first, so a flush replays them exactly as they were published.

The file is locked exclusively while open: a second process opening the same buffer
gets a ``BusError`` instead of interleaving its events (give every instance its own
``CDB_CONSUMER`` or ``CDB_BUFFER_PATH``).

Bounded. ``append`` refuses with ``BufferFullError`` once ``max_events`` events or
``max_bytes`` bytes of payload are held (a batch that starts below the bound is taken
whole, so the bound can be passed by one batch). What a producer does then is the
buffered bus's policy (``cdb.bus.buffered``): wait for the flush to make room
(default), or refuse the publish.

Entries that cannot be decoded any more (a file left by an older, incompatible cdb)
are moved to the ``parked`` table of the same file, for people to look at, rather than
blocking the flush forever.
"""

from __future__ import annotations

import contextlib
import enum
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, NamedTuple, Self

from cdb.errors import BufferFullError, BusError, LifecycleError

SCHEMA_VERSION: Final = 1
DEFAULT_MAX_EVENTS: Final = 1_000_000
DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS events ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS parked ("
    " seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,"
    " reason TEXT NOT NULL)",
)


class BufferState(enum.Enum):
    CREATED = "created"
    OPEN = "open"
    CLOSED = "closed"


class Entry(NamedTuple):
    """One buffered event: its place in the buffer, topic and encoded bytes."""

    seq: int
    topic: str
    payload: bytes


class DiskBuffer:
    """Ordered, durable, bounded queue of encoded events in one SQLite file.

    Methods block on disk I/O (an fsync per append): call them from a worker thread
    (``asyncio.to_thread``) in async code. They are safe to call from several threads.

    Args:
        path: the buffer file; its directory is created when missing.
        max_events: events held at most (see the module docstring for the policy).
        max_bytes: encoded bytes held at most.
    """

    def __init__(
        self, path: Path | str, *, max_events: int = DEFAULT_MAX_EVENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError(
                f"a disk buffer holds at least one event and byte, not {max_events}/{max_bytes}"
            )
        self.path = Path(path)
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.state = BufferState.CREATED
        self._con: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._count = 0
        self._bytes = 0
        self._by_topic: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"DiskBuffer({str(self.path)!r}, {self._count} events, {self.state.value})"

    # lifecycle

    def open(self) -> Self:
        """Open (creating) the file, lock it, and count what a previous run left."""
        if self.state is not BufferState.CREATED:
            raise LifecycleError(f"{self!r} cannot be opened again; make a new DiskBuffer")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0
            )
        except (OSError, sqlite3.Error) as exc:
            raise BusError(f"cannot open disk buffer {self.path}: {exc}") from exc
        try:
            self._setup(con)
        except sqlite3.OperationalError as exc:
            con.close()
            if "locked" in str(exc):
                raise BusError(
                    f"disk buffer {self.path} is in use by another process: give every "
                    "instance its own CDB_CONSUMER (or CDB_BUFFER_PATH)"
                ) from exc
            raise BusError(f"cannot open disk buffer {self.path}: {exc}") from exc
        except BaseException:
            con.close()
            raise
        self._con = con
        self.state = BufferState.OPEN
        return self

    def _setup(self, con: sqlite3.Connection) -> None:
        # Exclusive before WAL: no shared-memory index, and no other process gets in.
        con.execute("PRAGMA locking_mode=EXCLUSIVE")
        # Page reuse is not enough for a buffer that may grow to its bound once: give
        # the space back when it empties (must be set before the first table).
        con.execute("PRAGMA auto_vacuum=INCREMENTAL")
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BusError(f"disk buffer {self.path}: cannot use WAL mode (got {mode})")
        # FULL in WAL mode: the WAL is fsynced at every commit, so an accepted append
        # survives a power cut, not only a crash of the process.
        con.execute("PRAGMA synchronous=FULL")
        con.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now, or fails
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BusError(
                    f"disk buffer {self.path} was written by a newer cdb (schema {version}); "
                    "flush it with that version first"
                )
            for statement in _SCHEMA:
                con.execute(statement)
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self._count = 0
        self._bytes = 0
        self._by_topic = {}
        rows = con.execute(
            "SELECT topic, count(*), coalesce(sum(length(payload)), 0) FROM events GROUP BY topic"
        ).fetchall()
        for topic, n, size in rows:
            self._by_topic[topic] = n
            self._count += n
            self._bytes += size

    def close(self) -> None:
        """Close the file; what it holds stays for the next ``open``."""
        with self._lock:
            con, self._con = self._con, None
            self.state = BufferState.CLOSED
            if con is not None:
                con.close()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            raise LifecycleError(f"{self!r} is not open")
        return self._con

    # state

    @property
    def count(self) -> int:
        """Events held."""
        return self._count

    @property
    def nbytes(self) -> int:
        """Encoded bytes held."""
        return self._bytes

    @property
    def full(self) -> bool:
        return self._count >= self.max_events or self._bytes >= self.max_bytes

    def count_of(self, topic: str) -> int:
        """Events of ``topic`` held."""
        return self._by_topic.get(topic, 0)

    # operations

    def append(self, topic: str, payloads: Sequence[bytes]) -> None:
        """Add encoded events of ``topic`` at the end, durably (one fsynced commit).

        Raises:
            BufferFullError: the buffer is at its bound; nothing was added.
            BusError: the disk failed; nothing was added.
        """
        if not payloads:
            return
        with self._lock:
            con = self._connection()
            if self.full:
                raise BufferFullError(
                    f"disk buffer {self.path} is full ({self._count} events, {self._bytes} "
                    f"bytes; bounds {self.max_events} events, {self.max_bytes} bytes)"
                )
            try:
                con.execute("BEGIN IMMEDIATE")
                try:
                    con.executemany(
                        "INSERT INTO events (topic, payload) VALUES (?, ?)",
                        [(topic, p) for p in payloads],
                    )
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise BusError(f"disk buffer {self.path}: appending failed: {exc}") from exc
            n = len(payloads)
            self._count += n
            self._bytes += sum(len(p) for p in payloads)
            self._by_topic[topic] = self._by_topic.get(topic, 0) + n

    def peek(self, limit: int = 1000) -> list[Entry]:
        """The oldest ``limit`` entries, oldest first; they stay until deleted."""
        with self._lock:
            con = self._connection()
            rows = con.execute(
                "SELECT seq, topic, payload FROM events ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [Entry(seq, topic, bytes(payload)) for seq, topic, payload in rows]

    def delete_through(self, seq: int) -> int:
        """Remove every entry up to and including ``seq`` (they were flushed); returns
        how many were removed."""
        with self._lock:
            con = self._connection()
            try:
                con.execute("BEGIN IMMEDIATE")
                try:
                    gone = con.execute(
                        "SELECT topic, count(*), coalesce(sum(length(payload)), 0) FROM events "
                        "WHERE seq <= ? GROUP BY topic", (seq,),
                    ).fetchall()
                    con.execute("DELETE FROM events WHERE seq <= ?", (seq,))
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise BusError(
                    f"disk buffer {self.path}: removing flushed events failed: {exc}"
                ) from exc
            removed = self._forget(gone)
            if self._count == 0:
                self._shrink(con)
            return removed

    def park(self, entries: Sequence[Entry], reason: str) -> None:
        """Move ``entries`` out of the queue into the ``parked`` table, with ``reason``."""
        if not entries:
            return
        with self._lock:
            con = self._connection()
            seqs = [(e.seq,) for e in entries]
            try:
                con.execute("BEGIN IMMEDIATE")
                try:
                    con.executemany(
                        "INSERT OR REPLACE INTO parked (seq, topic, payload, reason) "
                        "VALUES (?, ?, ?, ?)",
                        [(e.seq, e.topic, e.payload, reason) for e in entries],
                    )
                    con.executemany("DELETE FROM events WHERE seq = ?", seqs)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise BusError(f"parking in disk buffer {self.path} failed: {exc}") from exc
            self._forget([(e.topic, 1, len(e.payload)) for e in entries])

    def parked(self) -> int:
        """Entries parked so far (they are never flushed)."""
        with self._lock:
            return int(self._connection().execute("SELECT count(*) FROM parked").fetchone()[0])

    def _forget(self, gone: Sequence[tuple[str, int, int]]) -> int:
        removed = 0
        for topic, n, size in gone:
            removed += n
            self._count -= n
            self._bytes -= size
            left = self._by_topic.get(topic, 0) - n
            if left > 0:
                self._by_topic[topic] = left
            else:
                self._by_topic.pop(topic, None)
        return removed

    def _shrink(self, con: sqlite3.Connection) -> None:
        """Give the disk space of an emptied buffer back (best effort)."""
        # Only disk space is at stake here, never an event: a failure is not an error.
        with contextlib.suppress(sqlite3.Error):
            con.execute("PRAGMA incremental_vacuum")
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
