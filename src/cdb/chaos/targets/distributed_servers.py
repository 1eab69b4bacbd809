"""The servers a distributed run starts: Redis, PostgreSQL, the fault proxy, and the
reaper that removes them should the coordinator die without doing it.

Redis (with an append-only file, so a stopped Redis comes back with its streams) and
PostgreSQL are started on free ports outside the OS's ephemeral range (a server stopped
by a fault must be able to listen on its port again), unless the run was given URLs of
servers to share (namespaced). Network faults go through one proxy per link, made
through the Toxiproxy HTTP API of cdb's own proxy or of a real Toxiproxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from cdb.chaos.proxy.server import ProxyServer
from cdb.chaos.scenario.registry import Unavailable
from cdb.chaos.targets.base import Plan, Target
from cdb.chaos.targets.reaper import DONE
from cdb.runtime.http import HttpServer
from cdb.testing.ports import free_port, restartable_port
from cdb.testing.postgres import PostgresServer
from cdb.testing.redis import RedisServer
from cdb.urls import postgres_endpoint, redis_endpoint

USES_POSTGRES = ("risk", "db_writer")
"""The services with a link to PostgreSQL (proxied when the scenario cuts it)."""


class ServerAddress(msgspec.Struct, frozen=True):
    """Where a server is and how to log in."""

    host: str
    port: int
    password: str = ""
    db: str = "0"
    user: str = ""

    @property
    def url(self) -> str:
        """The SQLAlchemy URL (PostgreSQL)."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql+asyncpg://{auth}@{self.host}:{self.port}/{self.db}"


class ServersTarget(Target):
    """A target whose Redis, PostgreSQL and fault proxy this run starts (or is given)."""

    redis_at: ServerAddress
    pg_at: ServerAddress

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.redis: RedisServer | None = None
        self.postgres: PostgresServer | None = None
        self.proxy: ProxyServer | None = None
        self._proxy_http: HttpServer | None = None
        self._proxy_api = ""
        self._links_made: dict[tuple[str, str], tuple[str, str]] = {}
        """(service, dependency) -> (proxy name, its listen address)."""
        self._secrets = Path(tempfile.mkdtemp(prefix="cdb-chaos-"))
        self._reaper: subprocess.Popen[bytes] | None = None
        self._http = httpx.AsyncClient(timeout=2.0)

    def _secret(self, name: str, value: str) -> str:
        path = self._secrets / name
        path.write_text(value)
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        return str(path)

    def _reap(self, order: dict[str, Any] | str) -> None:
        """Tell the reaper what to clean up should this process die without doing it."""
        if self._reaper is None or self._reaper.stdin is None:
            return
        with contextlib.suppress(OSError):
            self._reaper.stdin.write((json.dumps(order) if isinstance(order, dict) else order)
                                     .encode() + b"\n")
            self._reaper.stdin.flush()

    def _start_reaper(self) -> None:
        # In a session of its own: whatever kills this process (or its group) spares it.
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "cdb.chaos.targets.reaper"], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._reap({"remove": str(self._secrets)})

    def _dismiss_reaper(self) -> None:
        if self._reaper is None:
            return
        self._reap(DONE)
        with contextlib.suppress(OSError):
            if self._reaper.stdin is not None:
                self._reaper.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._reaper.wait(timeout=5)
        self._reaper = None

    async def _start_infra(self) -> None:
        """Throwaway Redis and PostgreSQL, or the ones given (shared, namespaced)."""
        plan = self.plan
        self._start_reaper()
        starting = []
        if plan.redis_url:
            at = redis_endpoint(plan.redis_url)
            self.redis_at = ServerAddress(at.host or "127.0.0.1", at.port, at.password, at.db)
        else:
            aof = plan.scenario.pipeline.redis_persistence == "aof"
            self.redis = RedisServer(port=restartable_port(), password=uuid.uuid4().hex,
                                     args=("--appendonly", "yes") if aof else ())
            self.redis_at = ServerAddress(self.redis.host, self.redis.port,
                                          self.redis.password or "")
            starting.append(asyncio.to_thread(self.redis.start))
            self._reap({"redis": [self.redis.host, self.redis.port, self.redis.password]})
        if plan.postgres_url:
            at = postgres_endpoint(plan.postgres_url)
            self.pg_at = ServerAddress(at.host or "127.0.0.1", at.port, at.password, at.db,
                                       at.user)
        else:
            self.postgres = PostgresServer(port=restartable_port(), database="cdb")
            self.pg_at = ServerAddress(self.postgres.host, self.postgres.port, "", "cdb",
                                       "postgres")
            starting.append(asyncio.to_thread(self.postgres.start))
        await asyncio.gather(*starting)
        if self.postgres is not None and self.postgres.directory is not None:
            self._reap({"postgres": str(self.postgres.directory),
                        "remove": str(self.postgres.directory)})

    def _links(self) -> list[tuple[str, str]]:
        pipe = self.plan.scenario.pipeline
        if pipe.proxy == "never":
            return []
        deps = {d for _, d in self.plan.proxies}
        if pipe.proxy == "always":
            deps = {"redis", "postgres"}
        return [(s, d) for d in sorted(deps) for s in self.services
                if d == "redis" or s in USES_POSTGRES]

    async def _start_proxies(self, links: list[tuple[str, str]]) -> None:
        """One proxy per link, made through the Toxiproxy HTTP API: of a real Toxiproxy
        (``--toxiproxy URL``), else of cdb's own proxy started here."""
        if self.plan.toxiproxy_url:
            self._proxy_api = self.plan.toxiproxy_url.rstrip("/")
        else:
            self.proxy = ProxyServer(seed=self.plan.seed)
            self._proxy_http = HttpServer(self.proxy.app, "127.0.0.1", 0)
            await self._proxy_http.start()
            self._proxy_api = f"http://127.0.0.1:{self._proxy_http.port}"
        upstream = {"redis": f"{self.redis_at.host}:{self.redis_at.port}",
                    "postgres": f"{self.pg_at.host}:{self.pg_at.port}"}
        for service, dep in links:
            # Named by the run's namespace: a shared Toxiproxy serves several runs.
            name = f"{self.namespace}-{service}-{dep}"
            body = {"name": name, "listen": f"127.0.0.1:{free_port()}",
                    "upstream": upstream[dep], "enabled": True}
            r = await self._http.post(f"{self._proxy_api}/proxies", json=body, timeout=5.0)
            if r.status_code >= 400:
                raise Unavailable(f"the proxy at {self._proxy_api} refused {name}: "
                                  f"{r.status_code} {r.text}")
            self._links_made[(service, dep)] = (name, str(r.json()["listen"]))

    async def _remove_proxies(self) -> None:
        for name, _ in self._links_made.values():
            with contextlib.suppress(httpx.HTTPError):
                await self._http.delete(f"{self._proxy_api}/proxies/{name}", timeout=2.0)
        self._links_made.clear()

    async def _close_servers(self) -> None:
        """Stop the proxy and the servers this run started; dismiss the reaper."""
        if self._proxy_http is not None:
            await self._proxy_http.stop()
        if self.proxy is not None:
            await self.proxy.close()
        for server in (self.redis, self.postgres):
            if server is not None:
                await asyncio.to_thread(server.close)
        shutil.rmtree(self._secrets, ignore_errors=True)
        await asyncio.to_thread(self._dismiss_reaper)

    def infra(self, name: str) -> Any:
        server = {"redis": self.redis, "postgres": self.postgres}.get(name)
        if server is None:
            raise Unavailable(f"{name} is shared ({name} URL given), not the run's own: it "
                              "is not taken down")
        return server

    def proxy_url(self) -> str:
        if not self._links_made:
            raise Unavailable("no fault proxy in this run (no network fault was planned)")
        return self._proxy_api

    def proxy_name(self, service: str, dependency: str) -> str:
        if not self._links_made:
            raise Unavailable("no fault proxy in this run")
        names = [name for (s, dep), (name, _) in self._links_made.items()
                 if dep == dependency and service in ("*", s)]
        if not names:
            raise Unavailable(f"no proxied link {service}->{dependency}")
        return ",".join(names)
