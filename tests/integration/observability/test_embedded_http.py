"""`cdb run` with CDB_METRICS_PORT serves the metrics and health of all five services on
one port, and promtool accepts the metrics."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from cdb.config import load_settings
from cdb.runtime.embedded import EmbeddedPipeline, RunOptions
from cdb.testing.ports import free_port

pytestmark = pytest.mark.integration


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("`promtool` is not installed: run `apt-get install -y prometheus`",
                    pytrace=False)
    return path


async def test_the_embedded_pipeline_serves_metrics_and_health_on_one_port(
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = load_settings(environ={"CDB_METRICS_PORT": str(port),
                                      "CDB_SECRETS_DIR": str(tmp_path)})
    options = RunOptions(db_url=f"sqlite+aiosqlite:///{tmp_path}/cdb.db", duration_s=300,
                         speed=300.0, symbols=("BTCUSDT",), instance="emb")
    pipeline = EmbeddedPipeline(settings, options)
    run = asyncio.create_task(pipeline.run())
    text = ""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        for _ in range(200):
            try:
                text = (await http.get("/metrics")).text
            except httpx.ConnectError:
                text = ""
            if 'decoded_messages_total{instance="emb.ws",service="ws"}' in text:
                break
            await asyncio.sleep(0.05)
        health = (await http.get("/health")).json()
    await asyncio.wait_for(run, 60)
    assert 'decoded_messages_total{instance="emb.ws",service="ws"}' in text
    for name in ("signals_generated_total", "signal_engine_status", "risk_pending_orders_total",
                 "risk_total_exposure_value", "cdb_fills_total", "cdb_events_consumed_total"):
        assert f"{name}{{" in text, name
    assert health["service"] == "embedded"
    assert health["status"] == "healthy"
    assert health["dependencies"]["database"]["status"] == "up"
    assert {"ws", "signal", "risk", "execution", "db_writer"} <= set(health["details"])
    check = await asyncio.to_thread(
        subprocess.run, [promtool(), "check", "metrics"], input=text, capture_output=True,
        text=True, timeout=30, check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
