"""A throwaway Redis Sentinel (``redis-server --sentinel``) for the failover test."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

import redis

from cdb.testing.ports import free_port


class SentinelServer:
    """One sentinel watching ``master`` at ``127.0.0.1:master_port`` (quorum 1).

    Args:
        master_port: port of the primary to monitor.
        name: the master's name in the sentinel.
    """

    def __init__(self, master_port: int, name: str = "mymaster") -> None:
        self.port = free_port()
        self.name = name
        self._master_port = master_port
        self._dir = Path(tempfile.mkdtemp(prefix="cdb-sentinel-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        conf = self._dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {self._dir}\n"
            f"sentinel monitor {self.name} 127.0.0.1 {self._master_port} 1\n"
            f"sentinel down-after-milliseconds {self.name} 1000\n"
            f"sentinel failover-timeout {self.name} 10000\n"
            f"sentinel parallel-syncs {self.name} 1\n"
        )
        binary = shutil.which("redis-server")
        assert binary is not None
        self._log = (self._dir / "sentinel.log").open("ab")
        self._proc = subprocess.Popen(
            [binary, str(conf), "--sentinel"], stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.wait_for(lambda c: bool(c.ping()), "sentinel answering")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                           decode_responses=True)

    def wait_for(self, check: object, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client() as c:
                    if check(c):  # type: ignore[operator]
                        return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def master_port(self) -> int:
        with self.client() as c:
            _host, port = c.sentinel_get_master_addr_by_name(self.name)
        return int(port)

    def log_tail(self) -> str:
        path = self._dir / "sentinel.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)
