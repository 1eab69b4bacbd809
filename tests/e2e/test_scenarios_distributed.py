"""The distributed scenarios end to end: real Redis, PostgreSQL and five service
processes per run, in their own namespace."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_scenarios_embedded import SCENARIOS, failing, passes_or_known_issue, run

pytestmark = pytest.mark.timeout(400)


def test_services_killed_and_restarted_lose_and_double_nothing(tmp_path: Path) -> None:
    code, outcome = run(tmp_path, SCENARIOS / "service-killed-restarted.yaml")
    effects = [a for a in outcome["assertions"] if a["category"] == "fault-effect"]
    assert effects
    assert all(a["status"] == "pass" for a in effects), failing(outcome)
    passes_or_known_issue(code, outcome)


@pytest.mark.xfail(
    strict=False, raises=subprocess.TimeoutExpired,
    reason="known issue: on a loaded CI machine the distributed redis-down scenario ran past "
    "its 280 s bound once (it takes 45-75 s here); under investigation, see the closing note",
)
def test_redis_down_buffers_and_flushes(tmp_path: Path) -> None:
    code, outcome = run(tmp_path, SCENARIOS / "redis-down.yaml")
    if outcome["verdict"]["status"] == "unknown" and "disk_buffer" in " ".join(
            outcome["verdict"]["reasons"]):
        pytest.skip("the disk buffer has not landed")
    passes_or_known_issue(code, outcome)


def test_two_coordinators_share_one_redis_and_postgres_without_interfering(
    tmp_path: Path,
) -> None:
    """Named test-coordinator-Chaos1 and -Chaos2, each in its own namespace; the first
    also serves its own /health and /metrics while it runs."""
    import json
    import os
    import subprocess
    import sys
    import time

    import httpx

    from cdb.testing.ports import free_port
    from cdb.testing.postgres import PostgresServer
    from cdb.testing.redis import RedisServer
    from tests.e2e.test_scenarios_embedded import ROOT, SELF_TESTS

    scenario = SELF_TESTS / "short-distributed.yaml"
    port = free_port()
    with RedisServer(password="shared-pw") as redis, PostgresServer() as pg:
        procs = []
        for i in (1, 2):
            env = {**os.environ, "NO_COLOR": "1", "SERVICE_INSTANCE_NAME":
                   f"test-coordinator-Chaos{i}"}
            args = [sys.executable, "-m", "cdb", "scenario", "run", str(scenario), "--json",
                    "--report-dir", str(tmp_path / f"c{i}"),
                    "--redis", f"redis://:shared-pw@127.0.0.1:{redis.port}/0",
                    "--postgres", f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"]
            if i == 1:
                args += ["--http-port", str(port)]
            # Files, not pipes: nobody reads the second one while the first runs.
            with (tmp_path / f"c{i}.out").open("w") as out:
                procs.append(subprocess.Popen(args, env=env, cwd=ROOT, stdout=out,
                                              stderr=subprocess.STDOUT))
        seen_health = seen_metrics = False
        deadline = time.monotonic() + 300
        while procs[0].poll() is None and time.monotonic() < deadline:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                seen_health = seen_health or body["service"] == "coordinator"
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
                seen_metrics = seen_metrics or "cdb_chaos_scenario_seconds" in text
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        outcomes = []
        for i, proc in enumerate(procs, 1):
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            text = (tmp_path / f"c{i}.out").read_text()
            outcomes.append((proc.returncode, json.loads(text.strip().splitlines()[-1])))
        import redis as redis_sync

        with redis_sync.Redis(host=redis.host, port=redis.port, password="shared-pw") as r:
            keys = r.keys("test-coordinator-Chaos*")
    assert seen_health
    assert seen_metrics
    names = [o["namespace"] for _, o in outcomes]
    assert names[0].startswith("test-coordinator-Chaos1-")
    assert names[1].startswith("test-coordinator-Chaos2-")
    for code, outcome in outcomes:
        assert code == 0, failing(outcome)
    assert keys == []  # a shared Redis keeps nothing of the runs
