"""Issue 14, row 9: the fault proxy's API is guarded and its connections are bounded.

Plus a hypothesis fuzz over its request bodies: any body gets an answer below 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdb.chaos.proxy.link import QUEUE_CHUNKS
from cdb.chaos.proxy.server import ProxyServer

pytestmark = pytest.mark.timeout(60)


def client(server: ProxyServer, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app),
                             base_url="http://proxy", headers=headers)


async def test_proxies_listen_on_loopback_unless_the_server_is_public() -> None:
    server = ProxyServer()
    try:
        async with client(server) as api:
            body = {"name": "p", "listen": "0.0.0.0:0", "upstream": "127.0.0.1:9"}
            refused = await api.post("/proxies", json=body)
            assert refused.status_code == 403
            assert "loopback" in refused.json()["error"]
            made = await api.post("/proxies", json={**body, "listen": "127.0.0.1:0"})
            assert made.status_code == 201
            moved = await api.post("/proxies/p", json={"listen": "0.0.0.0:0"})
            assert moved.status_code == 403
    finally:
        await server.close()
    public = ProxyServer(public=True)
    try:
        async with client(public) as api:
            made = await api.post("/proxies", json={"name": "p", "listen": "0.0.0.0:0",
                                                    "upstream": "127.0.0.1:9"})
            assert made.status_code == 201
    finally:
        await public.close()


async def test_a_configured_token_is_required_and_upstreams_can_be_limited() -> None:
    server = ProxyServer(token="t" * 20, upstreams={"127.0.0.1"})
    try:
        async with client(server) as anonymous:
            assert (await anonymous.get("/proxies")).status_code == 401
        async with client(server, "wrong-token") as wrong:
            assert (await wrong.get("/proxies")).status_code == 401
        async with client(server, "t" * 20) as api:
            assert (await api.get("/proxies")).status_code == 200
            elsewhere = await api.post("/proxies", json={"name": "p",
                                                         "upstream": "10.1.2.3:6379"})
            assert elsewhere.status_code == 403
            ok = await api.post("/proxies", json={"name": "p", "upstream": "127.0.0.1:6379"})
            assert ok.status_code == 201
    finally:
        await server.close()


async def test_non_finite_or_wrong_numbers_in_toxics_are_400() -> None:
    server = ProxyServer()
    try:
        async with client(server) as api:
            await api.post("/proxies", json={"name": "p", "upstream": "127.0.0.1:9"})
            for toxic in ({"type": "latency", "attributes": {"latency": "1e999"}},
                          {"type": "latency", "toxicity": {}},
                          {"type": "latency", "attributes": []}):
                answer = await api.post("/proxies/p/toxics", json=toxic)
                assert answer.status_code == 400, answer.text
            nan = await api.post("/proxies/p/toxics", content=b'{"type": "latency", '
                                 b'"attributes": {"latency": NaN}}')
            assert nan.status_code == 400
    finally:
        await server.close()


@pytest.fixture
async def sink() -> AsyncIterator[int]:
    """An upstream that accepts connections and never reads from them."""
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()


async def test_a_connection_that_is_not_read_is_backpressure_not_memory(sink: int) -> None:
    """600 MiB sent used to grow the proxy by 600 MB; now the sender is held back."""
    server = ProxyServer()
    proxy = await server.create("sink", "127.0.0.1:0", f"127.0.0.1:{sink}")
    try:
        host, _, port = proxy.listen.rpartition(":")
        _, writer = await asyncio.open_connection(host, int(port))
        chunk = b"x" * (1024 * 1024)
        sent = 0
        with contextlib.suppress(TimeoutError):
            while sent < 600 * len(chunk):
                writer.write(chunk)
                async with asyncio.timeout(1.0):
                    await writer.drain()
                sent += len(chunk)
        # Socket buffers on both sides hold some MiB; the proxy at most its queue.
        assert sent < 64 * len(chunk), f"{sent / 2**20:.0f} MiB accepted"
        assert sent > QUEUE_CHUNKS * 32 * 1024
        writer.transport.abort()
    finally:
        await server.close()


# -- fuzz ------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                  max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(["name", "listen", "upstream", "enabled", "type", "stream",
                         "toxicity", "attributes"])
_bodies = st.one_of(
    st.binary(max_size=200),
    _json.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(_keys, _json, max_size=6).map(lambda v: json.dumps(v).encode()),
)
_paths = st.sampled_from(["/proxies", "/populate", "/proxies/p", "/proxies/p/toxics",
                          "/proxies/p/toxics/latency_downstream", "/reset"])


@settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(path=_paths, method=st.sampled_from(["POST", "PATCH", "GET", "DELETE"]), body=_bodies)
def test_any_body_gets_an_answer_below_500(path: str, method: str, body: bytes) -> None:
    async def go() -> Any:
        server = ProxyServer()
        try:
            await server.create("p", "127.0.0.1:0", "127.0.0.1:9")
            server.proxies["p"].add_toxic({"type": "latency"})
            async with client(server) as api:
                return await api.request(method, path, content=body)
        finally:
            await server.close()

    answer = asyncio.run(go())
    assert answer.status_code < 500, answer.text
