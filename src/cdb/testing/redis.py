"""A throwaway ``redis-server`` for tests: own process, free port, no persistence.

Tests never touch a shared Redis: each session starts its own server, and a unique
namespace per test keeps tests apart on it. ``stop`` and ``start`` take the server
down and up again on the same port (empty, as after a crash without persistence),
which is what outage tests need.

::

    with RedisServer() as server:
        client = server.client()
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cdb.errors import CdbError, LifecycleError
from cdb.testing.ports import restartable_port

_INSTALL_HINT = (
    "install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) "
    "or point CDB_REDIS_SERVER at the redis-server binary"
)


class RedisServerError(CdbError):
    """The test Redis server could not be found or started."""


class RedisServer:
    """A ``redis-server`` child process, killed on exit (sync or async ``with``).

    Args:
        port: port to listen on; a free one when omitted.
        password: set ``requirepass``; clients then need it (``url`` carries it).
        executable: the binary; ``$CDB_REDIS_SERVER`` or ``redis-server`` on PATH.
        startup_timeout: how long (s) to wait for the first PING to answer.
        args: more ``redis-server`` arguments, e.g. ``("--maxmemory", "10mb")``.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        password: str | None = None,
        host: str = "127.0.0.1",
        executable: str | None = None,
        startup_timeout: float = 10.0,
        args: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.port = port or restartable_port(host)  # it may be stopped and started again
        self.password = password
        self.startup_timeout = startup_timeout
        self._executable = executable or os.environ.get("CDB_REDIS_SERVER") or "redis-server"
        self._args = args
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._log: IO[bytes] | None = None
        self._closed = False

    @property
    def url(self) -> str:
        """``redis://`` URL of the server, with the password when there is one."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self, **kwargs: Any) -> aioredis.Redis:
        """A new asyncio client of this server (binary responses); close it with
        ``aclose()``."""
        return aioredis.Redis(host=self.host, port=self.port, password=self.password, **kwargs)

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers PING.

        Raises:
            RedisServerError: redis-server is not installed, or did not come up.
            LifecycleError: the server was closed.
        """
        if self._closed:
            raise LifecycleError("this RedisServer was closed; make a new one")
        if self.running:
            return
        binary = shutil.which(self._executable)
        if binary is None:
            raise RedisServerError(f"{self._executable!r} was not found: {_INSTALL_HINT}")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="cdb-redis-"))
            self._log = (self._dir / "redis.log").open("ab")
        cmd = [
            binary, "--port", str(self.port), "--bind", self.host,
            "--save", "", "--appendonly", "no", "--dir", str(self._dir),
        ]
        if self.password:
            cmd += ["--requirepass", self.password]
        cmd += self._args
        self._proc = subprocess.Popen(  # noqa: S603 - the binary and arguments are ours
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        # No client-side retries: this loop is the retry, and it must notice at once
        # when the process died.
        probe = redis.Redis(
            host=self.host, port=self.port, password=self.password,
            socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0),
        )
        try:
            while True:
                if self._proc is None or self._proc.poll() is not None:
                    raise RedisServerError(
                        f"redis-server on port {self.port} exited at start:\n{self._log_tail()}"
                    )
                try:
                    if probe.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    self.stop(kill=True)
                    raise RedisServerError(
                        f"redis-server on port {self.port} did not answer PING within "
                        f"{self.startup_timeout} s:\n{self._log_tail()}"
                    )
                time.sleep(0.01)
        finally:
            probe.close()

    def _log_tail(self, lines: int = 20) -> str:
        if self._dir is None:
            return ""
        text = (self._dir / "redis.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM (SIGKILL with ``kill``, like a crash); its data is
        gone."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
            # A paused server would not act on SIGTERM until continued.
            proc.send_signal(signal.SIGCONT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def wipe(self) -> None:
        """Delete the stopped server's data files (AOF, RDB): its next start is empty, as
        a Redis replaced by a new one would be.

        Raises:
            LifecycleError: the server is running.
        """
        if self.running:
            raise LifecycleError("stop the redis-server before wiping its data")
        if self._dir is None:
            return
        for path in self._dir.iterdir():
            if path.name.startswith(("appendonly", "dump")):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections hang instead of failing."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Kill the server and remove its files; it cannot be started again."""
        if self._closed:
            return
        self._closed = True
        self.stop(kill=True)
        if self._log is not None:
            self._log.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RedisServer:
        # Starting blocks on a subprocess and PING polling: keep it off the event loop.
        await asyncio.to_thread(self.__enter__)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        state = "running" if self.running else "closed" if self._closed else "stopped"
        return f"RedisServer(port={self.port}, {state})"
