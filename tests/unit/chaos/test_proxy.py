"""The fault proxy: each Toxiproxy toxic against a local echo server, and the API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from cdb.chaos.proxy.listener import Proxy
from cdb.chaos.proxy.server import ProxyServer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.fixture
async def proxies(echo: int) -> AsyncIterator[tuple[ProxyServer, Proxy]]:
    server = ProxyServer(seed=1)
    proxy = await server.create("echo", "127.0.0.1:0", f"127.0.0.1:{echo}")
    yield server, proxy
    await server.close()


async def connect(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = proxy.listen.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def roundtrip(proxy: Proxy, payload: bytes = b"ping") -> tuple[bytes, float]:
    reader, writer = await connect(proxy)
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    got = b""
    while len(got) < len(payload):
        chunk = await reader.read(65536)
        if not chunk:
            break
        got += chunk
    elapsed = time.monotonic() - started
    writer.close()
    return got, elapsed


async def test_passes_bytes_through(proxies: tuple[ProxyServer, Proxy]) -> None:
    _, proxy = proxies
    got, elapsed = await roundtrip(proxy, b"x" * 100_000)
    assert got == b"x" * 100_000
    assert elapsed < 1


async def test_latency_and_jitter(proxies: tuple[ProxyServer, Proxy]) -> None:
    _, proxy = proxies
    toxic = proxy.add_toxic({"type": "latency", "attributes": {"latency": 150, "jitter": 20}})
    got, elapsed = await roundtrip(proxy)
    assert got == b"ping"
    assert 0.125 <= elapsed < 0.5
    assert toxic.chunks >= 1
    assert toxic.connections == 1


async def test_latency_upstream_adds_to_downstream(proxies: tuple[ProxyServer, Proxy]) -> None:
    _, proxy = proxies
    proxy.add_toxic({"type": "latency", "stream": "upstream", "attributes": {"latency": 100}})
    proxy.add_toxic({"type": "latency", "stream": "downstream", "attributes": {"latency": 100}})
    _, elapsed = await roundtrip(proxy)
    assert elapsed >= 0.19


async def test_bandwidth_limits_the_rate(proxies: tuple[ProxyServer, Proxy]) -> None:
    _, proxy = proxies
    proxy.add_toxic({"type": "bandwidth", "attributes": {"rate": 20}})  # 20 KB/s
    got, elapsed = await roundtrip(proxy, b"y" * 8_000)
    assert len(got) == 8_000
    assert elapsed >= 0.35


async def test_timeout_holds_data_and_closes(proxies: tuple[ProxyServer, Proxy]) -> None:
    _, proxy = proxies
    proxy.add_toxic({"type": "timeout", "attributes": {"timeout": 200}})
    reader, writer = await connect(proxy)
    started = time.monotonic()
    writer.write(b"ping")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(100), 2)
    assert data == b""  # nothing came back, the connection was closed
    assert 0.15 <= time.monotonic() - started < 1.5
    writer.close()


async def test_timeout_zero_holds_until_removed(proxies: tuple[ProxyServer, Proxy]) -> None:
    _, proxy = proxies
    proxy.add_toxic({"name": "hold", "type": "timeout", "attributes": {"timeout": 0}})
    reader, writer = await connect(proxy)
    writer.write(b"ping")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(100), 0.2)
    proxy.remove_toxic("hold")
    assert await asyncio.wait_for(reader.read(100), 1) == b"ping"
    writer.close()


async def test_reset_peer_resets_the_connection(proxies: tuple[ProxyServer, Proxy]) -> None:
    _, proxy = proxies
    proxy.add_toxic({"type": "reset_peer", "attributes": {"timeout": 100}})
    reader, writer = await connect(proxy)
    started = time.monotonic()
    async def read_all() -> None:
        while await asyncio.wait_for(reader.read(100), 2):
            pass
        raise AssertionError("closed without a reset")

    with pytest.raises(ConnectionResetError):
        await read_all()
    assert time.monotonic() - started >= 0.08
    writer.close()


async def test_limit_data_closes_after_the_bytes(proxies: tuple[ProxyServer, Proxy]) -> None:
    _, proxy = proxies
    proxy.add_toxic({"type": "limit_data", "attributes": {"bytes": 1000}})
    reader, writer = await connect(proxy)
    writer.write(b"z" * 5000)
    await writer.drain()
    got = b""
    while chunk := await asyncio.wait_for(reader.read(65536), 2):
        got += chunk
    assert len(got) == 1000
    writer.close()


async def test_slow_close_delays_the_close(proxies: tuple[ProxyServer, Proxy]) -> None:
    _, proxy = proxies
    proxy.add_toxic({"type": "slow_close", "attributes": {"delay": 300}})
    reader, writer = await connect(proxy)
    writer.write(b"bye")
    await writer.drain()
    assert await reader.read(3) == b"bye"
    writer.write_eof()  # the echo server closes, the proxy holds the close
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(10), 2) == b""
    assert time.monotonic() - started >= 0.25
    writer.close()


async def test_toxicity_zero_spares_every_connection(proxies: tuple[ProxyServer, Proxy]) -> None:
    _, proxy = proxies
    toxic = proxy.add_toxic({"type": "latency", "toxicity": 0.0,
                             "attributes": {"latency": 500}})
    _, elapsed = await roundtrip(proxy)
    assert elapsed < 0.3
    assert toxic.connections == 0


async def test_down_closes_connections_and_the_port(proxies: tuple[ProxyServer, Proxy]) -> None:
    server, proxy = proxies
    reader, writer = await connect(proxy)
    await server.update("echo", {"enabled": False})
    assert await asyncio.wait_for(reader.read(10), 2) == b""
    with pytest.raises(ConnectionRefusedError):
        await connect(proxy)
    await server.update("echo", {"enabled": True})
    got, _ = await roundtrip(proxy)
    assert got == b"ping"
    writer.close()


async def test_toxiproxy_http_api(echo: int) -> None:
    server = ProxyServer()
    transport = httpx.ASGITransport(app=server.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as api:
            r = await api.post("/proxies", json={"name": "redis", "listen": "127.0.0.1:0",
                                                 "upstream": f"127.0.0.1:{echo}"})
            assert r.status_code == 201
            assert r.json()["enabled"] is True
            assert (await api.post("/proxies", json={"name": "redis",
                                                     "upstream": "x:1"})).status_code == 409
            r = await api.post("/proxies/redis/toxics", json={
                "name": "slow", "type": "latency", "stream": "upstream",
                "attributes": {"latency": 10}})
            assert r.status_code == 200
            assert r.json()["attributes"] == {"latency": 10, "jitter": 0}
            bad = await api.post("/proxies/redis/toxics", json={"type": "latency",
                                                                "attributes": {"rate": 1}})
            assert bad.status_code == 400
            assert "latency has no attribute rate" in bad.json()["error"]
            r = await api.post("/proxies/redis/toxics/slow", json={"attributes": {"latency": 20}})
            assert r.json()["attributes"]["latency"] == 20
            listing = (await api.get("/proxies")).json()
            assert listing["redis"]["toxics"][0]["name"] == "slow"
            assert (await api.delete("/proxies/redis/toxics/slow")).status_code == 204
            assert (await api.get("/proxies/redis/toxics/slow")).status_code == 404
            r = await api.post("/proxies/redis", json={"enabled": False})
            assert r.json()["enabled"] is False
            assert (await api.post("/reset")).status_code == 204
            assert (await api.get("/proxies/redis")).json()["enabled"] is True
            assert (await api.get("/version")).text.startswith("cdb-proxy")
            assert (await api.delete("/proxies/redis")).status_code == 204
            assert (await api.get("/proxies/redis")).status_code == 404
    finally:
        await server.close()
