"""``--attach``: its options, and what the attach target refuses (unknown, with why)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from cdb.chaos.run.runner import Options
from cdb.chaos.scenario.model import Scenario
from cdb.chaos.scenario.registry import Unavailable
from cdb.chaos.targets.attach import AttachConfig, AttachTarget, supervised
from cdb.cli_scenario_attach import attach_config, attach_runner, market_faults
from cdb.config import Settings
from cdb.errors import CdbError
from cdb.runtime.discovery import InstanceRecord

SCENARIO = """\
    version: "1"
    title: attach unit
    pipeline: {mode: distributed, modes: [distributed], market: {symbols: [BTCUSDT]}}
    timeline:
      - {name: crash, at: 1s, fault: {type: flash_crash, symbol: BTCUSDT, drop_pct: 5,
                                      over: 2s}}
      - {name: kill, at: 1s, fault: {type: kill, service: risk}}
    invariants: [no_duplicates]
"""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("REDIS_", "POSTGRES_", "DATABASE_URL", "SERVICE_INSTANCE")):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_options_come_from_the_environment_when_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:pw@127.0.0.1:7000/0")
    monkeypatch.setenv("SERVICE_INSTANCE_NAME", "blue")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:5433/cdb")
    cfg = attach_config(None, None, None, None, None)
    assert cfg == AttachConfig(redis_url="redis://:pw@127.0.0.1:7000/0", namespace="blue",
                               postgres_url="postgresql://u@127.0.0.1:5433/cdb")
    cfg = attach_config("redis://h:1/0", "postgresql://x@h:2/d", "http://127.0.0.1:8474",
                        "green", "distributed")
    assert (cfg.namespace, cfg.proxy_url) == ("green", "http://127.0.0.1:8474")


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(("args", "expected"), [
    ((None, None, None, None, None), "--attach needs the pipeline's Redis"),
    (("http://:secret@h:1", None, None, None, None), "--redis"),
    (("redis://h:1", "mysql://h/db", None, None, None), "--postgres"),
    (("redis://h:1", None, "ftp://h", None, None), "--proxy"),
    (("redis://h:1", None, None, "Not_Valid", None), "--namespace"),
    (("redis://h:1", None, None, None, "embedded"), "--mode embedded"),
])
def test_bad_options_are_one_clear_error(args: tuple[str | None, ...], expected: str) -> None:
    with pytest.raises(CdbError) as info:
        attach_config(*args)
    assert expected in str(info.value)
    assert "secret" not in str(info.value)


def test_market_shapes_cannot_be_injected_and_end_unavailable(
    scenario: Callable[[str], Scenario], tmp_path: Path,
) -> None:
    cfg = AttachConfig(redis_url="redis://127.0.0.1:1/0", namespace="blue")
    runner = attach_runner(scenario(SCENARIO), Options(mode="distributed", dry_run=True,
                                                      report_dir=tmp_path), cfg)
    uses = market_faults(runner)
    assert [u.key for u in uses] == ["crash"]
    with pytest.raises(Unavailable, match="cannot shape the market"):
        asyncio.run(uses[0].impl.apply())


def _target(tmp_path: Path, scenario: Scenario, **config: str) -> AttachTarget:
    from cdb.chaos.run.runner import Runner

    cfg = AttachConfig(**{"redis_url": "redis://127.0.0.1:6399/0", "namespace": "blue",
                          **config})
    runner = Runner(scenario, Options(mode="distributed", dry_run=True, report_dir=tmp_path))
    return AttachTarget(runner.plan, cfg)


def _record(service: str, pid: int, host: str) -> InstanceRecord:
    return InstanceRecord(service=service, instance="i", address="http://0.0.0.0:9001",
                          version="1", started="", started_ns=0, host=host, pid=pid)


def test_the_users_servers_are_never_taken_down_and_links_need_a_proxy(
    scenario: Callable[[str], Scenario], tmp_path: Path,
) -> None:
    target = _target(tmp_path, scenario(SCENARIO))
    for name in ("redis", "postgres"):
        with pytest.raises(Unavailable, match=f"never takes the user's {name} down"):
            target.infra(name)
    with pytest.raises(Unavailable, match="--proxy"):
        target.proxy_name("*", "redis")
    target.records = {"risk": _record("risk", 1234, "elsewhere")}
    with pytest.raises(Unavailable, match="not on this host"):
        target._pid("risk")
    with pytest.raises(Unavailable, match="not registered"):
        target._pid("signal")
    assert target._url("risk", "/health") == "http://127.0.0.1:9001/health"


def test_the_proxy_in_front_of_redis_is_found_by_its_upstream(
    scenario: Callable[[str], Scenario], tmp_path: Path,
) -> None:
    target = _target(tmp_path, scenario(SCENARIO), proxy_url="http://127.0.0.1:8474",
                     postgres_url="postgresql://u@127.0.0.1:5432/cdb")
    target._proxy_api = "http://127.0.0.1:8474"
    target._proxies = {"redis-risk": ("127.0.0.1:7001", "localhost:6399"),
                       "redis-all": ("127.0.0.1:7002", "127.0.0.1:6399"),
                       "pg": ("127.0.0.1:7003", "127.0.0.1:5432"),
                       "other": ("127.0.0.1:7004", "127.0.0.1:6400")}
    assert target.proxy_name("*", "redis") == "redis-all,redis-risk"
    assert target.proxy_name("risk", "redis") == "redis-risk"
    assert target.proxy_name("*", "postgres") == "pg"
    with pytest.raises(Unavailable, match="for signal"):
        target.proxy_name("signal", "redis")


def test_only_a_supervised_process_is_killed(
    scenario: Callable[[str], Scenario], tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CDB_RESTARTS"}
    lone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    kept = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                            env={**env, "CDB_RESTARTS": "0"})
    try:
        assert supervised(lone.pid) is False
        assert supervised(kept.pid) is True
        target = _target(tmp_path, scenario(SCENARIO))
        target.records = {"risk": _record("risk", lone.pid, target.hostname)}
        with pytest.raises(Unavailable, match="no supervisor"):
            asyncio.run(target.signal_service("risk", "SIGKILL"))
        assert lone.poll() is None
    finally:
        for p in (lone, kept):
            p.kill()
            p.wait()


def test_checks_judge_against_the_limits_the_running_risk_service_has(
    scenario: Callable[[str], Scenario], tmp_path: Path,
) -> None:
    text = SCENARIO.replace("market: {symbols: [BTCUSDT]}}",
                            "market: {symbols: [BTCUSDT]},\n                "
                            "limits: {max_exposure: 5, max_position: 7}}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISK_")}
    risk = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                            env={**env, "RISK_MAX_EXPOSURE": "123"})
    try:
        target = _target(tmp_path, scenario(text))
        target.records = {"risk": _record("risk", risk.pid, target.hostname)}
        target._limits_of_the_pipeline()
    finally:
        risk.kill()
        risk.wait()
    # Its own value where it has one; the default where the scenario's would mislead.
    assert target.plan.env["RISK_MAX_EXPOSURE"] == "123"
    default = Settings.model_fields["risk_max_position"].default
    assert target.plan.env["RISK_MAX_POSITION"] == str(default)
    assert target.summary["limits"] == "the running risk service's"


def test_the_ess_is_not_commanded_without_an_api_token(
    scenario: Callable[[str], Scenario], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CDB_API_TOKEN", raising=False)
    monkeypatch.delenv("CDB_API_TOKEN_FILE", raising=False)
    target = _target(tmp_path, scenario(SCENARIO))
    with pytest.raises(Unavailable, match="no API token"):
        asyncio.run(target.ess_command("trip", "test", "me"))


def test_of_several_registered_instances_the_newest_alive_one_is_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cdb.chaos.targets import attach
    from cdb.runtime.discovery import Registration

    def reg(instance: str, pid: int, started: int, alive: bool = True) -> Registration:
        record = msgspec.structs.replace(_record("risk", pid, "h"), instance=instance,
                                         started_ns=started)
        return Registration(record=record, alive=alive, ttl_left_s=None)

    async def fake(client: object, namespace: object) -> list[Registration]:
        return [reg("a", 1, 10), reg("b", 2, 30), reg("c", 3, 50, alive=False),
                msgspec.structs.replace(reg("x", 4, 60), record=msgspec.structs.replace(
                    _record("console", 4, "h"), started_ns=60))]

    monkeypatch.setattr(attach, "discover", fake)
    found = asyncio.run(attach.find_services(object(), "blue"))  # type: ignore[arg-type]
    assert {s: r.pid for s, r in found.items()} == {"risk": 2}
