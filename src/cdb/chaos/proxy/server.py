"""The proxies by name, and the Toxiproxy-compatible HTTP API that drives them."""

from __future__ import annotations

import hmac
import json
import random
from typing import Any, Final

from fastapi import FastAPI, Request, Response

from cdb import __version__
from cdb.chaos.proxy.listener import Proxy
from cdb.chaos.proxy.toxics import ProxyError, hostport
from cdb.urls import is_loopback

MAX_BODY: Final = 1024 * 1024


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
        host, _ = hostport(listen)
        if not self.public and not is_loopback(host):
            raise ProxyError(403, f"listen {listen[:100]!r}: proxies listen on loopback "
                                  "(127.0.0.1) unless the proxy server is started public")

    def _check_upstream(self, upstream: str) -> None:
        host, _ = hostport(upstream)
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
        if not length.isdigit() or int(length) > MAX_BODY:
            return self._json({"error": f"body over {MAX_BODY} bytes", "status": 413}, 413)
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
            if len(raw) > MAX_BODY:
                raise ProxyError(413, f"body over {MAX_BODY} bytes")
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
