"""Observability of the distributed pipeline, checked with the real tools.

One `cdb up` pipeline serves the whole module (tests run in file order; the ones that
break things come last): promtool checks every service's /metrics (with the process and
runtime collectors and the version), a real Prometheus scrapes them with the shipped
scrape config, a real nginx with the shipped gateway config reaches every /health and
hands its request id to the services' logs, a real gRPC client asks the health
service, `cdb status` lists the instances from discovery; then Redis is stopped and
started (each service answers as its critical dependencies say), a service is killed,
and the logs of all of it are checked for identity and secrets.

Needs redis-server, PostgreSQL, promtool, prometheus and nginx
(`apt-get install -y redis-server postgresql prometheus nginx`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from cdb import __version__
from cdb.bus.keys import Namespace
from cdb.cli_status import InstanceStatus, collect
from cdb.config import SERVICE_PORTS
from cdb.testing.cluster import REDIS_PASSWORD, LocalPipeline
from cdb.testing.ports import free_port
from cdb.testing.waiting import eventually
from tests.e2e.conftest import cdb
from tests.integration.deploy.test_promtool import nginx_args, render_gateway, require_tool

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
SERVICES = tuple(SERVICE_PORTS)
SECRETS = {
    "CDB_API_TOKEN": "e2e-api-token-5f1c9a",
    "BINANCE_API_KEY": "e2e-binance-key-77aa31",
    "BINANCE_API_SECRET": "e2e-binance-secret-0b9e42",
}
ENV = {
    # A live-paced synthetic market, fast enough for a threshold move within seconds.
    "WS_SPEED": "30", "WS_DURATION_S": "86400", "SIGNAL_THRESHOLD_PCT": "0.1",
    "SIGNAL_MIN_VOLUME": "0",
    # Observe quickly: health and streams every second, a heartbeat gone after 2 s.
    "CDB_MONITOR_INTERVAL_S": "1", "CDB_DISCOVERY_TTL_S": "2",
    # Come back quickly after the Redis outage.
    "CDB_BREAKER_OPEN_S": "1", "CDB_BACKOFF_BASE_S": "0.2", "CDB_BACKOFF_CAP_S": "1",
    **SECRETS,
}


@pytest.fixture(scope="module")
def grpc_ports() -> dict[str, int]:
    return {name: free_port() for name in SERVICES}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory,
         grpc_ports: dict[str, int]) -> Iterator[LocalPipeline]:
    env = {**ENV, **{f"CDB_GRPC_PORT_{n.upper()}": str(p) for n, p in grpc_ports.items()}}
    with LocalPipeline(tmp_path_factory.mktemp("obs"), env=env) as pipeline:
        pipeline.start()
        yield pipeline


def metrics_of(pipe: LocalPipeline, service: str) -> str:
    return pipe.http.get(pipe.url(service, "/metrics")).text


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def sample(text: str, name: str, **labels: str) -> float | None:
    wanted = set(labels.items())
    for (found, found_labels), value in samples(text).items():
        if found == name and wanted <= found_labels:
            return value
    return None


def status_rows(pipe: LocalPipeline) -> dict[str, InstanceStatus]:
    async def read() -> list[InstanceStatus]:
        client = pipe.redis.client()
        try:
            return await collect(client, Namespace(pipe.namespace), timeout=1.0)
        finally:
            await client.aclose()

    return {row.service: row for row in asyncio.run(read())}


def grpc_status(port: int, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        status: int = response.status
        return status


# ------------------------------------------------------------------------------ metrics


def test_every_service_exports_lint_clean_metrics_with_service_and_instance(
    pipe: LocalPipeline,
) -> None:
    promtool = require_tool("promtool")
    for name in SERVICES:
        text = metrics_of(pipe, name)
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                               text=True, timeout=30, check=False)
        assert check.returncode == 0, f"{name}: {check.stdout}{check.stderr}"
        for (metric, labels), _ in samples(text).items():
            keys = dict(labels)
            assert keys.get("service") == name, (name, metric, keys)
            assert keys.get("instance"), (name, metric)
        assert sample(text, "cdb_health_status") == 0, name
        for runtime in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                        "process_open_fds", "python_gc_collections_total", "python_info"):
            assert sample(text, runtime) is not None, (name, runtime)
        assert sample(text, "cdb_build_info", version=__version__) == 1, name
        eventually(lambda n=name: sample(metrics_of(pipe, n), "cdb_redis_up") == 1,  # type: ignore[misc]
                   10, f"{name} cdb_redis_up")
    ws, risk = metrics_of(pipe, "ws"), metrics_of(pipe, "risk")
    assert sample(ws, "cdb_stream_length", stream="stream.market_data") is not None
    signal = metrics_of(pipe, "signal")
    assert sample(signal, "cdb_consumer_lag", stream="stream.market_data",
                  group="signal") is not None
    # counters exist before their first increment, so rate() sees the first one
    for reason in ("rate_limit", "exposure_limit", "ess_halted"):
        assert sample(risk, "cdb_risk_rejections_total", reason=reason) is not None
    assert sample(metrics_of(pipe, "execution"), "cdb_fills_total") is not None


# --------------------------------------------------------------------------- prometheus


def prometheus_config(pipe: LocalPipeline, port: int, directory: Path) -> Path:
    """The shipped local scrape config pointed at this pipeline, scraping every second."""
    text = (PROMETHEUS / "prometheus.local.yml").read_text(encoding="utf-8")
    for name, contract_port in SERVICE_PORTS.items():
        target = f"127.0.0.1:{contract_port}"
        assert target in text, f"the shipped config does not scrape {name} at {target}"
        text = text.replace(target, f"127.0.0.1:{pipe.ports[name]}")
    text = text.replace("127.0.0.1:19090", f"127.0.0.1:{port}")
    config = yaml.safe_load(text)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["cdb_services"]["scrape_interval"] == "15s"
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    for job in jobs.values():
        job["scrape_interval"] = "1s"
        job.pop("scrape_timeout", None)
    shutil.copy(PROMETHEUS / "alerts.yml", directory / "alerts.yml")
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def prometheus(pipe: LocalPipeline, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping the pipeline; yields its base URL."""
    port = free_port()
    config = prometheus_config(pipe, port, tmp_path)
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [require_tool("prometheus"), f"--config.file={config}",
         f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={tmp_path / 'data'}",
         "--log.level=warn"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        eventually(ready, 30, "prometheus ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def query(url: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def values(url: str, promql: str) -> list[float]:
    return [float(r["value"][1]) for r in query(url, promql)]


HEALTHY_PIPELINE = {
    # the seed's handover: the healthy-pipeline value of each contract metric
    "decoded_messages_total": lambda v: v > 0,
    "redis_publish_total": lambda v: v > 0,
    "signals_generated_total": lambda v: v > 0,
    "signal_engine_status": lambda v: v == 1,
    "risk_pending_orders_total": lambda v: v >= 0,
    "risk_total_exposure_value": lambda v: v >= 0,
}


def test_prometheus_scrapes_every_contract_metric_with_healthy_values(
    pipe: LocalPipeline, prometheus: str
) -> None:
    def all_up() -> bool:
        up = query(prometheus, 'up{job=~"cdb_services|cdb_db_writer"}')
        return len(up) == 5 and all(r["value"][1] == "1" for r in up)

    eventually(all_up, 30, "all five targets up")
    for metric, healthy in HEALTHY_PIPELINE.items():
        def ok(m: str = metric, check: Any = healthy) -> bool:
            found = values(prometheus, m)
            return bool(found) and all(check(v) for v in found)

        eventually(ok, 90, f"{metric} healthy in Prometheus")
    # the labels are the services' own (honor_labels), not the scrape target's
    (ws,) = query(prometheus, "decoded_messages_total")
    assert ws["metric"]["service"] == "ws"
    assert ws["metric"]["job"] == "cdb_services"
    assert values(prometheus, "min(cdb_redis_up)") == [1.0]
    assert query(prometheus, 'cdb_consumer_lag{group="signal"}')
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    alerts = {r["name"] for g in rules for r in g["rules"]}
    assert {"SignalEngineDown", "NoSignalsGenerated", "WebSocketStalled", "EssTripped",
            "ConsumerLagHigh", "RedisUnreachable", "DbWriterFailing"} <= alerts


# -------------------------------------------------------------------------------- nginx


def test_the_shipped_nginx_gateway_reaches_every_service_health(
    pipe: LocalPipeline, tmp_path: Path
) -> None:
    port = free_port()
    upstreams = {f"cdb_{name}_api": f"127.0.0.1:{pipe.ports[name]}" for name in SERVICES}
    # The shipped config also routes /console/; no console runs here (its own test puts
    # a real one behind the gateway), but nginx needs every upstream it names to exist.
    upstreams["cdb_console_api"] = f"127.0.0.1:{free_port()}"
    config = render_gateway(tmp_path, f"127.0.0.1:{port}", upstreams)
    process = subprocess.Popen(
        [*nginx_args(tmp_path, config), "-g", "daemon off; master_process off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        def listening() -> bool:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        eventually(listening, 10, "nginx listening")
        for name in SERVICES:
            response = httpx.get(f"http://127.0.0.1:{port}/api/{name}/health", timeout=5)
            assert response.status_code == 200, name
            body = response.json()
            assert (body["service"], body["status"]) == (name, "healthy")
            assert response.headers["X-Request-ID"]
            ready = httpx.get(f"http://127.0.0.1:{port}/api/{name}/health/ready", timeout=5)
            assert ready.json()["ready"] is True
        # A change through the gateway (refused: no token) is logged by risk at INFO
        # under the gateway's request id, which comes back once.
        refused = httpx.post(f"http://127.0.0.1:{port}/api/risk/ess/trip",
                             headers={"X-Request-ID": "e2e-gw-7f3a"}, json={"reason": "x"},
                             timeout=5)
        assert refused.status_code == 401
        assert refused.headers.get_list("X-Request-ID") == ["e2e-gw-7f3a"]

        def logged() -> bool:
            text = (pipe.workdir / "logs" / "risk.log").read_text("utf-8", errors="replace")
            return any(json.loads(line).get("request_id") == "e2e-gw-7f3a"
                       for line in text.splitlines() if line.startswith("{"))

        eventually(logged, 10, "risk logged the gateway's request id")
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr:
            process.stderr.close()


# --------------------------------------------------------------------------------- gRPC


def test_every_service_serves_the_grpc_health_protocol(
    pipe: LocalPipeline, grpc_ports: dict[str, int]
) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    for name, port in grpc_ports.items():
        assert grpc_status(port) == serving, name
        assert grpc_status(port, name) == serving, name
        assert grpc_status(port, "ready") == serving, name


# ---------------------------------------------------------------------------- discovery


def test_cdb_status_lists_all_five_instances_live_and_healthy(
    pipe: LocalPipeline, grpc_ports: dict[str, int]
) -> None:
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{pipe.redis.port}/0"
    result = cdb("status", "--redis", url, "--namespace", pipe.namespace, "--json")
    assert result.returncode == 0, result.stderr + result.stdout
    rows = {row["service"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert set(rows) == set(SERVICES)
    for name, row in rows.items():
        assert (row["state"], row["health"]) == ("live", "healthy"), row
        assert row["address"] == f"http://127.0.0.1:{pipe.ports[name]}"
        assert row["grpc_address"] == f"127.0.0.1:{grpc_ports[name]}"
        assert row["last_seen_s"] < 5  # beats every TTL/3 (0.7 s)
    table = cdb("status", env={"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(pipe.redis.port),
                               "REDIS_PASSWORD": REDIS_PASSWORD,
                               "SERVICE_INSTANCE_NAME": pipe.namespace})
    assert table.returncode == 0, table.stderr
    for name in SERVICES:
        assert f"{name}-" in table.stdout
    assert REDIS_PASSWORD not in result.stdout + table.stdout + table.stderr


def test_cdb_status_without_redis_settings_says_what_to_set(tmp_path: Path) -> None:
    result = cdb("status", env={"REDIS_HOST": "", "CDB_SECRETS_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "REDIS_HOST" in result.stderr
    assert "Traceback" not in result.stderr


# -------------------------------------------------------------------- health in outages


def test_redis_down_makes_consumers_unhealthy_and_ws_degraded_then_all_recover(
    pipe: LocalPipeline, grpc_ports: dict[str, int]
) -> None:
    """Redis is critical to every consumer and not to ws, which buffers on disk. While it
    is down: ws says degraded (200, still ready, gRPC SERVING); the others unhealthy (503,
    not ready, gRPC NOT_SERVING), each with the Redis error; liveness stays 200 and
    cdb_redis_up is 0. Then all recover."""
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    pipe.redis.stop()
    try:
        def redis_down(name: str) -> bool:
            body = pipe.http.get(pipe.url(name, "/health")).json()
            redis = body["dependencies"]["redis"]
            return redis["status"] == "down" and bool(redis["last_error"])

        for name in SERVICES:
            eventually(lambda n=name: redis_down(n), 30, f"{name} sees Redis down")  # type: ignore[misc]
            response = pipe.http.get(pipe.url(name, "/health"))
            ready = pipe.http.get(pipe.url(name, "/health/ready"))
            expected = (200, "degraded") if name == "ws" else (503, "unhealthy")
            assert (response.status_code, response.json()["status"]) == expected, name
            assert ready.status_code == (200 if name == "ws" else 503), name
            assert pipe.http.get(pipe.url(name, "/health/live")).status_code == 200, name
            assert sample(metrics_of(pipe, name), "cdb_redis_up") == 0
            grpc_expected = serving if name == "ws" else not_serving
            assert grpc_status(grpc_ports[name]) == grpc_expected, name
            assert grpc_status(grpc_ports[name], "ready") == grpc_expected, name
        body = pipe.http.get(pipe.url("ws", "/health")).json()
        assert REDIS_PASSWORD not in json.dumps(body)
    finally:
        pipe.redis.start()  # empty, as after a crash without persistence

    def healthy(name: str) -> bool:
        response = pipe.http.get(pipe.url(name, "/health"))
        return response.status_code == 200 and response.json()["status"] == "healthy"

    for name in SERVICES:
        eventually(lambda n=name: healthy(n), 60, f"{name} healthy again")  # type: ignore[misc]
        assert pipe.http.get(pipe.url(name, "/health/ready")).status_code == 200, name
        assert grpc_status(grpc_ports[name]) == serving, name
        text = metrics_of(pipe, name)
        assert sample(text, "cdb_redis_up") == 1
        assert (sample(text, "cdb_dependency_reconnects_total", dependency="redis") or 0) >= 1
    # discovery registered everyone again in the empty Redis
    eventually(lambda: len(status_rows(pipe)) == 5, 10, "registered again")
    assert all(r.health == "healthy" for r in status_rows(pipe).values())


def test_a_killed_instance_is_gone_until_it_is_restarted(pipe: LocalPipeline) -> None:
    pid = pipe.kill("execution")
    seen: set[str] = set()

    def gone() -> bool:
        row = status_rows(pipe)["execution"]
        seen.add(row.note.split(" ")[0])
        return row.state == "gone"

    eventually(gone, 10, "execution shown as gone")
    others = status_rows(pipe)
    assert all(others[n].state == "live" for n in SERVICES if n != "execution")

    def back() -> bool:
        row = status_rows(pipe)["execution"]
        return row.state == "live" and row.health == "healthy"

    eventually(back, 60, "execution live again")
    assert int(pipe.details("execution")["pid"]) != pid


# --------------------------------------------------------------------------------- logs


def test_every_log_line_is_json_with_identity_and_no_secret(pipe: LocalPipeline) -> None:
    """After all of the above (start, outage, kill, restart), every line every service
    wrote is JSON with timestamp, level, service and instance, and no secret of the
    configuration appears in any log, /health or /metrics."""
    secrets = (REDIS_PASSWORD, *SECRETS.values())
    time.sleep(0.5)  # let the last lines reach the files
    logs = sorted((pipe.workdir / "logs").glob("*.log"))
    assert {p.stem for p in logs} == set(SERVICES)
    counted = 0
    for path in logs:
        text = path.read_text(encoding="utf-8", errors="replace")
        for secret in secrets:
            assert secret not in text, f"{secret} in {path.name}"
        for raw in text.splitlines():
            if not raw.strip():
                continue
            line = json.loads(raw)
            assert {"timestamp", "level", "service", "instance", "event"} <= line.keys(), raw
            assert line["service"] == path.stem, raw
            counted += 1
    assert counted > 20
    up_log = (pipe.workdir / "cdb-up.log").read_text(encoding="utf-8", errors="replace")
    for name in SERVICES:
        exposed = pipe.http.get(pipe.url(name, "/health")).text + metrics_of(pipe, name)
        for secret in secrets:
            assert secret not in exposed
            assert secret not in up_log
