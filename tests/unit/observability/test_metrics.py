"""Every metric carries service and instance labels; counters exist at 0 from the start;
the contract names are exposed exactly as written."""

from __future__ import annotations

import importlib

import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from cdb.observability import metrics

# Every module that defines metrics on the process registry.
MODULES = (
    "cdb.observability.metrics", "cdb.runtime.http", "cdb.resilience.metrics",
    "cdb.services.risk", "cdb.venues.binance", "cdb.marketdata.binance",
)


def all_metrics() -> list[MetricWrapperBase]:
    for module in MODULES:
        importlib.import_module(module)
    found = {
        id(c): c for c in metrics.REGISTRY._names_to_collectors.values()
        if isinstance(c, MetricWrapperBase)
    }
    found.update({
        id(c): c for c in metrics._TOTAL_GAUGES._names_to_collectors.values()
        if isinstance(c, MetricWrapperBase)
    })
    return list(found.values())


def test_every_metric_has_service_and_instance_labels() -> None:
    found = all_metrics()
    assert len(found) > 30
    missing = [m._name for m in found if m._labelnames[:2] != ("service", "instance")]
    assert not missing


def exposed() -> dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]]:
    text = generate_latest(metrics.REGISTRY).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        out[family.name] = (family.type, samples)
    return out


@pytest.mark.parametrize(
    ("service", "names"),
    [
        ("ws", ("decoded_messages_total", "redis_publish_total", "cdb_decode_errors_total")),
        ("signal", ("signals_generated_total",)),
        ("risk", ("cdb_orders_total", "cdb_risk_rejections_total")),
        ("execution", ("cdb_fills_total",)),
    ],
)
def test_prime_creates_the_counters_of_a_service_at_zero(
    service: str, names: tuple[str, ...]
) -> None:
    instance = f"{service}-prime"
    metrics.prime(service, instance, topics=("stream.x",), reasons=("rate_limit",))
    labels = {"service": service, "instance": instance}
    for name in names:
        extra = {"reason": "rate_limit"} if name == "cdb_risk_rejections_total" else {}
        assert metrics.REGISTRY.get_sample_value(name, {**labels, **extra}) == 0, name
    consumed = {**labels, "topic": "stream.x"}
    assert metrics.REGISTRY.get_sample_value("cdb_events_consumed_total", consumed) == 0


def test_contract_names_are_exposed_as_written() -> None:
    labels = ("ws", "ws-c")
    metrics.decoded_messages.labels(*labels).inc(3)
    metrics.redis_publish.labels(*labels).inc(3)
    metrics.signals_generated.labels("signal", "s-c")
    metrics.signal_engine_status.labels("signal", "s-c").set(1)
    metrics.risk_pending_orders.labels("risk", "r-c").set(2)
    metrics.risk_total_exposure.labels("risk", "r-c").set(1500.5)
    families = exposed()
    assert families["decoded_messages"][0] == "counter"
    assert families["signal_engine_status"][0] == "gauge"
    assert families["risk_total_exposure_value"][0] == "gauge"
    key = ("risk_pending_orders_total", (("instance", "r-c"), ("service", "risk")))
    _, samples = families["risk_pending_orders_total"]
    assert samples[key] == 2


def test_the_contract_gauge_named_total_is_untyped_so_promtool_accepts_it() -> None:
    metrics.risk_pending_orders.labels("risk", "r-u").set(0)
    text = generate_latest(metrics.REGISTRY).decode()
    assert "# TYPE risk_pending_orders_total untyped" in text
    assert 'risk_pending_orders_total{instance="r-u",service="risk"} 0.0' in text
