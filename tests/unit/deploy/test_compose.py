"""The shipped deployment files keep the contract: names, ports, variables, secrets, jobs.

Static checks only (PyYAML and text): no Docker, promtool or nginx needed. The tools
themselves run in tests/integration/deploy/test_promtool.py.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdb.config import load_settings
from cdb.observability import metrics as cdb_metrics

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"

INFRA_PORTS = {
    "cdb_redis": ("6379", "6379"),
    "cdb_postgres": ("5432", "5432"),
    "cdb_prometheus": ("19090", "9090"),
    "cdb_grafana": ("3000", "3000"),
}
SERVICE_PORTS = {
    "cdb_ws": 8000,
    "cdb_signal": 8005,
    "cdb_risk": 8002,
    "cdb_execution": 8003,
    "cdb_db_writer": 8004,
}
# The operator console (cdb console), 8010 in the contract's ports table.
CONSOLE_PORTS = {"cdb_console": ("8010", "8010")}
CONTRACT_TARGETS = ["cdb_ws:8000", "cdb_signal:8005", "cdb_risk:8002", "cdb_execution:8003"]
REQUIRED_ALERTS = {
    "SignalEngineDown",
    "NoSignalsGenerated",
    "WebSocketStalled",
    "EssTripped",
    "ConsumerLagHigh",
    "RedisUnreachable",
    "DbWriterFailing",
    "ServiceDown",
}
# Metric names the alerts and the dashboard may use: the contract, the ones beyond it,
# the planned ones, and Prometheus' own.
CONTRACT_METRICS = {
    "decoded_messages_total",
    "redis_publish_total",
    "signals_generated_total",
    "signal_engine_status",
    "risk_pending_orders_total",
    "risk_total_exposure_value",
}
PLANNED_METRICS = {"cdb_stream_length", "cdb_consumer_lag", "cdb_redis_up", "cdb_buffered_events"}
KNOWN_METRICS = (
    CONTRACT_METRICS
    | PLANNED_METRICS
    | {
        "cdb_ess_halted",
        "cdb_events_parked_total",
        "cdb_events_consumed_total",
        "cdb_events_published_total",
        "cdb_db_rows_written_total",
        "cdb_risk_rejections_total",
        "cdb_orders_total",
        "cdb_fills_total",
        "cdb_equity_value",
        "cdb_decode_errors_total",
        "cdb_batch_seconds_bucket",
        "up",
        "ALERTS",
    }
)
NGINX_ROUTES = {
    "/api/ws/": 8000,
    "/api/signal/": 8005,
    "/api/risk/": 8002,
    "/api/execution/": 8003,
    "/api/db_writer/": 8004,
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PASSWD", re.IGNORECASE)


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(DEPLOY / "docker-compose.yml")


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    doc = load_yaml(DEPLOY / "prometheus" / "alerts.yml")
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    with (DEPLOY / "grafana" / "dashboards" / "cdb-pipeline.json").open(encoding="utf-8") as f:
        return json.load(f)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def port_bindings(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host_ip, published, target) of each port entry, short or long syntax."""
    out = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            out.append((entry.get("host_ip", ""), str(entry["published"]), str(entry["target"])))
            continue
        parts = str(entry).split(":")
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
        else:
            out.append(("", parts[0], parts[-1]))
    return out


# ---------------------------------------------------------------------------- compose


def test_compose_has_exactly_the_contract_containers(services: dict[str, Any]) -> None:
    expected = set(INFRA_PORTS) | set(SERVICE_PORTS) | set(CONSOLE_PORTS)
    assert set(services) == expected
    for name, service in services.items():
        assert service.get("container_name") == name


@pytest.mark.parametrize(
    ("name", "published", "target"),
    [(n, p, t) for n, (p, t) in (INFRA_PORTS | CONSOLE_PORTS).items()]
    + [(n, str(p), str(p)) for n, p in SERVICE_PORTS.items()],
)
def test_compose_publishes_contract_port_on_localhost_only(
    services: dict[str, Any], name: str, published: str, target: str
) -> None:
    assert port_bindings(services[name]) == [("127.0.0.1", published, target)]


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_compose_service_has_the_configuration_contract(
    services: dict[str, Any], name: str
) -> None:
    env = env_of(services[name])
    assert env["REDIS_HOST"] == "cdb_redis"
    assert env["POSTGRES_HOST"] == "cdb_postgres"
    assert env["POSTGRES_USER"]
    assert env["SIGNAL_STRATEGY_ID"] == "momentum"
    assert "LOG_LEVEL" in env
    assert env["REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set: the default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


@pytest.mark.parametrize(("name", "port"), sorted(SERVICE_PORTS.items()))
def test_compose_environment_is_a_complete_cdb_configuration(
    services: dict[str, Any], name: str, port: int, tmp_path: Path
) -> None:
    """cdb itself accepts what compose gives it, and serves on the published port."""
    env = {k: interpolate(v) for k, v in env_of(services[name]).items()}
    for var, value in list(env.items()):
        if var.endswith("_FILE"):  # the mounted secret, stood in for by a local file
            local = tmp_path / Path(value).name
            # the API token as make-secrets.sh writes it (cdb refuses one under 16 chars)
            local.write_text("ab" * 32 if "token" in var.lower() else "s3cret\n", "utf-8")
            env[var] = str(local)
    settings = load_settings(environ=env)
    service = name.removeprefix("cdb_")
    assert settings.distributed_problems(service) == []
    assert settings.bind_host == "0.0.0.0"  # noqa: S104 - inside the container only
    assert settings.port_of(service) == port
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == "s3cret"


def test_systemd_environment_example_is_a_complete_cdb_configuration(tmp_path: Path) -> None:
    env = dict(unit_directives(DEPLOY / "systemd" / "cdb.env.example"))
    for secret in ("redis_password", "postgres_password"):
        (tmp_path / secret).write_text("s3cret\n", encoding="utf-8")
    env["CDB_SECRETS_DIR"] = str(tmp_path)  # what the unit sets to its credentials
    settings = load_settings(environ=env)
    assert settings.distributed_problems() == []
    assert settings.bind_host == "127.0.0.1"


def test_k8s_configmap_is_a_complete_cdb_configuration(tmp_path: Path) -> None:
    env = {k: str(v) for k, v in load_yaml(DEPLOY / "k8s" / "configmap.yaml")["data"].items()}
    for var in ("REDIS_PASSWORD_FILE", "POSTGRES_PASSWORD_FILE"):
        assert env[var].startswith("/run/secrets/")
        local = tmp_path / Path(env[var]).name
        local.write_text("s3cret\n", encoding="utf-8")
        env[var] = str(local)
    settings = load_settings(environ=env)
    assert settings.distributed_problems() == []
    assert settings.bind_host == "0.0.0.0"  # noqa: S104 - inside the pod only


def test_compose_signal_serves_on_8005(services: dict[str, Any]) -> None:
    assert env_of(services["cdb_signal"])["SIGNAL_PORT"] == "8005"


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_compose_service_runs_the_cdb_image_and_command(
    services: dict[str, Any], name: str
) -> None:
    service = services[name]
    assert service["command"] == ["service", name.removeprefix("cdb_")]
    assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_compose_service_mounts_both_secrets(services: dict[str, Any], name: str) -> None:
    assert {"redis_password", "postgres_password"} <= set(services[name]["secrets"])


def test_only_risk_gets_the_api_token_as_a_secret(
    compose: dict[str, Any], services: dict[str, Any],
) -> None:
    """Trips and resets of the ESS need CDB_API_TOKEN: provisioned for risk alone."""
    assert "cdb_api_token" in compose["secrets"]
    risk = services["cdb_risk"]
    assert "cdb_api_token" in risk["secrets"]
    assert {"redis_password", "postgres_password"} <= set(risk["secrets"])
    assert env_of(risk)["CDB_API_TOKEN_FILE"] == "/run/secrets/cdb_api_token"
    for name in SERVICE_PORTS:
        if name != "cdb_risk":
            assert "cdb_api_token" not in services[name]["secrets"], name
            assert "CDB_API_TOKEN_FILE" not in env_of(services[name]), name


def test_compose_secrets_are_files_under_secrets_path(compose: dict[str, Any]) -> None:
    for name in ("redis_password", "postgres_password"):
        assert compose["secrets"][name] == {"file": f"${{SECRETS_PATH:-./secrets}}/{name}"}
    assert all("file" in spec for spec in compose["secrets"].values())


def test_compose_has_no_plaintext_secret_in_any_environment(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for key, value in env_of(service).items():
            if SECRET_NAME.search(key):
                assert key.endswith("_FILE"), f"{name}: {key} would hold a secret in plain text"
                assert value.startswith("/run/secrets/"), f"{name}: {key}={value}"


def test_compose_redis_requires_the_password_from_its_secret(services: dict[str, Any]) -> None:
    redis = services["cdb_redis"]
    command = " ".join(redis["command"])
    assert "requirepass" in command
    assert "/run/secrets/redis_password" in command
    assert redis["secrets"] == ["redis_password"]
    assert "/run/secrets/redis_password" in " ".join(redis["healthcheck"]["test"])


def test_compose_postgres_password_comes_from_its_secret(services: dict[str, Any]) -> None:
    postgres = services["cdb_postgres"]
    assert env_of(postgres)["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert postgres["secrets"] == ["postgres_password"]


@pytest.mark.parametrize(("name", "port"), sorted(SERVICE_PORTS.items()))
def test_compose_service_healthcheck_asks_readiness_on_its_port(
    services: dict[str, Any], name: str, port: int
) -> None:
    assert services[name]["healthcheck"]["test"] == ["CMD", "cdb-healthcheck", str(port)]
    script = (DEPLOY / "docker" / "healthcheck.py").read_text(encoding="utf-8")
    assert '"/health/ready"' in script


@pytest.mark.parametrize(
    ("name", "needs"),
    [
        ("cdb_ws", {"cdb_redis"}),
        ("cdb_signal", {"cdb_redis"}),
        ("cdb_risk", {"cdb_redis", "cdb_postgres"}),
        ("cdb_execution", {"cdb_redis", "cdb_postgres"}),
        ("cdb_db_writer", {"cdb_redis", "cdb_postgres"}),
        ("cdb_grafana", {"cdb_prometheus"}),
    ],
)
def test_compose_waits_for_healthy_dependencies(
    services: dict[str, Any], name: str, needs: set[str]
) -> None:
    depends = services[name]["depends_on"]
    assert set(depends) == needs
    assert all(spec["condition"] == "service_healthy" for spec in depends.values())
    assert all("healthcheck" in services[dep] for dep in needs)


def test_compose_mounts_prometheus_and_grafana_config(services: dict[str, Any]) -> None:
    prometheus_volumes = services["cdb_prometheus"]["volumes"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus_volumes
    grafana_volumes = services["cdb_grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana_volumes
    assert "./grafana/dashboards:/etc/grafana/dashboards:ro" in grafana_volumes
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "cdb.yml")
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


def test_dockerfile_runs_cdb_as_non_root() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r'^ENTRYPOINT \["cdb"\]$', text, re.M)


# -------------------------------------------------------------------------- prometheus


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus.local.yml"])
def test_prometheus_scrapes_the_contract_job(name: str) -> None:
    config = load_yaml(DEPLOY / "prometheus" / name)
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["cdb_services"]
    assert job["scrape_interval"] == "15s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    if name == "prometheus.yml":
        assert targets == CONTRACT_TARGETS
        db_writer = "cdb_db_writer:8004"
    else:
        assert targets == [f"127.0.0.1:{t.split(':')[1]}" for t in CONTRACT_TARGETS]
        db_writer = "127.0.0.1:8004"
    all_targets = [t for j in jobs.values() for sc in j["static_configs"] for t in sc["targets"]]
    assert db_writer in all_targets


def test_alerts_include_the_required_ones(alert_rules: list[dict[str, Any]]) -> None:
    names = [rule["alert"] for rule in alert_rules]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS


def test_alerts_have_severity_and_text(alert_rules: list[dict[str, Any]]) -> None:
    for rule in alert_rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


@pytest.mark.parametrize(
    ("alert", "expr", "for_"),
    [
        ("SignalEngineDown", "signal_engine_status == 0", "1m"),
        ("NoSignalsGenerated", "rate(signals_generated_total[5m]) == 0", "10m"),
        ("WebSocketStalled", "rate(decoded_messages_total[1m]) == 0", "2m"),
        ("EssTripped", "cdb_ess_halted == 1", None),
        ("ConsumerLagHigh", "cdb_consumer_lag > 5000", "5m"),
        ("RedisUnreachable", "cdb_redis_up == 0", "1m"),
        ("ServiceDown", 'up{job!="cdb_coordinator"} == 0', "1m"),
    ],
)
def test_alert_expressions_are_the_specified_ones(
    alert_rules: list[dict[str, Any]], alert: str, expr: str, for_: str | None
) -> None:
    rule = next(r for r in alert_rules if r["alert"] == alert)
    assert " ".join(rule["expr"].split()) == expr
    assert rule.get("for") == for_


def test_every_alert_has_a_firing_and_a_quiet_unit_test(
    alert_rules: list[dict[str, Any]],
) -> None:
    tests = load_yaml(DEPLOY / "prometheus" / "alerts_test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules}
    assert names - fires == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (good enough for our expressions)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"@\s*(?:start|end)\(\)", "", expr)
    expr = re.sub(r"\$\w+", "", expr)
    keywords = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
    names = set()
    for match in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        if match.group(2) is None and match.group(1).lower() not in keywords:
            names.add(match.group(1))
    return names


def test_alerts_and_dashboard_read_only_known_metrics(
    alert_rules: list[dict[str, Any]], dashboard: dict[str, Any]
) -> None:
    exprs = [rule["expr"] for rule in alert_rules]
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    used = set().union(*(metric_names(e) for e in exprs))
    assert used - KNOWN_METRICS == set()
    assert used >= CONTRACT_METRICS


def test_metrics_used_by_deploy_exist_in_the_package() -> None:
    """Catches a renamed metric: every known non-planned cdb metric is registered."""
    registered = set()
    for family in cdb_metrics.REGISTRY.collect():
        if family.type == "counter":
            registered.add(f"{family.name}_total")
        elif family.type == "histogram":
            registered |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        else:
            registered.add(family.name)
    missing = KNOWN_METRICS - PLANNED_METRICS - {"up", "ALERTS"} - registered
    assert missing == set()


# ----------------------------------------------------------------------------- grafana


def test_grafana_datasource_is_the_compose_prometheus(dashboard: dict[str, Any]) -> None:
    doc = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = doc["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://cdb_prometheus:9090"
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}


def test_grafana_dashboard_covers_the_pipeline(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for metric in (
        "decoded_messages_total",
        "redis_publish_total",
        "signals_generated_total",
        "cdb_orders_total",
        "cdb_fills_total",
        "cdb_consumer_lag",
        "cdb_ess_halted",
        "risk_total_exposure_value",
        "cdb_equity_value",
        "cdb_risk_rejections_total",
        "cdb_events_parked_total",
    ):
        assert metric in exprs
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            grid = panel["gridPos"]
            assert grid["x"] >= 0
            assert grid["x"] + grid["w"] <= 24


# ------------------------------------------------------------------------------- nginx


def test_nginx_routes_each_prefix_to_its_service_with_the_prefix_stripped() -> None:
    conf = (DEPLOY / "nginx" / "cdb.conf").read_text(encoding="utf-8")
    upstreams_conf = (DEPLOY / "nginx" / "upstreams.conf").read_text(encoding="utf-8")
    assert re.search(r"^\s*listen 127\.0\.0\.1:8080;", conf, re.M)
    upstreams = dict(re.findall(r"upstream (\w+) \{\s*server 127\.0\.0\.1:(\d+)", upstreams_conf))
    locations = dict(
        re.findall(r"location (/api/\w+/) \{[^}]*?proxy_pass http://(\w+)/;", conf, re.S)
    )
    assert set(locations) == set(NGINX_ROUTES)
    for prefix, port in NGINX_ROUTES.items():
        assert int(upstreams[locations[prefix]]) == port, prefix
    # Addresses live only in upstreams.conf, so a test can swap that one file.
    assert not re.search(r"\b\d+\.\d+\.\d+\.\d+:80\d\d\b", conf.replace("127.0.0.1:8080", ""))
    for directive in ("proxy_connect_timeout", "proxy_read_timeout"):
        assert directive in conf
    for header in ("Host", "X-Real-IP", "X-Forwarded-For", "X-Forwarded-Prefix", "X-Request-ID"):
        assert f"proxy_set_header {header} " in conf


def test_nginx_routes_the_console_under_its_prefix() -> None:
    conf = (DEPLOY / "nginx" / "cdb.conf").read_text(encoding="utf-8")
    upstreams_conf = (DEPLOY / "nginx" / "upstreams.conf").read_text(encoding="utf-8")
    assert re.search(r"location /console/ \{\s*proxy_pass http://cdb_console_api/;", conf)
    assert re.search(r"upstream cdb_console_api \{\s*server 127\.0\.0\.1:8010;", upstreams_conf)
    # Its links and redirects are built under the prefix the gateway strips.
    assert '"~^(/console)/"' in conf


def test_compose_console_signs_in_with_the_api_token(services: dict[str, Any]) -> None:
    console = services["cdb_console"]
    assert console["command"][0] == "console"
    env = env_of(console)
    assert env["CDB_API_TOKEN_FILE"] == "/run/secrets/cdb_api_token"
    assert env["CONSOLE_PORT"] == "8010"
    assert "cdb_api_token" in console["secrets"]


def test_nginx_sets_proxy_headers_only_at_server_level() -> None:
    """A proxy_set_header inside a location would silently drop the inherited ones."""
    conf = (DEPLOY / "nginx" / "cdb.conf").read_text(encoding="utf-8")
    for body in re.findall(r"location [^{]*\{([^}]*)\}", conf):
        assert "proxy_set_header" not in body


# ---------------------------------------------------- systemd, kubernetes, redis, postgres


def unit_directives(path: Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.append((key.strip(), value.strip()))
    return out


def test_systemd_template_runs_a_hardened_service_with_credentials() -> None:
    directives = unit_directives(DEPLOY / "systemd" / "cdb@.service")
    values: dict[str, list[str]] = {}
    for key, value in directives:
        values.setdefault(key, []).append(value)
    assert values["ExecStart"] == ["/opt/cdb/bin/cdb service %i"]
    assert values["Restart"] == ["on-failure"]
    assert "/etc/cdb/cdb.env" in values["EnvironmentFile"]
    credentials = {v.split(":", 1)[0] for v in values["LoadCredential"]}
    assert credentials == {"redis_password", "postgres_password"}
    # cdb reads its secrets from the unit's credentials directory.
    assert "CDB_SECRETS_DIR=%d" in values["Environment"]
    for key in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome"):
        assert values[key][0] in {"yes", "strict"}, key
    env_example = dict(unit_directives(DEPLOY / "systemd" / "cdb.env.example"))
    assert not any(SECRET_NAME.search(key) for key in env_example)
    target = (DEPLOY / "systemd" / "cdb.target").read_text(encoding="utf-8")
    for name in SERVICE_PORTS:
        assert f"cdb@{name.removeprefix('cdb_')}.service" in target


def test_systemd_gives_the_api_token_to_risk_alone() -> None:
    dropin = DEPLOY / "systemd" / "cdb@risk.service.d" / "api-token.conf"
    directives = dict(unit_directives(dropin))
    assert directives["LoadCredential"] == (
        "cdb_api_token:/etc/cdb/credentials/cdb_api_token")
    template = dict(unit_directives(DEPLOY / "systemd" / "cdb@.service"))
    assert "cdb_api_token" not in template.get("LoadCredential", "")
    assert "cdb@risk.service.d/api-token.conf" in (DEPLOY / "README.md").read_text("utf-8")


def test_k8s_risk_mounts_the_api_token_and_the_example_secret_has_it() -> None:
    with (DEPLOY / "k8s" / "services.yaml").open(encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        (secret,) = [v["secret"] for v in pod["volumes"] if "secret" in v]
        keys = {item["key"] for item in secret["items"]}
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        if name in ("cdb-risk", "cdb-console"):  # the console signs in with it
            assert "cdb_api_token" in keys
            assert env["CDB_API_TOKEN_FILE"] == "/run/secrets/cdb_api_token"
        else:
            assert "cdb_api_token" not in keys, name
    example = load_yaml(DEPLOY / "k8s" / "secret.example.yaml")
    assert len(example["stringData"]["cdb_api_token"]) >= 16


def test_k8s_has_a_deployment_and_service_per_cdb_service() -> None:
    with (DEPLOY / "k8s" / "services.yaml").open(encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    k8s_services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for name, port in SERVICE_PORTS.items():
        k8s_name = name.replace("_", "-")
        pod = deployments[k8s_name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == ["service", name.removeprefix("cdb_")]
        assert container["ports"][0]["containerPort"] == port
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert pod["securityContext"]["runAsNonRoot"] is True
        secret_volumes = [v for v in pod["volumes"] if "secret" in v]
        assert secret_volumes[0]["secret"]["secretName"] == "cdb-secrets"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts[secret_volumes[0]["name"]] == "/run/secrets"
        assert k8s_services[k8s_name]["spec"]["ports"][0]["port"] == port
    kustomization = load_yaml(DEPLOY / "k8s" / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (DEPLOY / "k8s" / resource).is_file()


def test_redis_sentinel_example_monitors_the_cdb_group() -> None:
    conf = (DEPLOY / "redis" / "sentinel.conf").read_text(encoding="utf-8")
    assert re.search(r"^sentinel monitor cdb \S+ 6379 2$", conf, re.M)
    assert not re.search(r"^sentinel auth-pass", conf, re.M), "no password in the example"
    assert (DEPLOY / "redis" / "README.md").is_file()


@pytest.mark.parametrize("script", ["backup.sh", "restore.sh"])
def test_postgres_scripts_parse_and_print_usage(script: str) -> None:
    path = DEPLOY / "postgres" / script
    assert path.stat().st_mode & 0o111, f"{script} must be executable"
    subprocess.run(["bash", "-n", str(path)], check=True)
    result = subprocess.run(
        ["bash", str(path), "-h"], capture_output=True, text=True, check=True, timeout=10
    )
    assert result.stdout.startswith(("Back up", "Restore"))
    assert "Usage:" in result.stdout
    text = path.read_text(encoding="utf-8")
    assert ("--format=custom" in text) if script == "backup.sh" else ("pg_restore" in text)


def test_make_secrets_creates_every_compose_secret(tmp_path: Path, compose: dict[str, Any]) -> None:
    target = tmp_path / "secrets"
    subprocess.run(
        ["bash", str(DEPLOY / "make-secrets.sh"), str(target)],
        check=True,
        capture_output=True,
        timeout=10,
    )
    for name in compose["secrets"]:
        assert len((target / name).read_text(encoding="ascii")) == 64
    assert (target.stat().st_mode & 0o777) == 0o700
    first = {p.name: p.read_text() for p in target.iterdir()}
    subprocess.run(
        ["bash", str(DEPLOY / "make-secrets.sh"), str(target)],
        check=True,
        capture_output=True,
        timeout=10,
    )
    assert {p.name: p.read_text() for p in target.iterdir()} == first, "never rotates"
    assert shlex.quote(first["redis_password"]) == first["redis_password"]
    assert "cdb_api_token" in first


def test_make_secrets_refuses_an_api_token_cdb_would_refuse(tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    target.mkdir(mode=0o700)
    (target / "cdb_api_token").write_text("short\n", encoding="ascii")
    result = subprocess.run(
        ["bash", str(DEPLOY / "make-secrets.sh"), str(target)],
        capture_output=True, text=True, timeout=10, check=False,
    )
    assert result.returncode == 1
    assert "at least 16" in result.stderr
    assert (target / "cdb_api_token").read_text(encoding="ascii") == "short\n", "kept as is"


@pytest.mark.parametrize(("name", "target"), [("prometheus.yml", "host.docker.internal:8090"),
                                              ("prometheus.local.yml", "127.0.0.1:8090")])
def test_prometheus_scrapes_the_coordinator(name: str, target: str) -> None:
    config = load_yaml(DEPLOY / "prometheus" / name)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["cdb_coordinator"]
    assert job["honor_labels"] is True
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == [target]
    if name == "prometheus.yml":  # compose's Prometheus reaches the host by that name
        prometheus = load_yaml(DEPLOY / "docker-compose.yml")["services"]["cdb_prometheus"]
        assert "host.docker.internal:host-gateway" in prometheus["extra_hosts"]
