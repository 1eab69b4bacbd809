"""The distributed scenarios end to end: real Redis, PostgreSQL and five service
processes per run, in their own namespace.

Runs without an infrastructure fault share one Redis and one PostgreSQL (``--redis``,
``--postgres``: each run has its own namespace and schema); the others start their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cdb.testing.postgres import PostgresServer
from cdb.testing.redis import RedisServer
from tests.e2e.test_scenarios_embedded import (
    ROOT,
    SCENARIOS,
    failing,
    must_pass,
    outcome_of,
    run,
    run_all,
)

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def shared() -> Iterator[list[str]]:
    """``--redis`` and ``--postgres`` arguments of a Redis and a PostgreSQL for this
    module's runs."""
    with RedisServer(password="shared-pw") as redis, PostgresServer() as pg:
        yield ["--redis", f"redis://:shared-pw@127.0.0.1:{redis.port}/0",
               "--postgres", f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"]


def by_name(outcome: dict[str, object]) -> dict[str, dict[str, object]]:
    return {a["name"]: a for a in outcome["assertions"]}  # type: ignore[attr-defined,index]


@pytest.fixture(scope="module")
def distributed_all(tmp_path_factory: pytest.TempPathFactory, shared: list[str],
                    ) -> tuple[int, dict[str, Any], dict[str, dict[str, Any]]]:
    """Every shipped scenario in distributed mode by one ``cdb scenario run-all`` (what CI
    runs): the runs without an infrastructure fault share one Redis and one PostgreSQL,
    the others (redis-down) start their own."""
    out = tmp_path_factory.mktemp("run-all-distributed")
    return run_all(out, SCENARIOS, "--mode", "distributed", *shared, timeout=1000)


# The first test to ask for ``distributed_all`` waits for the whole run-all.
ALL = pytest.mark.timeout(1100)


@ALL
def test_run_all_passes_every_shipped_scenario_distributed(distributed_all: Any) -> None:
    code, summary, results = distributed_all
    assert set(results) == {p.stem for p in SCENARIOS.glob("*.yaml")}
    bad = {stem: r["reasons"] for stem, r in results.items() if r["status"] != "pass"}
    assert (code, summary["status"], bad) == (0, "pass", {})
    assert all(Path(path).is_file() for path in summary["reports"].values())
    assert Path(summary["reports"]["junit"]).read_text().count("<testsuite ") == 6


@ALL
def test_flash_crash_trips_the_ess_in_distributed_mode(distributed_all: Any) -> None:
    """The crash is in ws's market (WS_SHAPES) at the planned time: the ESS trips on it
    within the fall, alerts, and the buys after it are all rejected."""
    code, outcome = outcome_of(distributed_all[2], "flash-crash")
    assert outcome["mode"] == "distributed"
    named = by_name(outcome)
    assert named["crash took effect"]["status"] == "pass", failing(outcome)
    assert named["the ESS tripped on the flash crash"]["status"] == "pass", failing(outcome)
    # Lined up with the timeline: the ESS trips as the fall reaches 15 %, not before.
    assert 5 <= named["time to trip"]["measured"] <= 12  # type: ignore[operator]
    must_pass(code, outcome)


@ALL
def test_ess_trips_on_drawdown_and_resets_only_after_the_cooldown_distributed(
    distributed_all: Any,
) -> None:
    code, outcome = outcome_of(distributed_all[2], "ess-trigger-reset")
    named = by_name(outcome)
    assert named["the reset during the cooldown is refused (still HALTED)"]["status"] == "pass"
    assert named["trading resumes after the reset"]["status"] == "pass", failing(outcome)
    must_pass(code, outcome)


@ALL
def test_signal_flood_is_rate_limited_in_distributed_mode(distributed_all: Any) -> None:
    code, outcome = outcome_of(distributed_all[2], "signal-flood")
    named = by_name(outcome)
    assert named["the rest rejected by the rate limit"]["status"] == "pass", failing(outcome)
    assert named["at most 10 orders from the flood"]["status"] == "pass", failing(outcome)
    must_pass(code, outcome)


@ALL
def test_services_killed_and_restarted_lose_and_double_nothing(distributed_all: Any) -> None:
    code, outcome = outcome_of(distributed_all[2], "service-killed-restarted")
    effects = [a for a in outcome["assertions"] if a["category"] == "fault-effect"]
    assert effects
    assert all(a["status"] == "pass" for a in effects), failing(outcome)
    must_pass(code, outcome)


@ALL
def test_redis_down_buffers_and_flushes(distributed_all: Any) -> None:
    code, outcome = outcome_of(distributed_all[2], "redis-down")
    named = by_name(outcome)
    assert named["redis down took effect"]["status"] == "pass", failing(outcome)
    must_pass(code, outcome)
    assert outcome["duration_s"] < 120


def test_two_coordinators_share_one_redis_and_postgres_without_interfering(
    tmp_path: Path,
) -> None:
    """Named test-coordinator-chaos1 and -chaos2, each in its own namespace; the first
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
                   f"test-coordinator-chaos{i}"}
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
            keys = r.keys("test-coordinator-chaos*")
    assert seen_health
    assert seen_metrics
    names = [o["namespace"] for _, o in outcomes]
    assert names[0].startswith("test-coordinator-chaos1-")
    assert names[1].startswith("test-coordinator-chaos2-")
    for code, outcome in outcomes:
        assert code == 0, failing(outcome)
    assert outcomes[0][1]["http_url"] == f"http://127.0.0.1:{port}"
    assert outcomes[1][1]["http_url"].startswith("http://127.0.0.1:")  # a free port
    assert keys == []  # a shared Redis keeps nothing of the runs


@ALL
def test_exchange_down_and_rate_limited_on_the_fake_binance_passes(distributed_all: Any) -> None:
    """Execution trades on a fake Binance; every exchange fault fires (-1003, -1015, 429,
    418, 5xx, timeouts) and the venue's ledger still equals the database."""
    code, outcome = outcome_of(distributed_all[2], "exchange-down-rate-limited")
    effects = {a["name"]: a for a in outcome["assertions"] if a["category"] == "fault-effect"}
    assert len(effects) >= 7
    assert all(a["status"] == "pass" for a in effects.values()), failing(outcome)
    by_name = {a["name"]: a for a in outcome["assertions"]}
    assert "venue executions matched" in by_name["no_lost_events"]["detail"]
    must_pass(code, outcome)


def _services_of(prefix: str) -> dict[int, dict[str, str]]:
    """``cdb service`` processes whose namespace starts with ``prefix``: pid -> their
    environment."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours
        if b"service" not in cmdline or b"cdb" not in cmdline:
            continue
        env = dict(v.decode(errors="replace").partition("=")[::2] for v in environ if v)
        if env.get("SERVICE_INSTANCE_NAME", "").startswith(prefix):
            found[int(entry.name)] = env
    return found


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_or_terminated_coordinator_leaves_no_service_behind(
    tmp_path: Path, shared: list[str],
) -> None:
    """SIGKILL: the services die with the coordinator, and its own Redis and PostgreSQL
    are taken down by its reaper. SIGTERM: the run ends as on Ctrl-C (undone, stopped,
    reported: exit 2, unknown) and stops them itself."""
    prefix = f"test-orphans-{uuid.uuid4().hex[:6]}"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for how in ("kill", "term"):
        env = {**os.environ, "NO_COLOR": "1", "SERVICE_INSTANCE_NAME": f"{prefix}-{how}"}
        with (tmp_path / f"{how}.out").open("w") as out, \
                (tmp_path / f"{how}.err").open("w") as err:
            procs[how] = subprocess.Popen(
                [sys.executable, "-m", "cdb", "scenario", "run", "--json", "--quiet",
                 "--mode", "distributed", str(SCENARIOS / "signal-flood.yaml"),
                 "--report-dir", str(tmp_path / how), *(shared if how == "term" else [])],
                env=env, cwd=ROOT, stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 90
        while True:
            running = _services_of(prefix)
            per_run = {how: sum(env["SERVICE_INSTANCE_NAME"].startswith(f"{prefix}-{how}-")
                                for env in running.values()) for how in procs}
            if all(n == 5 for n in per_run.values()):
                break
            assert all(p.poll() is None for p in procs.values()), "a run ended early"
            assert time.monotonic() < deadline, f"services not all up: {per_run}"
            time.sleep(0.2)
        infra = {int(env[k]) for env in running.values() for k in ("REDIS_PORT", "POSTGRES_PORT")
                 if env["SERVICE_INSTANCE_NAME"].startswith(f"{prefix}-kill-")}
        assert len(infra) == 2
        assert all(_listening(port) for port in infra)
        procs["kill"].send_signal(signal.SIGKILL)
        procs["term"].send_signal(signal.SIGTERM)
        code = procs["term"].wait(timeout=60)
        procs["kill"].wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (
                _services_of(prefix) or any(_listening(port) for port in infra)):
            time.sleep(0.2)
        left = _services_of(prefix)
        servers_left = [port for port in infra if _listening(port)]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        for pid in _services_of(prefix):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert left == {}
    assert servers_left == []
    assert code == 2, (tmp_path / "term.err").read_text()[-2000:]
    outcome = json.loads((tmp_path / "term.out").read_text())
    assert outcome["interrupted"] is True
    assert outcome["verdict"]["status"] == "unknown"
    assert (tmp_path / "term" / "journal.json").is_file()


def test_network_postgres_and_stop_faults_through_a_separate_toxiproxy(tmp_path: Path) -> None:
    """Every infrastructure fault no shipped scenario uses (latency, a cut link,
    PostgreSQL down, SIGSTOP) takes effect and loses nothing; the network faults go
    through a Toxiproxy API in another process (``--toxiproxy``), which keeps nothing
    of the run afterwards."""
    import httpx

    from cdb.testing.ports import free_port
    from tests.e2e.test_scenarios_embedded import SELF_TESTS

    api = f"127.0.0.1:{free_port()}"
    proxy = subprocess.Popen([sys.executable, "-m", "cdb.chaos.proxy", "--api", api])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(f"http://{api}/proxies", timeout=1).json() == {}
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the proxy did not come up"
                time.sleep(0.1)
        out = tmp_path / "run.out"
        with out.open("w") as sink:
            coordinator = subprocess.Popen(
                [sys.executable, "-m", "cdb", "scenario", "run",
                 str(SELF_TESTS / "links-and-postgres.yaml"), "--json", "--report-dir",
                 str(tmp_path), "--toxiproxy", f"http://{api}"],
                env={**os.environ, "NO_COLOR": "1"}, cwd=ROOT, stdout=sink,
                stderr=subprocess.DEVNULL)
            seen: set[str] = set()
            while coordinator.poll() is None:
                with contextlib.suppress(httpx.HTTPError):
                    seen |= set(httpx.get(f"http://{api}/proxies", timeout=1).json())
                time.sleep(0.2)
        code = coordinator.returncode
        outcome = json.loads(out.read_text().strip().splitlines()[-1])
        left = httpx.get(f"http://{api}/proxies", timeout=2).json()
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
    effects = {a["name"]: a for a in outcome["assertions"] if a["category"] == "fault-effect"}
    for step in ("slow link", "risk cut off", "postgres down", "signal frozen"):
        assert effects[f"{step} took effect"]["status"] == "pass", failing(outcome)
    # Made on the separate proxy, named by the run's namespace, removed at the end.
    assert f"{outcome['namespace']}-risk-redis" in seen
    assert left == {}
    must_pass(code, outcome)


def test_a_market_from_the_fake_binance_survives_a_dropped_stream(tmp_path: Path) -> None:
    """``market.source: fake-binance``: ws reads the exchange's websocket; the exchange
    drops it, ws reconnects, reports the gap and publishes no trade twice."""
    from tests.e2e.test_scenarios_embedded import SELF_TESTS

    code, outcome = run(tmp_path, SELF_TESTS / "fake-binance-market.yaml")
    named = by_name(outcome)
    assert named["dropped took effect"]["status"] == "pass", failing(outcome)
    assert named["ws reported the trades it missed as a gap"]["status"] == "pass"
    must_pass(code, outcome)
