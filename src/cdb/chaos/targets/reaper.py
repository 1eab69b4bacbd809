"""Cleans up after a coordinator that died without doing it itself (SIGKILL, OOM kill).

The distributed target starts ``python -m cdb.chaos.targets.reaper`` in a session of its own
and tells it over its stdin, one JSON object a line, what to take down should the
coordinator vanish: its throwaway Redis (``SHUTDOWN NOSAVE``), its throwaway
PostgreSQL (SIGQUIT to the postmaster: immediate shutdown) and directories (the
secrets). A last line ``"done"`` means the coordinator cleaned up itself; the end of
the input without it means the coordinator died, and the reaper does the cleaning.
The service processes need no reaper: they die with the coordinator
(``PR_SET_PDEATHSIG``, see ``cdb.runtime.supervisor``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from cdb.bus.lane import pack

DONE = "done"


def redis_pids(port: int, proc: Path = Path("/proc")) -> list[int]:
    """Processes of a ``redis-server`` listening on ``port`` (its title ends ``:PORT``)."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            if "redis-server" in title and title.endswith(f":{port}"):
                found.append(int(entry.name))
    return found


def shutdown_redis(host: str, port: int, password: str, wait: float = 5.0) -> None:
    """``SHUTDOWN NOSAVE`` (after ``AUTH``); a server a fault left paused (SIGSTOP) is
    continued first, and one that does not go within ``wait`` is killed."""
    pids = redis_pids(port)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2) as s:
        s.settimeout(2)
        s.sendall((pack("AUTH", password) if password else b"") + pack("SHUTDOWN", "NOSAVE"))
        with contextlib.suppress(OSError):
            s.recv(256)
    deadline = time.monotonic() + wait
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = [pid for pid in pids if pid in redis_pids(port)]
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def quit_postgres(data_dir: Path, wait: float = 10.0) -> None:
    """Immediate shutdown of the postmaster of ``data_dir``; waits until it is gone."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGQUIT)
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)


def reap(orders: list[dict[str, Any]]) -> None:
    """Carry out the orders: servers first, then directories."""
    for order in orders:
        if "redis" in order:
            host, port, password = order["redis"]
            shutdown_redis(host, int(port), password)
        if "postgres" in order:
            quit_postgres(Path(order["postgres"]) / "data")
    for order in orders:
        if "remove" in order:
            shutil.rmtree(order["remove"], ignore_errors=True)


def main() -> int:
    orders: list[dict[str, Any]] = []
    done = False
    for line in sys.stdin:  # until the coordinator closes the pipe, or dies
        text = line.strip()
        if not text:
            continue
        if text == DONE:
            done = True
            continue
        with contextlib.suppress(ValueError):
            orders.append(json.loads(text))
    if not done:
        reap(orders)
    return 0


if __name__ == "__main__":
    sys.exit(main())
