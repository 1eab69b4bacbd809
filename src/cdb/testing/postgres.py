"""A throwaway PostgreSQL server for tests: initdb into a temporary directory, start on
a free port, remove everything on close.

Nothing is shared with a system PostgreSQL: own data directory, own port, unix socket
in the temporary directory, trust authentication, and durability switched off (the
data dies with the test session anyway). ``stop`` and ``start`` take the server down
and up again on the same port with its data kept, which is what outage tests need.
PostgreSQL refuses to run as root, so as root the server runs as the ``postgres``
user (through ``runuser``) in a directory that user owns.

::

    with PostgresServer() as pg:
        await migrate(pg.url, schema="test_1")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

from cdb.errors import CdbError, LifecycleError
from cdb.testing.ports import restartable_port

BIN_ENV: Final = "CDB_POSTGRES_BIN"
"""Environment variable naming the directory of ``initdb`` and ``pg_ctl``."""
_INSTALL_HINT: Final = (
    "install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql; macOS: "
    f"brew install postgresql) or set {BIN_ENV} to the directory holding initdb and pg_ctl"
)
_TIMEOUT_S: Final = 60
# A test server, room for parallel tests. No fsync (only an OS crash would need it), but
# commits wait for their WAL to reach the OS (synchronous_commit on, the default): a
# commit PostgreSQL acknowledged survives its own crash, as in production, so a scenario
# that kills it checks the pipeline, not a durability the test server turned off.
_SETTINGS: Final = (
    "-c fsync=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=32MB"
)


class PostgresServerError(CdbError):
    """The test PostgreSQL server could not be found or started."""


def find_bin_dir() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``: ``$CDB_POSTGRES_BIN``, else the newest
    ``/usr/lib/postgresql/*/bin``, else ``PATH``.

    Raises:
        PostgresServerError: none found; the message says how to get them.
    """
    configured = os.environ.get(BIN_ENV)
    if configured:
        candidates = [Path(configured)]
    else:
        versioned = [
            p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()
        ]
        candidates = sorted(versioned, key=lambda p: int(p.parent.name), reverse=True)
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    where = f"{BIN_ENV}={configured}" if configured else "/usr/lib/postgresql/*/bin or PATH"
    raise PostgresServerError(f"initdb and pg_ctl were not found in {where}: {_INSTALL_HINT}")


def _run_as_prefix(user: str) -> list[str]:
    """The command prefix that runs a server tool as ``user`` when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise PostgresServerError(
            f"PostgreSQL refuses to run as root and there is no user {user!r} to run it as: "
            f"create one (useradd --system {user}), pass run_as, or run the tests as non-root"
        ) from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresServerError(
            "PostgreSQL refuses to run as root and runuser (util-linux) was not found: "
            "install util-linux or run the tests as non-root"
        )
    return [runuser, "-u", user, "--"]


class PostgresServer:
    """A private PostgreSQL server (sync or async ``with``); removed on exit.

    Args:
        port: port to listen on; a free one when omitted.
        database: database ``url`` points at; created unless it is ``postgres``.
        user: the superuser, trusted without a password.
        run_as: OS user that runs the server when this process is root.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        database: str = "postgres",
        user: str = "postgres",
        run_as: str = "postgres",
    ) -> None:
        self.host = host
        self.port = port or restartable_port(host)  # it may be stopped and started again
        self.database = database
        self.user = user
        self._run_as = run_as
        self._dir: Path | None = None
        self._bin: Path | None = None
        self._prefix: list[str] = []
        self._running = False
        self._closed = False

    @property
    def url(self) -> str:
        """``postgresql+asyncpg://`` URL of the database, over TCP."""
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{self.database}"

    @property
    def running(self) -> bool:
        return self._running

    @property
    def directory(self) -> Path | None:
        """The cluster directory (data, socket, ``server.log``); ``None`` before start."""
        return self._dir

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server log, for a failing test to show."""
        log = self._dir / "server.log" if self._dir else None
        return log.read_text(errors="replace")[-chars:] if log and log.is_file() else ""

    def start(self) -> None:
        """Create the cluster on first use, start the server and wait until it accepts
        connections.

        Raises:
            PostgresServerError: binaries or run-as user missing, or the server did not
                come up (the message carries its log).
            LifecycleError: the server was closed.
        """
        if self._closed:
            raise LifecycleError("this PostgresServer was closed; make a new one")
        if self._running:
            return
        created = self._dir is None
        if created:
            self._create()
        self._tool(
            "pg_ctl", "-D", "data", "-l", "server.log", "-w", "-t", str(_TIMEOUT_S),
            "-o", f"-p {self.port} -k {self._dir} -c listen_addresses={self.host} {_SETTINGS}",
            "start",
        )  # fmt: skip
        self._running = True
        if created and self.database != "postgres":
            self._tool("createdb", "-h", str(self._dir), "-p", str(self.port), "-U", self.user,
                       self.database)  # fmt: skip

    def _create(self) -> None:
        self._bin = find_bin_dir()
        self._prefix = _run_as_prefix(self._run_as)
        # Not under pytest's tmp_path: its parents are private to root, and the server
        # user must reach its data directory. Short, too: a socket path has ~100 bytes.
        self._dir = Path(tempfile.mkdtemp(prefix="cdb-pg-"))
        if self._prefix:
            entry = pwd.getpwnam(self._run_as)
            os.chown(self._dir, entry.pw_uid, entry.pw_gid)
        self._tool(
            "initdb", "-D", "data", "-U", self.user, "--auth=trust", "--encoding=UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server, keeping its data; ``kill`` stops it like a crash (immediate
        mode: no checkpoint, clients cut off)."""
        if not self._running:
            return
        self._running = False
        mode = "immediate" if kill else "fast"
        self._tool("pg_ctl", "-D", "data", "-m", mode, "-w", "-t", str(_TIMEOUT_S), "stop")

    def close(self) -> None:
        """Stop the server and remove its files; it cannot be started again."""
        if self._closed:
            return
        self._closed = True
        try:
            with contextlib.suppress(PostgresServerError):
                self.stop(kill=True)
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)

    def _tool(self, tool: str, *args: str) -> None:
        if self._bin is None or self._dir is None:
            raise LifecycleError(f"{tool}: the PostgresServer has no cluster")
        argv = [*self._prefix, str(self._bin / tool), *args]
        try:
            # The tools run in the cluster directory, which the server user owns.
            done = subprocess.run(  # noqa: S603 - the binary and arguments are ours
                argv, cwd=self._dir, capture_output=True, text=True, timeout=_TIMEOUT_S + 10,
                check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresServerError(f"{tool} could not run: {exc}") from exc
        if done.returncode != 0:
            tail = self.log_tail()
            raise PostgresServerError(
                f"{tool} {' '.join(args)} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}" + (f"\nserver log:\n{tail}" if tail else "")
            )

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> PostgresServer:
        # initdb and start take a second or two of subprocesses: keep them off the loop.
        await asyncio.to_thread(self.__enter__)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        state = "running" if self._running else "closed" if self._closed else "stopped"
        return f"PostgresServer(port={self.port}, {state})"
