"""The shipped NGINX gateway in front of a real ``cdb console`` process.

Two consoles behind one gateway config each: an embedded one on the database of a
finished ``cdb run`` (pages, assets and the run report under ``/console/``, seen by a
headless Chromium too), and a distributed one on the session's Redis and PostgreSQL
(sign-in and the CSRF-checked change through the gateway; with no pipeline in the
namespace, risk cannot be asked and the page says so). The stand-ins of
``test_promtool.py`` check the routing; these check that the console works behind it.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.browser import Browser, artifact_dir
from tests.integration.deploy.test_promtool import UPSTREAMS, nginx_args, render_gateway

from cdb.testing.ports import free_port
from cdb.testing.postgres import PostgresServer
from cdb.testing.redis import RedisServer
from cdb.testing.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
TOKEN = "gateway-console-token-0123456789"


def start_console(args: list[str], workdir: Path, env: dict[str, str]) -> tuple[
        subprocess.Popen[bytes], int]:
    port = free_port()
    log = (workdir / f"console-{port}.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "cdb", "console", *args, "--port", str(port),
         "--reports", str(workdir / "reports")],
        env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    log.close()

    def up() -> bool:
        assert process.poll() is None, (workdir / f"console-{port}.log").read_text()[-2000:]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    eventually(up, 30, "console answering")
    return process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_gateway(prefix: Path, console_port: int) -> tuple[subprocess.Popen[bytes], str]:
    """nginx with the shipped config; the console upstream is ``console_port``."""
    port = free_port()
    upstreams = {name: f"127.0.0.1:{free_port()}" for name in UPSTREAMS}
    upstreams["cdb_console_api"] = f"127.0.0.1:{console_port}"
    config = render_gateway(prefix, f"127.0.0.1:{port}", upstreams)
    process = subprocess.Popen(
        [*nginx_args(prefix, config), "-g", "daemon off; master_process off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> bool:
        assert process.poll() is None, "nginx exited"
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    eventually(listening, 10, "gateway listening")
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def embedded_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(gateway URL, run id): the console of a finished ``cdb run`` behind nginx."""
    work = tmp_path_factory.mktemp("console-gateway")
    db = work / "run.db"
    done = subprocess.run(
        [sys.executable, "-m", "cdb", "run", "--duration", "1h", "--db", str(db), "--quiet",
         "--json"], cwd=work, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    run_id = re.search(r'"run_id":\s*"([^"]+)"', done.stdout)
    assert run_id is not None, done.stdout[-500:]
    console, console_port = start_console(["--db", str(db)], work,
                                          {"PATH": "/usr/bin:/bin", "HOME": str(work)})
    nginx, url = start_gateway(work / "nginx", console_port)
    try:
        yield url, run_id[1]
    finally:
        stop(nginx)
        stop(console)


def test_the_console_behind_the_gateway_links_and_serves_under_its_prefix(
        embedded_gateway: tuple[str, str]) -> None:
    url, run_id = embedded_gateway
    with httpx.Client(base_url=url, timeout=10) as web:
        assert web.get("/console").headers["location"].endswith("/console/")
        page = web.get("/console/")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        links = set(re.findall(r'(?:href|src)="([^"#]+)"', page.text)) - {"data:,"}
        assert links
        assert all(link.startswith("/console/") for link in links), links
        for link in links:
            assert web.get(link).status_code == 200, link
        runs = web.get("/console/runs")
        assert run_id in runs.text
        assert f'href="/console/runs/{run_id}/report"' in runs.text
        report = web.get(f"/console/runs/{run_id}/report")
        assert report.status_code == 200
        assert report.headers["content-security-policy"] == "sandbox allow-scripts"
        curve = web.get("/console/data/equity").json()
        assert curve["equity"]
        assert run_id in curve["source"]


def test_a_browser_through_the_gateway_draws_the_book(embedded_gateway: tuple[str, str]
                                                      ) -> None:
    """Scripts and styles load through the prefix (no CSP refusal, no 404)."""
    url, _ = embedded_gateway
    browser = Browser(artifact_dir("console-gateway"))
    try:
        browser.open(url + "/console/book")
        browser.wait_for(lambda: len(browser.js(
            "return document.querySelectorAll('#equity canvas')")) == 2, 15)
        browser.open(url + "/console/")
        browser.wait_for(lambda: browser.js("return typeof htmx") == "object", 10)
        browser.screenshot("overview-via-gateway")
        assert browser.console_errors() == []
    finally:
        browser.close()


def test_sign_in_and_a_refused_change_through_the_gateway(
        tmp_path: Path, redis_server: RedisServer, postgres_server: PostgresServer) -> None:
    """Cookie, CSRF and the reason of a refusal all survive the proxy; the token is
    never sent back."""
    namespace = f"gw{uuid.uuid4().hex[:8]}"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CDB_API_TOKEN": TOKEN,
           "SERVICE_INSTANCE_NAME": namespace}
    console, console_port = start_console(
        ["--redis", redis_server.url, "--postgres", postgres_server.url], tmp_path, env)
    nginx, url = start_gateway(tmp_path / "nginx", console_port)
    try:
        with httpx.Client(base_url=url, timeout=10) as web:
            signin = web.get("/console/signin")
            csrf = re.search(r'name="csrf" value="([^"]+)"', signin.text)
            assert csrf is not None
            assert 'action="/console/signin"' in signin.text
            forged = web.post("/console/ess/trip", data={"actor": "m", "reason": "x"})
            assert forged.status_code == 403
            assert "CSRF" in forged.text
            signed = web.post("/console/signin", data={"csrf": csrf[1], "token": TOKEN})
            assert signed.status_code == 303
            assert signed.headers["location"] == "/console/ess"
            assert "httponly" in signed.headers["set-cookie"].lower()
            page = web.get("/console/ess")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            assert 'id="trip-button"' in page.text
            refused = web.post("/console/ess/trip",
                               data={"csrf": csrf[1], "actor": "alice", "reason": "drill"})
            assert refused.status_code == 409
            assert "no live risk instance" in refused.text
            assert TOKEN not in signin.text + page.text + refused.text
    finally:
        stop(nginx)
        stop(console)
