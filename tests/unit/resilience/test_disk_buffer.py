"""The disk buffer: durable at append (kill -9 loses nothing), ordered, bounded, private."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cdb.bus.disk_buffer import DiskBuffer
from cdb.errors import BufferFullError, BusError, LifecycleError


def payloads(start: int, n: int) -> list[bytes]:
    return [f"event-{i}".encode() for i in range(start, start + n)]


def test_entries_come_back_in_append_order_across_topics(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "b.sqlite") as buf:
        buf.append("a", payloads(0, 2))
        buf.append("b", payloads(2, 1))
        buf.append("a", payloads(3, 2))
        entries = buf.peek(10)
        assert [(e.topic, e.payload) for e in entries] == [
            ("a", b"event-0"), ("a", b"event-1"), ("b", b"event-2"), ("a", b"event-3"),
            ("a", b"event-4"),
        ]
        assert [e.seq for e in entries] == sorted(e.seq for e in entries)
        assert buf.count == 5
        assert buf.count_of("a") == 4
        assert buf.count_of("b") == 1
        assert buf.delete_through(entries[2].seq) == 3
        assert [e.payload for e in buf.peek(10)] == [b"event-3", b"event-4"]
        assert buf.count_of("b") == 0


def test_what_was_not_deleted_is_there_after_reopening_and_seqs_keep_growing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sub" / "dir" / "b.sqlite"
    with DiskBuffer(path) as buf:
        buf.append("a", payloads(0, 3))
        buf.delete_through(buf.peek(1)[0].seq)
        last = buf.peek(10)[-1].seq
    with DiskBuffer(path) as buf:
        assert buf.count == 2
        assert buf.nbytes == len(b"event-1") + len(b"event-2")
        buf.append("a", payloads(3, 1))
        assert buf.peek(10)[-1].seq > last
        buf.delete_through(buf.peek(10)[-1].seq)
        assert buf.count == 0
        assert buf.nbytes == 0


def test_it_refuses_appends_at_its_bound_and_takes_them_again_once_flushed(
    tmp_path: Path,
) -> None:
    with DiskBuffer(tmp_path / "b.sqlite", max_events=5) as buf:
        buf.append("a", payloads(0, 4))
        assert not buf.full
        buf.append("a", payloads(4, 3))  # started below the bound: taken whole
        assert buf.full
        assert buf.count == 7
        with pytest.raises(BufferFullError, match="full"):
            buf.append("a", payloads(7, 1))
        assert buf.count == 7
        buf.delete_through(buf.peek(3)[-1].seq)
        assert not buf.full
        buf.append("a", payloads(7, 1))
        assert [e.payload for e in buf.peek(10)][-1] == b"event-7"


def test_the_byte_bound_applies_too(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "b.sqlite", max_bytes=20) as buf:
        buf.append("a", [b"x" * 20])
        with pytest.raises(BufferFullError):
            buf.append("a", [b"y"])


def test_a_second_process_cannot_open_a_buffer_in_use(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with DiskBuffer(path):
        code = f"from cdb.bus.disk_buffer import DiskBuffer; DiskBuffer({str(path)!r}).open()"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=30, check=False)
        assert result.returncode != 0
        assert "in use by another process" in result.stderr


def test_a_buffer_is_opened_once(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path / "b.sqlite").open()
    buf.close()
    with pytest.raises(LifecycleError):
        buf.open()
    with pytest.raises(LifecycleError):
        buf.append("a", [b"x"])


def test_parked_entries_leave_the_queue_but_stay_in_the_file(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "b.sqlite") as buf:
        buf.append("a", payloads(0, 3))
        buf.park([buf.peek(10)[1]], "undecodable")
        assert [e.payload for e in buf.peek(10)] == [b"event-0", b"event-2"]
        assert buf.parked() == 1
        assert buf.count == 2


def test_an_unusable_path_is_a_bus_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(BusError, match="cannot open disk buffer"):
        DiskBuffer(tmp_path / "file" / "b.sqlite").open()


_WRITER = textwrap.dedent("""
    import sys, time
    from cdb.bus.disk_buffer import DiskBuffer
    buf = DiskBuffer(sys.argv[1]).open()
    i = 0
    while True:
        buf.append("t", [f"{i}-{j}".encode() for j in range(10)])
        print(i, flush=True)  # only after the commit returned
        i += 1
        if i == 200:
            time.sleep(60)
""")


def test_every_append_that_returned_survives_kill_9_in_order(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    acknowledged = -1
    with subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                acknowledged = int(line)
                if acknowledged >= 50:
                    break
            os.kill(proc.pid, signal.SIGKILL)  # mid-stream: appends may be in flight
        finally:
            proc.kill()
            proc.wait()
    with DiskBuffer(path) as buf:
        entries = buf.peek(100_000)
    got = [e.payload.decode() for e in entries]
    expected = [f"{i}-{j}" for i in range(len(got) // 10) for j in range(10)]
    assert got == expected, "whole batches, in order, no gap"
    assert len(got) >= (acknowledged + 1) * 10, "nothing acknowledged is lost"
