"""The proxy on its own: ``python -m cdb.chaos.proxy --api 127.0.0.1:8474``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from typing import Final

from cdb.chaos.proxy.server import ProxyServer
from cdb.chaos.proxy.toxics import ProxyError, hostport
from cdb.urls import is_loopback

TOKEN_ENV: Final = "CDB_PROXY_TOKEN"  # noqa: S105 - the variable's name, not a token


async def serve(api: str, seed: int = 0, *, token: str | None = None, public: bool = False,
                upstreams: set[str] | None = None) -> None:
    """Run the proxy API on ``api`` (host:port) until cancelled."""
    from cdb.runtime.http import HttpServer

    host, port = hostport(api)
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
    parser = argparse.ArgumentParser(
        prog="python -m cdb.chaos.proxy",
        description="cdb's fault-injecting TCP proxy (Toxiproxy API)")
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
