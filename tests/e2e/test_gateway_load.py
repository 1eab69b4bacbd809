"""Gateway load: 1,000 concurrent requests through the shipped NGINX gateway (its
nginx.conf, cdb.conf and upstreams.conf, with the run's ports) to every service's
``/health`` while a distributed pipeline trades; the error rate and p99 are reported
(benchmarks/README.md)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from cdb.chaos.run.runner import Options, Runner
from cdb.chaos.scenario.validate import validate_text
from cdb.chaos.soak.load import load
from cdb.testing.ports import free_port
from tests.integration.deploy.test_promtool import NGINX, nginx_args

pytestmark = pytest.mark.timeout(300)

SERVICES = ("ws", "signal", "risk", "execution", "db_writer")
SCENARIO = {
    "version": "1", "title": "The pipeline trades while the gateway is loaded", "seed": 41,
    "settle": "2s",
    "pipeline": {"mode": "distributed", "modes": ["distributed"],
                 "market": {"symbols": ["BTCUSDT"], "warmup": "2s"},
                 "limits": {"max_position": 1000000, "max_exposure": 1000000,
                            "max_open_orders": 1000, "max_orders_per_window": 1000}},
    "timeline": [{"name": "signals", "at": "0s",
                  "fault": {"type": "signal_flood", "count": 40, "over": "20s",
                            "symbol": "BTCUSDT", "side": "alternate"}}],
    "invariants": ["no_lost_events", "no_duplicates"],
}


def shipped_gateway(prefix: Path, ports: dict[str, int]) -> tuple[Path, int]:
    """The shipped gateway files under ``prefix``: listen on a free port, upstreams at
    the run's service ports (everything else as shipped: worker_connections, keep-alive)."""
    conf = prefix / "conf"
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf.mkdir(parents=True, exist_ok=True)
    for name in ("nginx.conf", "cdb.conf", "upstreams.conf"):
        shutil.copy(NGINX / name, conf / name)
    port = free_port()
    main = (conf / "cdb.conf").read_text()
    (conf / "cdb.conf").write_text(main.replace("listen 127.0.0.1:8080;",
                                                f"listen 127.0.0.1:{port};"))
    upstreams = (conf / "upstreams.conf").read_text()
    for service, service_port in ports.items():
        upstreams = re.sub(rf"(upstream cdb_{service}_api \{{\s*server )127\.0\.0\.1:\d+;",
                           rf"\g<1>127.0.0.1:{service_port};", upstreams)
    (conf / "upstreams.conf").write_text(upstreams)
    return conf / "nginx.conf", port


def start_nginx(prefix: Path, config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*nginx_args(prefix, config), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_a_thousand_concurrent_health_requests_through_the_gateway(tmp_path: Path) -> None:
    checked = validate_text(yaml.safe_dump(SCENARIO), str(tmp_path / "load.yaml"))
    assert checked.scenario is not None, checked.problems
    runner = Runner(checked.scenario, Options(report_dir=tmp_path / "run"))
    run = asyncio.create_task(runner.run(), name="pipeline")
    for _ in range(1200):
        if runner.phase in ("timeline", "undo") or run.done():
            break
        await asyncio.sleep(0.1)
    assert runner.phase == "timeline", runner.phase
    assert runner.target is not None
    config, port = shipped_gateway(tmp_path / "nginx", dict(runner.target.ports))  # type: ignore[attr-defined]
    nginx = start_nginx(tmp_path / "nginx", config)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.1)
        urls = [f"http://127.0.0.1:{port}/api/{s}/health" for s in SERVICES]
        result = await load(urls, requests=1000, concurrency=1000)
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
    outcome = await run
    print(f"\ngateway load: {result.line()}; answers {result.statuses}")
    (tmp_path / "load.json").write_text(json.dumps({"result": result.line(),
                                                    "statuses": result.statuses}))
    assert outcome.verdict.status == "pass", outcome.verdict.reasons
    assert result.requests == 1000
    assert result.error_rate <= 0.01, result.statuses
