"""The distributed pipeline on one machine, for tests and demos.

``LocalPipeline`` starts its own redis-server (with a password) and PostgreSQL on
free ports, picks free ports for the five service APIs, and runs the real ``cdb up``
command against them in one namespace, so nothing shared is touched and several
pipelines run side by side.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Self

import httpx
import redis

from cdb.bus.keys import ALL_STREAMS, Namespace
from cdb.config import SERVICE_PORTS
from cdb.testing.ports import restartable_port
from cdb.testing.postgres import PostgresServer
from cdb.testing.redis import RedisServer
from cdb.testing.waiting import eventually

REDIS_PASSWORD = "cdb-test-redis-pw"  # noqa: S105 - a throwaway test server's password


class LocalPipeline:
    """Redis, PostgreSQL and ``cdb up``, torn down on exit.

    Args:
        workdir: where logs go.
        env: extra settings for the services (e.g. ``WS_SPEED``).
        namespace: ``SERVICE_INSTANCE_NAME``; a unique one by default.
    """

    def __init__(self, workdir: Path, env: dict[str, str] | None = None,
                 namespace: str | None = None) -> None:
        self.workdir = workdir
        self.namespace = namespace or f"t{uuid.uuid4().hex[:8]}"
        self.ports = {name: restartable_port() for name in SERVICE_PORTS}
        self.redis = RedisServer(password=REDIS_PASSWORD)
        self.postgres = PostgresServer()
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(timeout=5.0)

    def __enter__(self) -> Self:
        self.redis.start()
        self.postgres.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.http.close()
            self.redis.close()
            self.postgres.close()

    @property
    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "SERVICE_INSTANCE_NAME": self.namespace,
            "SIGNAL_STRATEGY_ID": "momentum",
            "CDB_CLAIM_IDLE_S": "2",
            # Disk buffers of this pipeline live and die with it.
            "CDB_BUFFER_DIR": str(self.workdir / "buffers"),
            "LOG_LEVEL": "INFO",
            **{f"CDB_PORT_{name.upper()}": str(port) for name, port in self.ports.items()},
            **self.extra_env,
        }
        env.pop("CDB_SECRETS_DIR", None)
        return env

    @property
    def postgres_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.postgres.port}/postgres"

    @property
    def schema(self) -> str:
        return "cdb_" + "".join(c if c.isalnum() else "_" for c in self.namespace.lower())

    def start(self) -> None:
        """Run ``cdb up`` and wait until every service is ready."""
        log = (self.workdir / "cdb-up.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [sys.executable, "-m", "cdb", "up",
             "--redis", f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.redis.port}/0",
             "--postgres", self.postgres_url, "--log-dir", str(self.workdir / "logs")],
            env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )
        log.close()
        for name in SERVICE_PORTS:
            eventually(lambda n=name: self._ready(n), 60, f"{name} ready")  # type: ignore[misc]

    def _ready(self, name: str) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"cdb up exited {self.process.returncode}: {self.logs()}")
        try:
            return self.http.get(self.url(name, "/health/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def get(self, service: str, path: str) -> Any:
        response = self.http.get(self.url(service, path))
        response.raise_for_status()
        return response.json()

    def details(self, service: str) -> dict[str, Any]:
        """``details`` of the service's ``/health``, also while it is unhealthy (503: a
        consumer while Redis is down still says what it is doing)."""
        response = self.http.get(self.url(service, "/health"))
        if response.status_code != 503:
            response.raise_for_status()
        details: dict[str, Any] = response.json()["details"]
        return details

    def redis_client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.redis.port, password=REDIS_PASSWORD)

    def backlog(self) -> int:
        """Entries not yet acknowledged by some consumer group, over every stream."""
        ns = Namespace(self.namespace)
        total = 0
        with self.redis_client() as client:
            for stream in ALL_STREAMS:
                key = ns.key(stream)
                if not client.exists(key):
                    continue
                for group in client.xinfo_groups(key):
                    total += int(group["pending"]) + int(group.get("lag") or 0)
        return total

    def wait_done(self, timeout: float = 120.0) -> None:
        """Wait until ws has published its whole market and every group caught up."""
        eventually(lambda: bool(self.details("ws")["done"]), timeout, "ws finished")
        eventually(lambda: self.backlog() == 0, timeout, "consumer groups drained")

    def kill(self, service: str) -> int:
        """SIGKILL ``service`` (``cdb up`` restarts it); its pid is returned."""
        pid = int(self.details(service)["pid"])
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self, sig: signal.Signals = signal.SIGINT) -> None:
        """Ctrl-C (or ``sig``, e.g. SIGTERM) ``cdb up``: services drain and exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("**/*.log")):
            parts.append(f"== {path.name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)
