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
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from cdb.bus.keys import ALL_STREAMS, Namespace
from cdb.bus.redis_streams import undelivered
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
        claim_idle_s: ``CDB_CLAIM_IDLE_S``: 2 s by default, so what a killed consumer
            left pending moves on quickly; None keeps the product's default (30 s).
    """

    def __init__(self, workdir: Path, env: dict[str, str] | None = None,
                 namespace: str | None = None, claim_idle_s: float | None = 2.0) -> None:
        self.workdir = workdir
        self.namespace = namespace or f"t{uuid.uuid4().hex[:8]}"
        self.ports = {name: restartable_port() for name in SERVICE_PORTS}
        self.redis = RedisServer(password=REDIS_PASSWORD)
        self.postgres = PostgresServer()
        self.extra_env = env or {}
        self.claim_idle_s = claim_idle_s
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
            # Disk buffers of this pipeline live and die with it.
            "CDB_BUFFER_DIR": str(self.workdir / "buffers"),
            "LOG_LEVEL": "INFO",
            **({"CDB_CLAIM_IDLE_S": f"{self.claim_idle_s:g}"} if self.claim_idle_s else {}),
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

    def progress(self) -> dict[str, float]:
        """What each service has done so far, from its ``/metrics``: events consumed by
        topic (``risk:stream.market_data``), and ``fills`` (execution) and ``rows``
        (db_writer). Readable while Redis or PostgreSQL is down."""
        out: dict[str, float] = {}
        for name in SERVICE_PORTS:
            # A busy 2-core host can take seconds to answer; patience, not a failure.
            text = self.http.get(self.url(name, "/metrics"), timeout=30.0).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "cdb_events_consumed_total":
                        key = f"{name}:{sample.labels['topic']}"
                    elif sample.name == "cdb_fills_total":
                        key = "fills"
                    elif sample.name == "cdb_db_rows_written_total":
                        key = "rows"
                    else:
                        continue
                    out[key] = out.get(key, 0.0) + sample.value
        return out

    def time_to_flow(self, keys: Iterable[str], since: float, timeout: float = 120.0,
                     ) -> dict[str, float]:
        """Seconds from ``since`` (``time.monotonic()``, e.g. when a server came back)
        until each ``progress`` key moved past where it stood when this was called.

        Raises:
            AssertionError: one did not move within ``timeout``.
        """
        base = self.progress()
        waiting = set(keys)
        found: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while waiting:
            now = self.progress()
            at = time.monotonic() - since
            for key in [k for k in waiting if now.get(k, 0.0) > base.get(k, 0.0)]:
                found[key] = at
                waiting.discard(key)
            if waiting and time.monotonic() > deadline:
                raise AssertionError(f"no progress within {timeout} s of {sorted(waiting)} "
                                     f"(moved: {found})")
            time.sleep(0.1)
        return found

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
                stream = client.xinfo_stream(key)
                for group in client.xinfo_groups(key):
                    total += int(group["pending"]) + (undelivered(group, stream) or 0)
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
