"""A fault-injecting TCP proxy with Toxiproxy's toxics and a compatible HTTP API.

Hand-written on purpose: no maintained Python library provides a Toxiproxy-compatible
proxy (the Python Toxiproxy packages are clients of the Go server, and the few
pure-Python proxies are unmaintained and lack toxics), and the coordinator must not
depend on a Go binary being installed. Because the API is compatible, a run can be
pointed at a real Toxiproxy instead and the faults work unchanged.

Toxics (names and attributes as Toxiproxy's):

- ``latency``: ``latency`` and ``jitter`` (ms) added to each chunk, measured from its
  arrival so a burst is delayed, not serialised;
- ``bandwidth``: ``rate`` in KB/s;
- ``slow_close``: ``delay`` (ms) before a closing connection is closed;
- ``timeout``: nothing gets through; the connection is closed after ``timeout`` ms, or
  held until the toxic is removed when it is 0 (then the held data flows);
- ``reset_peer``: the connection is reset (TCP RST) after ``timeout`` ms;
- ``limit_data``: the connection is closed once ``bytes`` have passed.

Each toxic acts on one direction (``stream``: ``upstream`` towards the server,
``downstream`` towards the client, the default) and on a share of the connections
(``toxicity``, decided once per connection with a seeded random generator). A proxy
that is disabled (``enabled: false``, the "down" fault) closes every connection and
stops listening until it is enabled again. Toxics and proxies also report ``stats``
(chunks and connections they acted on), a cdb extension the coordinator uses to check
that a fault took effect.

API (Toxiproxy's paths): ``GET /version``, ``GET|POST /proxies``, ``POST /populate``,
``GET|POST|PATCH|DELETE /proxies/{proxy}``, ``GET|POST /proxies/{proxy}/toxics``,
``GET|POST|PATCH|DELETE /proxies/{proxy}/toxics/{toxic}``, ``POST /reset``.
Standalone: ``python -m cdb.chaos.proxy --api 127.0.0.1:8474``.

Whoever reaches the API can make the host connect anywhere, so it is guarded: proxies
listen on loopback unless the server is made ``public``; ``upstreams`` (when given)
lists the hosts proxies may forward to; a configured ``token`` is required as
``Authorization: Bearer <token>`` on every request (compared in constant time); bodies
are at most ``_MAX_BODY`` bytes and every number in them must be finite. Each
direction of a connection holds at most ``_QUEUE_CHUNKS`` chunks: a side that does not
read makes the proxy stop reading the other (backpressure), instead of buffering
without bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import math
import os
import random
import socket
import struct
import time
from collections import deque
from typing import Any, Final, Literal

from fastapi import FastAPI, Request, Response

from cdb import __version__
from cdb.urls import is_loopback

Stream = Literal["upstream", "downstream"]
ATTRIBUTES: Final[dict[str, dict[str, float]]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "limit_data": {"bytes": 0},
}
_CHUNK: Final = 32 * 1024
_QUEUE_CHUNKS: Final = 8
"""Chunks in flight per direction of a connection (256 KiB): the bound of its memory."""
_MAX_BODY: Final = 1024 * 1024
TOKEN_ENV: Final = "CDB_PROXY_TOKEN"  # noqa: S105 - the variable's name, not a token
_MAX_ATTRIBUTE: Final = 1e12


class ProxyError(ValueError):
    """A bad request to the proxy API (status and message)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        raise ProxyError(400, f"{text[:100]!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)




def _number(what: str, value: Any, *, low: float = 0.0, high: float = math.inf) -> float:
    """A finite number from a request body, within [low, high]; ProxyError(400) if not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProxyError(400, f"{what} must be a number, not {json.dumps(value)[:40]}")
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ProxyError(400, f"{what} must be a finite number from {low:g} to {high:g}, "
                              f"not {value!r}")
    return number


def _attributes(kind: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ProxyError(400, "attributes must be a JSON object")
    unknown = set(value) - set(ATTRIBUTES.get(kind, {}))
    if unknown:
        raise ProxyError(400, f"{kind} has no attribute {', '.join(sorted(map(str, unknown)))}; "
                              f"it has {', '.join(ATTRIBUTES.get(kind, {}))}")
    return {k: _number(f"{kind}.{k}", v, high=_MAX_ATTRIBUTE) for k, v in value.items()}


class Toxic:
    """One toxic of a proxy."""

    def __init__(self, name: str, kind: str, stream: Stream, toxicity: Any,
                 attributes: Any) -> None:
        if kind not in ATTRIBUTES:
            raise ProxyError(400, f"unknown toxic type {kind!r}; one of {', '.join(ATTRIBUTES)}")
        if stream not in ("upstream", "downstream"):
            raise ProxyError(400, f"stream must be upstream or downstream, not {stream!r}")
        toxicity = _number("toxicity", toxicity, high=1.0)
        attributes = _attributes(kind, attributes)
        self.name = name
        self.type = kind
        self.stream = stream
        self.toxicity = toxicity
        self.attributes = {**ATTRIBUTES[kind], **{k: float(v) for k, v in attributes.items()}}
        self.chunks = 0
        self.connections = 0
        self.bytes = 0
        self.removed = asyncio.Event()

    def attr(self, key: str) -> float:
        return float(self.attributes[key])

    def to_json(self) -> dict[str, Any]:
        attrs = {k: int(v) if float(v).is_integer() else v for k, v in self.attributes.items()}
        return {"name": self.name, "type": self.type, "stream": self.stream,
                "toxicity": self.toxicity, "attributes": attrs,
                "stats": {"chunks": self.chunks, "connections": self.connections,
                          "bytes": self.bytes}}


class _Link:
    """One proxied connection: client <-> proxy <-> upstream."""

    def __init__(self, proxy: Proxy, client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.closed = asyncio.Event()
        self._decisions: dict[int, bool] = {}
        self._sent: dict[str, int] = {"upstream": 0, "downstream": 0}
        self._timers: dict[int, asyncio.Task[None]] = {}
        self._half_closed: set[str] = set()
        self.tasks: list[asyncio.Task[None]] = []

    def affected(self, toxic: Toxic) -> bool:
        """Whether ``toxic`` acts on this connection (decided once, by toxicity)."""
        key = id(toxic)
        decided = self._decisions.get(key)
        if decided is None:
            decided = self._decisions[key] = self.proxy.rng.random() < toxic.toxicity
            if decided:
                toxic.connections += 1
                if toxic.type in ("timeout", "reset_peer"):
                    self._timers[key] = asyncio.create_task(self._timer(toxic),
                                                            name="proxy.timer")
        return decided

    async def _timer(self, toxic: Toxic) -> None:
        delay = toxic.attr("timeout") / 1000
        if toxic.type == "timeout" and delay <= 0:
            return  # held until removed, never closed
        removed = asyncio.ensure_future(toxic.removed.wait())
        try:
            done, _ = await asyncio.wait([removed], timeout=delay)
        finally:
            removed.cancel()
        if not done:
            self.close(reset=toxic.type == "reset_peer")

    def toxics(self, stream: Stream) -> list[Toxic]:
        return [t for t in list(self.proxy.toxics.values())
                if t.stream == stream and self.affected(t)]

    def start(self) -> None:
        for stream, (reader, _), (_, writer) in (
            ("upstream", self.client, self.upstream), ("downstream", self.upstream, self.client),
        ):
            queue: asyncio.Queue[tuple[bytes, float] | None] = asyncio.Queue(_QUEUE_CHUNKS)
            self.tasks.append(asyncio.create_task(self._read(reader, queue), name="proxy.read"))
            self.tasks.append(asyncio.create_task(self._write(stream, queue, writer),  # type: ignore[arg-type]
                                                  name="proxy.write"))
        for stream in ("upstream", "downstream"):
            self.toxics(stream)  # type: ignore[arg-type]  # start timers of toxics present

    async def _read(self, reader: asyncio.StreamReader,
                    queue: asyncio.Queue[tuple[bytes, float] | None]) -> None:
        try:
            while data := await reader.read(_CHUNK):
                await queue.put((data, time.monotonic()))
        except (OSError, asyncio.IncompleteReadError):
            pass
        await queue.put(None)

    async def _write(self, stream: Stream, queue: asyncio.Queue[tuple[bytes, float] | None],
                     writer: asyncio.StreamWriter) -> None:
        try:
            while (item := await queue.get()) is not None:
                chunk, arrived = item
                data = await self._through(stream, chunk, arrived)
                if data is None:
                    self.close()
                    return
                writer.write(data)
                await writer.drain()
                if self._over_limit(stream, len(data)):
                    self.close()
                    return
            # The sender closed its side: pass the close on (slowly, with slow_close)
            # and keep the other direction going until it closes too.
            for toxic in self.toxics(stream):
                if toxic.type == "slow_close":
                    toxic.chunks += 1
                    await asyncio.sleep(toxic.attr("delay") / 1000)
            if writer.can_write_eof():
                writer.write_eof()
            self._half_closed.add(stream)
            if len(self._half_closed) == 2:
                self.close()
        except (OSError, ConnectionError):
            self.close()

    async def _through(self, stream: Stream, data: bytes, arrived: float) -> bytes | None:
        """Apply the toxics of ``stream`` to one chunk; None when the link closed."""
        for toxic in self.toxics(stream):
            kind = toxic.type
            if kind == "latency":
                jitter = toxic.attr("jitter")
                delay = toxic.attr("latency") + (self.proxy.rng.uniform(-jitter, jitter)
                                                 if jitter else 0.0)
                wait = arrived + max(delay, 0.0) / 1000 - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            elif kind == "bandwidth":
                rate = toxic.attr("rate") * 1000
                if rate > 0:
                    await asyncio.sleep(len(data) / rate)
            elif kind == "timeout":
                toxic.chunks += 1
                await self._held(toxic)
                if self.closed.is_set():
                    return None
                continue
            elif kind == "limit_data":
                left = int(toxic.attr("bytes")) - self._sent[stream]
                if left <= 0:
                    toxic.chunks += 1
                    return None
                if len(data) > left:
                    data = data[:left]
            else:
                continue
            toxic.chunks += 1
            toxic.bytes += len(data)
        return data

    async def _held(self, toxic: Toxic) -> None:
        removed = asyncio.ensure_future(toxic.removed.wait())
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait([removed, closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            removed.cancel()
            closed.cancel()

    def _over_limit(self, stream: Stream, n: int) -> bool:
        self._sent[stream] += n
        return any(t.type == "limit_data" and self._sent[stream] >= t.attr("bytes")
                   for t in self.toxics(stream))

    def close(self, *, reset: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for _, writer in (self.client, self.upstream):
            if reset:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                writer.transport.abort()
            else:
                writer.close()
        for task in [*self.tasks, *self._timers.values()]:
            if task is not asyncio.current_task():
                task.cancel()
        self.proxy.links.discard(self)


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
        self.links: set[_Link] = set()
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
        host, port = _hostport(self.listen)
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
        host, port = _hostport(self.upstream)
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
        link = _Link(self, (reader, writer), up)
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
        attributes = _attributes(toxic.type, {} if given is None else given)
        toxicity = _number("toxicity", body.get("toxicity", toxic.toxicity), high=1.0)
        toxic.attributes.update(attributes)
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


class ProxyServer:
    """Proxies by name, and the HTTP API that drives them.

    Args:
        seed: seeds every proxy's random generator (toxicity, jitter).
        token: when set, every API request needs ``Authorization: Bearer <token>``.
        public: let proxies listen on other interfaces than loopback.
        upstreams: hosts (or ``host:port``) proxies may forward to; None: any.
    """

    def __init__(self, seed: int = 0, *, token: str | None = None, public: bool = False,
                 upstreams: set[str] | None = None) -> None:
        self.proxies: dict[str, Proxy] = {}
        self.seed = seed
        self.token = token or None
        self.public = public
        self.upstreams = upstreams
        self.app = self._build_app()

    def _check_listen(self, listen: str) -> None:
        host, _ = _hostport(listen)
        if not self.public and not is_loopback(host):
            raise ProxyError(403, f"listen {listen[:100]!r}: proxies listen on loopback "
                                  "(127.0.0.1) unless the proxy server is started public")

    def _check_upstream(self, upstream: str) -> None:
        host, _ = _hostport(upstream)
        if self.upstreams is not None and not {host, upstream} & self.upstreams:
            raise ProxyError(403, f"upstream {upstream[:100]!r} is not among the allowed "
                                  f"upstreams {sorted(self.upstreams)}")

    async def create(self, name: str, listen: str, upstream: str,
                     enabled: bool = True) -> Proxy:
        if not name:
            raise ProxyError(400, "a proxy needs a name")
        if name in self.proxies:
            raise ProxyError(409, f"proxy {name[:100]!r} already exists")
        self._check_listen(listen)
        self._check_upstream(upstream)
        proxy = Proxy(name, listen, upstream, enabled=enabled,
                      rng=random.Random(f"{self.seed}:{name}"))
        await proxy.start()
        self.proxies[name] = proxy
        return proxy

    def get(self, name: str) -> Proxy:
        try:
            return self.proxies[name]
        except KeyError:
            raise ProxyError(404, f"proxy {name[:100]!r} not found") from None

    async def update(self, name: str, body: dict[str, Any]) -> Proxy:
        proxy = self.get(name)
        if "upstream" in body:
            self._check_upstream(str(body["upstream"]))
            proxy.upstream = str(body["upstream"])
        if "listen" in body and str(body["listen"]) != proxy.listen:
            self._check_listen(str(body["listen"]))
            was = proxy.enabled
            await proxy.disable()
            proxy.listen = str(body["listen"])
            if was:
                await proxy.enable()
        if "enabled" in body:
            if body["enabled"]:
                await proxy.enable()
            else:
                await proxy.disable()
        return proxy

    async def delete(self, name: str) -> None:
        proxy = self.get(name)
        await proxy.disable()
        del self.proxies[name]

    async def reset(self) -> None:
        """Every proxy enabled, every toxic removed (Toxiproxy's ``POST /reset``)."""
        for proxy in self.proxies.values():
            for toxic in list(proxy.toxics):
                proxy.remove_toxic(toxic)
            await proxy.enable()

    async def close(self) -> None:
        for proxy in list(self.proxies.values()):
            await proxy.disable()
        self.proxies.clear()

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="cdb fault proxy (Toxiproxy API)", version=__version__)
        app.add_exception_handler(ProxyError, self._error)  # type: ignore[arg-type]
        routes: list[tuple[str, Any, list[str]]] = [
            ("/version", self._version, ["GET"]),
            ("/proxies", self._list, ["GET"]),
            ("/proxies", self._create, ["POST"]),
            ("/populate", self._populate, ["POST"]),
            ("/reset", self._reset, ["POST"]),
            ("/proxies/{name}", self._get, ["GET"]),
            ("/proxies/{name}", self._update, ["POST", "PATCH"]),
            ("/proxies/{name}", self._delete, ["DELETE"]),
            ("/proxies/{name}/toxics", self._list_toxics, ["GET"]),
            ("/proxies/{name}/toxics", self._add_toxic, ["POST"]),
            ("/proxies/{name}/toxics/{toxic}", self._get_toxic, ["GET"]),
            ("/proxies/{name}/toxics/{toxic}", self._update_toxic, ["POST", "PATCH"]),
            ("/proxies/{name}/toxics/{toxic}", self._delete_toxic, ["DELETE"]),
        ]
        for path, handler, methods in routes:
            app.add_api_route(path, handler, methods=methods)
        app.middleware("http")(self._guard)
        return app

    async def _guard(self, request: Request, call_next: Any) -> Response:
        """The token (when configured) and the body size, before any handler runs."""
        if self.token is not None:
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    value.strip().encode(), self.token.encode()):
                return self._json({"error": "send Authorization: Bearer <token>",
                                   "status": 401}, 401)
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > _MAX_BODY:
            return self._json({"error": f"body over {_MAX_BODY} bytes", "status": 413}, 413)
        response: Response = await call_next(request)
        return response

    # -- HTTP handlers (Toxiproxy's API) -----------------------------------------------

    @staticmethod
    def _json(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status, media_type="application/json")

    @staticmethod
    async def _body(request: Request) -> Any:
        raw = b""
        async for part in request.stream():  # bounded even without a content-length
            raw += part
            if len(raw) > _MAX_BODY:
                raise ProxyError(413, f"body over {_MAX_BODY} bytes")
        if not raw.strip():
            return {}
        try:
            return json.loads(raw, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise ProxyError(400, f"body is not JSON: {str(exc)[:200]}") from None

    async def _object(self, request: Request) -> dict[str, Any]:
        data = await self._body(request)
        if not isinstance(data, dict):
            raise ProxyError(400, "body must be a JSON object")
        return data

    async def _error(self, request: Request, exc: ProxyError) -> Response:
        return self._json({"error": str(exc), "status": exc.status}, exc.status)

    async def _version(self) -> Response:
        return Response(f"cdb-proxy {__version__}", media_type="text/plain")

    async def _list(self) -> Response:
        return self._json({n: p.to_json() for n, p in self.proxies.items()})

    async def _create(self, request: Request) -> Response:
        b = await self._object(request)
        return self._json((await self._create_from(b)).to_json(), 201)

    async def _create_from(self, b: dict[str, Any]) -> Proxy:
        return await self.create(str(b.get("name", "")), str(b.get("listen") or "127.0.0.1:0"),
                                 str(b.get("upstream", "")), bool(b.get("enabled", True)))

    async def _populate(self, request: Request) -> Response:
        items = await self._body(request)
        if not isinstance(items, list):
            raise ProxyError(400, "populate takes a JSON array of proxies")
        if not all(isinstance(item, dict) for item in items):
            raise ProxyError(400, "populate takes a JSON array of proxy objects")
        made = []
        for item in items:
            if item.get("name") in self.proxies:
                made.append(await self.update(item["name"], item))
            else:
                made.append(await self._create_from(item))
        return self._json({"proxies": [p.to_json() for p in made]}, 201)

    async def _reset(self) -> Response:
        await self.reset()
        return Response(status_code=204)

    async def _get(self, name: str) -> Response:
        return self._json(self.get(name).to_json())

    async def _update(self, name: str, request: Request) -> Response:
        return self._json((await self.update(name, await self._object(request))).to_json())

    async def _delete(self, name: str) -> Response:
        await self.delete(name)
        return Response(status_code=204)

    async def _list_toxics(self, name: str) -> Response:
        return self._json([t.to_json() for t in self.get(name).toxics.values()])

    async def _add_toxic(self, name: str, request: Request) -> Response:
        return self._json(self.get(name).add_toxic(await self._object(request)).to_json())

    async def _get_toxic(self, name: str, toxic: str) -> Response:
        return self._json(self.get(name).toxic(toxic).to_json())

    async def _update_toxic(self, name: str, toxic: str, request: Request) -> Response:
        proxy = self.get(name)
        return self._json(proxy.update_toxic(toxic, await self._object(request)).to_json())

    async def _delete_toxic(self, name: str, toxic: str) -> Response:
        self.get(name).remove_toxic(toxic)
        return Response(status_code=204)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


async def serve(api: str, seed: int = 0, *, token: str | None = None, public: bool = False,
                upstreams: set[str] | None = None) -> None:
    """Run the proxy API on ``api`` (host:port) until cancelled."""
    from cdb.runtime.http import HttpServer

    host, port = _hostport(api)
    if not is_loopback(host) and not token:
        raise ProxyError(400, f"--api {api}: an API off loopback needs a token "
                              f"({TOKEN_ENV} or --token-file)")
    server = ProxyServer(seed, token=token, public=public, upstreams=upstreams)
    http = HttpServer(server.app, host, port)
    await http.start()
    try:
        await asyncio.Event().wait()
    finally:
        await http.stop()
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="cdb's fault-injecting TCP proxy "
                                                 "(Toxiproxy API)")
    parser.add_argument("--api", default="127.0.0.1:8474", help="host:port of the HTTP API")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--token-file", help=f"file holding the API token (else ${TOKEN_ENV})")
    parser.add_argument("--public", action="store_true",
                        help="let proxies listen on every interface, not only loopback")
    parser.add_argument("--allow-upstream", action="append", metavar="HOST[:PORT]",
                        help="a host proxies may forward to (repeat; default: any)")
    args = parser.parse_args()
    token = os.environ.get(TOKEN_ENV) or None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip() or None
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.api, args.seed, token=token, public=args.public,
                              upstreams=set(args.allow_upstream) if args.allow_upstream
                              else None))
    except ProxyError as exc:
        parser.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    main()
