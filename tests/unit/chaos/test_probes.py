"""The metric probe: Prometheus text parsed by labels, aggregated, and as a rate."""

from __future__ import annotations

import random
from typing import Any

import pytest
from tests.unit.chaos.conftest import FakeTarget

from cdb.chaos.faults.base import StepContext
from cdb.chaos.faults.probes import ProbeError, metric, metric_value
from cdb.chaos.scenario.params import Params

TEXT = """\
# HELP cdb_risk_rejections_total Signals rejected by risk.
# TYPE cdb_risk_rejections_total counter
cdb_risk_rejections_total{service="risk",instance="n.risk",reason="rate"} 3.0
cdb_risk_rejections_total{service="risk",instance="n.risk",reason="exposure"} 2.0
cdb_risk_rejections_total{service="risk",instance="other.risk",reason="rate"} 100.0
# HELP cdb_risk_rejections_created Created.
# TYPE cdb_risk_rejections_created gauge
cdb_risk_rejections_created{service="risk",instance="n.risk",reason="rate"} 1.7e9
# HELP cdb_buffered_events Events on disk.
# TYPE cdb_buffered_events gauge
cdb_buffered_events{service="risk",instance="n.risk"} 0.0
"""


def test_samples_are_picked_by_labels_and_aggregated() -> None:
    mine = {"service": "risk", "instance": "n.risk"}
    assert metric_value(TEXT, "cdb_risk_rejections_total", mine) == 5
    assert metric_value(TEXT, "cdb_risk_rejections", {**mine, "reason": "rate"}) == 3
    assert metric_value(TEXT, "cdb_risk_rejections_total", mine, "max") == 3
    assert metric_value(TEXT, "cdb_risk_rejections_total", mine, "count") == 2
    assert metric_value(TEXT, "cdb_risk_rejections_total", {"reason": "none"}) == 0
    with pytest.raises(ProbeError, match="no metric 'cdb_typo'"):
        metric_value(TEXT, "cdb_typo", mine)


def test_a_labelled_counter_never_incremented_reads_zero() -> None:
    text = "# HELP cdb_ws_reconnects_total Reconnections.\n# TYPE cdb_ws_reconnects_total counter\n"
    assert metric_value(text, "cdb_ws_reconnects", {"service": "ws"}) == 0


class CountingTarget(FakeTarget):
    """/metrics whose counter grows by 10 at every scrape."""

    scrapes = 0

    async def metrics_text(self, service: str) -> str:
        self.scrapes += 1
        n = 10 * self.scrapes
        return (f"# TYPE cdb_orders_total counter\n"
                f'cdb_orders_total{{service="{service}",instance="{self.instance_of(service)}"}}'
                f" {n}\n")


async def test_a_rate_is_per_second_over_its_window(tmp_path: Any) -> None:
    from tests.unit.chaos.test_invariants import context

    plan = context([]).plan
    target = CountingTarget(plan)
    ctx = StepContext(key="rate", at=0.0, duration=None, rng=random.Random(1), plan=plan)
    ctx.bind(target)
    value = await metric(ctx, Params({"service": "risk", "name": "cdb_orders_total"}))
    assert value == 10
    rate = await metric(ctx, Params({"service": "risk", "name": "cdb_orders_total",
                                     "rate_over": "0.2s"}))
    assert rate == pytest.approx(10 / 0.2, rel=0.25)
