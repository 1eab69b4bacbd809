"""Free TCP ports for the servers tests start."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default; macOS uses 49152-65535


def restartable_port(host: str = "127.0.0.1", low: int = 20000) -> int:
    """A free TCP port outside the OS's ephemeral range, for a server that is stopped and
    started again on the same port (outage tests).

    ``free_port`` hands out an ephemeral port: while its server is down, any outgoing
    connection on the machine may be given it as its local port, and the server then
    cannot listen on it again ("address already in use") until that connection closes.
    Ports below the ephemeral range are never handed out that way.
    """
    ephemeral_low, _ = _ephemeral_range()
    high = min(ephemeral_low, 65536)
    if high - low < 100:
        return free_port(host)
    rng = random.SystemRandom()
    for _ in range(50):
        port = rng.randrange(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    return free_port(host)
