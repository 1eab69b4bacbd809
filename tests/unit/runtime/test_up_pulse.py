"""`cdb up`'s live table: each service's pulse (events/s in and out, lag, buffered) and
a line with the ESS state and the session's counts."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from cdb.runtime.up import Pulse, Sample, _table, parse_metrics, session_line

METRICS = """\
# TYPE cdb_events_consumed_total counter
cdb_events_consumed_total{service="risk",instance="r",topic="stream.signals"} 30.0
cdb_events_consumed_total{service="risk",instance="r",topic="stream.market_data"} 70.0
# TYPE cdb_events_published_total counter
cdb_events_published_total{service="risk",instance="r",topic="stream.orders"} 12.0
# TYPE cdb_consumer_lag gauge
cdb_consumer_lag{service="risk",instance="r",stream="stream.signals",group="risk"} 4.0
cdb_consumer_lag{service="risk",instance="r",stream="stream.market_data",group="risk"} 3.0
"""


def test_metrics_are_summed_over_topics_and_streams() -> None:
    assert parse_metrics(METRICS) == (100.0, 12.0, 7.0)


def test_rates_come_from_two_looks_and_never_go_negative() -> None:
    pulse = Pulse()
    pulse.update("risk", Sample(consumed=100.0, published=10.0), now=10.0)
    assert "risk" not in pulse.rates  # one look is no rate yet
    pulse.update("risk", Sample(consumed=300.0, published=14.0), now=12.0)
    assert pulse.rates["risk"] == (100.0, 2.0)
    pulse.update("risk", Sample(consumed=5.0, published=1.0), now=14.0)  # restarted
    assert pulse.rates["risk"] == (0.0, 0.0)


def samples() -> dict[str, Sample]:
    return {
        "ws": Sample(health="healthy", details={"trades": 12345, "buffered_events": 17},
                     consumed=0.0, published=12345.0),
        "signal": Sample(health="healthy", details={"signals": 42}, consumed=1.0, published=1.0),
        "risk": Sample(health="degraded", consumed=1.0, published=1.0, lag=250.0, details={
            "orders": 7, "ess": {"state": "HALTED", "reason": "manual", "actor": "alice"}}),
        "execution": Sample(health="healthy", details={"fills": 5}, consumed=1.0,
                            published=1.0),
    }


def test_the_session_line_has_the_ess_and_the_counts() -> None:
    text = session_line(samples()).plain
    assert "ESS HALTED (manual, by alice)" in text
    for part in ("trades 12,345", "signals 42", "orders 7", "fills 5"):
        assert part in text


def test_the_table_shows_the_pulse_within_80_columns() -> None:
    child: Any = SimpleNamespace(process=SimpleNamespace(pid=4242), state="running",
                                 restarts=0)
    sup: Any = SimpleNamespace(children=dict.fromkeys(
        ("ws", "signal", "risk", "execution", "db_writer"), child))
    pulse = Pulse()
    pulse.update("ws", Sample(consumed=0.0, published=0.0), now=0.0)
    pulse.update("ws", Sample(consumed=0.0, published=2500.0), now=2.0)
    ports = {"ws": 8000, "signal": 8005, "risk": 8002, "execution": 8003, "db_writer": 8004}
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(_table(sup, samples(), ports, pulse))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    for word in ("in/s", "out/s", "lag", "buffered", "1,250", "250", "17", "ESS HALTED"):
        assert word in text, word
