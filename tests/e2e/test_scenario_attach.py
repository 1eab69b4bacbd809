"""``cdb scenario run --attach`` against a pipeline ``cdb up`` runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdb.testing.cluster import REDIS_PASSWORD, LocalPipeline
from cdb.testing.waiting import eventually
from tests.e2e.conftest import cdb

pytestmark = pytest.mark.timeout(240)

SCENARIO = """\
version: "1"
title: attach self-test
seed: 5
settle: 3s
pipeline:
  mode: distributed
  modes: [distributed]
  market: {symbols: [BTCUSDT], warmup: 2s}
timeline:
  - {name: signals, at: 0s, fault: {type: signal_flood, count: 10, over: 3s, symbol: BTCUSDT}}
  - {name: kill risk, at: 3s, fault: {type: kill, service: risk, back_within: 45s}}
  - {name: cut redis, at: 4s, duration: 1s, fault: {type: network_down, target: redis}}
invariants: [no_duplicates, audit_chain_complete]
"""
LIMITS = {"RISK_MAX_POSITION": "1000000", "RISK_MAX_EXPOSURE": "1000000",
          "RISK_MAX_OPEN_ORDERS": "100"}


def test_attach_kills_by_pid_checks_real_activity_and_reports_what_it_cannot_inject(
    tmp_path: Path,
) -> None:
    scenario = tmp_path / "attach.yaml"
    scenario.write_text(SCENARIO)
    with LocalPipeline(tmp_path, env=LIMITS, namespace="attach-e2e") as pipe:
        pipe.start()
        eventually(lambda: pipe.details("ws")["trades"] > 0, 30, "market flowing")
        risk_pid = int(pipe.details("risk")["pid"])
        redis = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{pipe.redis.port}/0"
        done = cdb("scenario", "run", str(scenario), "--attach", "--redis", redis,
                   "--postgres", pipe.postgres_url, "--namespace", pipe.namespace,
                   "--json", "--quiet", "--http-port", "-1",
                   "--report-dir", str(tmp_path / "report"), timeout=150)
        out = json.loads(done.stdout or "{}")
        assert out, done.stderr + pipe.logs()
        by_name = {a["name"]: a for a in out["assertions"]}
        # The kill happened: the old process is gone, cdb up started another one.
        assert by_name["kill risk took effect"]["status"] == "pass", by_name
        assert f"pid {risk_pid} exited" in by_name["kill risk took effect"]["detail"]
        assert int(pipe.details("risk")["pid"]) != risk_pid
        # The checks examined real activity (a vacuous one would be unknown, not pass).
        for check in ("no_duplicates", "audit_chain_complete"):
            assert by_name[check]["status"] == "pass", by_name[check]
            assert any(n > 0 for n in by_name[check]["examined"].values()), by_name[check]
        # No proxy given: the network fault is reported unknown, with the reason.
        cut = [a for a in out["assertions"] if a["name"] == "unavailable"
               and a["detail"].startswith("cut redis")]
        assert cut, out
        assert cut[0]["status"] == "unknown"
        assert "--proxy" in cut[0]["detail"]
        assert out["verdict"]["status"] == "unknown"
        assert done.returncode == 2
        junit = Path(out["reports"]["junit"]).read_text()
        assert "unknown: cut redis: no fault proxy given" in junit
        # The pipeline keeps running, and keeps nothing of the run in its Redis.
        assert pipe.details("ws")["trades"] > 0
        with pipe.redis_client() as client:
            groups = client.xinfo_groups(f"{pipe.namespace}:stream.market_data")
        assert all(g["name"] != b"chaos.recorder" for g in groups)
        # Another namespace has no pipeline: refused in one line, nothing run.
        refused = cdb("scenario", "run", str(scenario), "--attach", "--redis", redis,
                      "--namespace", "nobody-here", "--quiet", timeout=60)
        assert refused.returncode == 2
        assert "no running pipeline in namespace 'nobody-here'" in refused.stderr
        assert REDIS_PASSWORD not in refused.stderr
