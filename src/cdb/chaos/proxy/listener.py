"""One proxy: a listening port forwarding to one upstream, with its toxics."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from typing import Any

from cdb.chaos.proxy.link import Link
from cdb.chaos.proxy.toxics import (
    ProxyError,
    Stream,
    Toxic,
    checked_attributes,
    finite_number,
    hostport,
)


class Proxy:
    """One listening port forwarding to one upstream, with its toxics."""

    def __init__(self, name: str, listen: str, upstream: str, *, enabled: bool = True,
                 rng: random.Random | None = None) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self._want_enabled = enabled
        self.toxics: dict[str, Toxic] = {}
        self.links: set[Link] = set()
        self._connecting: set[asyncio.StreamWriter] = set()
        self.rng = rng or random.Random(name)
        self._server: asyncio.Server | None = None
        self.accepted = 0
        self.refused_upstream = 0
        self.recent_errors: deque[str] = deque(maxlen=5)

    async def start(self) -> None:
        if self._want_enabled:
            await self.enable()

    async def enable(self) -> None:
        if self._server is not None:
            return
        host, port = hostport(self.listen)
        try:
            self._server = await asyncio.start_server(self._accept, host, port,
                                                      reuse_address=True)
        except OSError as exc:
            raise ProxyError(409, f"proxy {self.name}: cannot listen on {self.listen}: "
                                  f"{exc.strerror}") from exc
        bound = self._server.sockets[0].getsockname()
        self.listen = f"{host}:{bound[1]}"
        self.enabled = True

    async def disable(self) -> None:
        self.enabled = False
        self._want_enabled = False
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for link in list(self.links):
            link.close()
        for writer in list(self._connecting):
            writer.close()
        if server is not None:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._connecting.add(writer)
        host, port = hostport(self.upstream)
        try:
            async with asyncio.timeout(5):
                up = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            self.refused_upstream += 1
            self.recent_errors.append(f"upstream {self.upstream}: {exc!r}")
            writer.close()
            return
        finally:
            self._connecting.discard(writer)
        if not self.enabled or writer.is_closing():
            # Disabled while connecting upstream: this connection never happened.
            up[1].close()
            writer.close()
            return
        link = Link(self, (reader, writer), up)
        self.links.add(link)
        link.start()

    def add_toxic(self, body: dict[str, Any]) -> Toxic:
        kind = str(body.get("type", ""))
        stream: Stream = body.get("stream") or "downstream"
        if stream not in ("upstream", "downstream"):
            raise ProxyError(400, "stream must be upstream or downstream")
        name = str(body.get("name") or f"{kind}_{stream}")
        if name in self.toxics:
            raise ProxyError(409, f"toxic {name[:100]!r} already exists on {self.name}")
        attributes = body.get("attributes")
        toxic = Toxic(name, kind, stream, body.get("toxicity", 1.0),
                      {} if attributes is None else attributes)
        self.toxics[name] = toxic
        for link in list(self.links):
            link.toxics(toxic.stream)  # decide now: timers start at the toxic's addition
        return toxic

    def update_toxic(self, name: str, body: dict[str, Any]) -> Toxic:
        toxic = self.toxic(name)
        given = body.get("attributes")
        checked = checked_attributes(toxic.type, {} if given is None else given)
        toxicity = finite_number("toxicity", body.get("toxicity", toxic.toxicity), high=1.0)
        toxic.attributes.update(checked)
        toxic.toxicity = toxicity
        return toxic

    def remove_toxic(self, name: str) -> None:
        toxic = self.toxic(name)
        del self.toxics[name]
        toxic.removed.set()

    def toxic(self, name: str) -> Toxic:
        try:
            return self.toxics[name]
        except KeyError:
            raise ProxyError(404, f"toxic {name[:100]!r} not found on {self.name}") from None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "listen": self.listen, "upstream": self.upstream,
                "enabled": self.enabled, "toxics": [t.to_json() for t in self.toxics.values()],
                "stats": {"connections": len(self.links), "accepted": self.accepted,
                          "upstream_failures": self.refused_upstream}}
