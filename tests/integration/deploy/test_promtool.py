"""The shipped Prometheus and NGINX configs pass their own tools, and the gateway routes.

Needs `promtool` and `nginx` on PATH (Debian: `apt-get install -y prometheus nginx`);
without them these tests fail with that message rather than skip. Nothing global is
touched: nginx runs with its own prefix, pid and logs in a temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdb.testing.ports import free_port
from cdb.testing.waiting import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
PROMETHEUS = REPO / "deploy" / "prometheus"
NGINX = REPO / "deploy" / "nginx"
INSTALL_HINT = "apt-get install -y prometheus nginx"
UPSTREAMS = {
    "cdb_ws_api": "ws",
    "cdb_signal_api": "signal",
    "cdb_risk_api": "risk",
    "cdb_execution_api": "execution",
    "cdb_db_writer_api": "db_writer",
    "cdb_console_api": "console",
}


def require_tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"`{name}` is not installed: run `{INSTALL_HINT}`", pytrace=False)
    return path


def run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


# -------------------------------------------------------------------------- prometheus


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.local.yml"])
def test_promtool_accepts_the_scrape_config(config: str) -> None:
    # rule_files is relative to the config file: alerts.yml beside it is checked too.
    out = run([require_tool("promtool"), "check", "config", str(PROMETHEUS / config)])
    assert "SUCCESS" in out.stdout


def test_promtool_accepts_the_alert_rules() -> None:
    run([require_tool("promtool"), "check", "rules", str(PROMETHEUS / "alerts.yml")])


def test_alert_unit_tests_pass() -> None:
    run([require_tool("promtool"), "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS)


def test_alert_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests have teeth: with SignalEngineDown's `for` doubled, they fail."""
    promtool = require_tool("promtool")
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "SignalEngineDown":
                rule["for"] = "2m"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path)
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SignalEngineDown" in result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every Grafana query parses, checked as a recording rule by promtool."""
    dashboard = json.loads(
        (REPO / "deploy" / "grafana" / "dashboards" / "cdb-pipeline.json").read_text("utf-8")
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    grafana_vars = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
    rules = []
    for i, expr in enumerate(exprs):
        for var, value in grafana_vars.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"cdb:dashboard_query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), "utf-8")
    run([require_tool("promtool"), "check", "rules", str(path)])


# ------------------------------------------------------------------------------- nginx


def render_gateway(prefix: Path, listen: str, upstreams: dict[str, str] | None = None) -> Path:
    """A self-contained gateway config under ``prefix``: the shipped cdb.conf, served on
    ``listen``, with upstreams.conf either shipped or rewritten to ``upstreams``
    (upstream name -> host:port). Returns the main config to pass to ``nginx -c``."""
    for sub in ("logs", "temp", "conf"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = (NGINX / "cdb.conf").read_text(encoding="utf-8")
    assert "listen 127.0.0.1:8080;" in conf
    (prefix / "conf" / "cdb.conf").write_text(
        conf.replace("listen 127.0.0.1:8080;", f"listen {listen};"), encoding="utf-8"
    )
    if upstreams is None:
        shutil.copy(NGINX / "upstreams.conf", prefix / "conf" / "upstreams.conf")
    else:
        blocks = [f"upstream {name} {{ server {addr}; }}" for name, addr in upstreams.items()]
        (prefix / "conf" / "upstreams.conf").write_text("\n".join(blocks) + "\n", "utf-8")
    main = prefix / "conf" / "nginx.conf"
    main.write_text(
        f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {prefix}/temp/client_body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    include upstreams.conf;
    include cdb.conf;
    access_log {prefix}/logs/access.log cdb_gateway;
}}
""",
        encoding="utf-8",
    )
    return main


def nginx_args(prefix: Path, config: Path) -> list[str]:
    # -e: do not open the compile-time error log (/var/log/nginx) before reading config.
    return [require_tool("nginx"), "-e", "stderr", "-p", str(prefix), "-c", str(config)]


def test_nginx_accepts_the_standalone_gateway_config(tmp_path: Path) -> None:
    for sub in ("logs", "tmp"):
        (tmp_path / sub).mkdir()
    out = run([*nginx_args(tmp_path, NGINX / "nginx.conf"), "-t"])
    assert "test is successful" in out.stderr


def test_nginx_accepts_the_gateway_with_templated_upstreams(tmp_path: Path) -> None:
    upstreams = {name: f"127.0.0.1:{20000 + i}" for i, name in enumerate(UPSTREAMS)}
    config = render_gateway(tmp_path, f"127.0.0.1:{free_port()}", upstreams)
    out = run([*nginx_args(tmp_path, config), "-t"])
    assert "test is successful" in out.stderr


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers with the service name, the path it received and the request headers; like
    a cdb service, it echoes the request id it was given."""

    service = "?"

    def do_GET(self) -> None:
        body = json.dumps(
            {"service": self.service, "path": self.path, "headers": dict(self.headers)}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.headers.get("X-Request-ID"):
            self.send_header("X-Request-ID", self.headers["X-Request-ID"])
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echo_services() -> Iterator[dict[str, str]]:
    """One echo server per upstream; yields upstream name -> address."""
    servers = []
    for upstream, service in UPSTREAMS.items():
        handler = type(f"Echo_{service}", (_EchoHandler,), {"service": service})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"echo-{service}"
        )
        thread.start()
        servers.append((upstream, server, thread))
    try:
        yield {up: f"127.0.0.1:{srv.server_address[1]}" for up, srv, _ in servers}
    finally:
        for _, server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, echo_services: dict[str, str]
) -> Iterator[str]:
    """nginx with the shipped cdb.conf in front of the echo services; yields its base URL."""
    prefix = tmp_path_factory.mktemp("gateway")
    port = free_port()
    config = render_gateway(prefix, f"127.0.0.1:{port}", echo_services)
    process = subprocess.Popen(
        [*nginx_args(prefix, config), "-g", "daemon off; master_process off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def listening() -> bool:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        eventually(listening)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - local http URL
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - local http URL
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.loads(error.read())


@pytest.mark.parametrize(
    ("path", "service", "received"),
    [
        ("/api/ws/health", "ws", "/health"),
        ("/api/signal/health/ready", "signal", "/health/ready"),
        ("/api/risk/health", "risk", "/health"),
        ("/api/execution/metrics", "execution", "/metrics"),
        ("/api/db_writer/health/live?verbose=1", "db_writer", "/health/live?verbose=1"),
    ],
)
def test_gateway_routes_prefix_to_service_and_strips_it(
    gateway: str, path: str, service: str, received: str
) -> None:
    status, headers, body = get(gateway + path, {"X-Request-ID": "req-42"})
    assert status == 200
    assert body["service"] == service
    assert body["path"] == received
    sent = {k.lower(): v for k, v in body["headers"].items()}
    assert sent["x-forwarded-prefix"] == "/api/" + service
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert sent["x-real-ip"] == "127.0.0.1"
    assert sent["x-request-id"] == "req-42"
    assert headers["X-Request-ID"] == "req-42"


def test_gateway_routes_the_console_with_its_prefix(gateway: str) -> None:
    status, _, body = get(gateway + "/console/book")
    assert status == 200
    assert body["service"] == "console"
    assert body["path"] == "/book"
    sent = {k.lower(): v for k, v in body["headers"].items()}
    assert sent["x-forwarded-prefix"] == "/console"


def test_gateway_makes_up_a_request_id_when_none_is_sent(gateway: str) -> None:
    _, headers, body = get(gateway + "/api/risk/health")
    sent = {k.lower(): v for k, v in body["headers"].items()}
    assert len(sent["x-request-id"]) == 32
    assert headers["X-Request-ID"] == sent["x-request-id"]


def test_gateway_answers_its_own_health_and_404_elsewhere(gateway: str) -> None:
    assert get(gateway + "/health")[0:3:2] == (200, {"service": "gateway", "status": "healthy"})
    status, _, body = get(gateway + "/api/unknown/health")
    assert status == 404
    assert "/api/risk/" in body["routes"]


def test_the_client_gets_one_request_id_though_the_service_echoes_it_too(gateway: str) -> None:
    request = urllib.request.Request(gateway + "/api/signal/health",  # noqa: S310 - local
                                     headers={"X-Request-ID": "req-once"})
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - local
        assert response.headers.get_all("X-Request-ID") == ["req-once"]


# ------------------------------------------------------------------ the coordinator job


async def test_prometheus_scrapes_the_coordinator_with_the_shipped_job(tmp_path: Path) -> None:
    """The shipped local config's cdb_coordinator job, pointed at a coordinator's API
    (as `cdb scenario run --http-port` serves it), gets its metrics with its labels."""
    from cdb.chaos.run.observe import CoordinatorApi

    api = CoordinatorApi("ns-prom", lambda: {"phase": "running"}, "127.0.0.1", free_port())
    await api.start()
    api.update({"t": 12.5, "active": {"redis down": 1}})
    port = free_port()
    text = (PROMETHEUS / "prometheus.local.yml").read_text(encoding="utf-8")
    assert "127.0.0.1:8090" in text
    text = text.replace("127.0.0.1:8090", api.url.removeprefix("http://"))
    config = yaml.safe_load(text)
    config["global"].update(scrape_interval="1s", scrape_timeout="1s")
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "cdb_coordinator"]
    for job in jobs:
        job["scrape_interval"] = "1s"
    config["scrape_configs"] = jobs
    config.pop("rule_files", None)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    process = await asyncio.to_thread(start_prometheus, tmp_path, port)

    def query(promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                result: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
                return result
        except (urllib.error.URLError, OSError):
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
            return []

    def scraped() -> bool:
        return bool(query('cdb_chaos_scenario_seconds{job="cdb_coordinator"}'))

    # The coordinator answers from this event loop: wait and ask in threads.
    try:
        await asyncio.to_thread(eventually, scraped, 30, "the coordinator scraped")
        # (other runs in this test process share the registry: pick this one's)
        (sample,) = await asyncio.to_thread(
            query, 'cdb_chaos_scenario_seconds{instance="ns-prom"}')
        assert sample["metric"]["service"] == "coordinator"
        assert sample["metric"]["job"] == "cdb_coordinator"  # its own instance label kept
        assert float(sample["value"][1]) == 12.5
        # the runtime collectors and the version are scraped with it
        assert await asyncio.to_thread(query, 'process_cpu_seconds_total{job="cdb_coordinator"}')
        assert await asyncio.to_thread(query, 'cdb_build_info{service="coordinator"}')
    finally:
        await asyncio.to_thread(stop_process, process)
        await api.stop()


def start_prometheus(directory: Path, port: int) -> subprocess.Popen[bytes]:
    """Prometheus with ``directory/prometheus.yml``, logging to ``prometheus.log``."""
    with (directory / "prometheus.log").open("wb") as log:
        return subprocess.Popen(
            [require_tool("prometheus"), f"--config.file={directory / 'prometheus.yml'}",
             f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.tsdb.path={directory / 'data'}", "--log.level=warn"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
