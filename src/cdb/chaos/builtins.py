"""Loads the built-in faults, actions, probes and invariants, and declares the
capabilities scenarios can require.

A capability is checked by looking for the code that provides it, so a scenario that
requires a feature still being built ends ``unknown`` with the issue named, and
starts passing the day the feature lands.
"""

from __future__ import annotations

from cdb.chaos.scenario.registry import CAPABILITIES, Capability, module_exists, setting_exists

_loaded = False


def load() -> None:
    """Import every built-in module once (they register themselves)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from cdb.chaos import leaks  # noqa: F401
    from cdb.chaos.checks import invariants, probes  # noqa: F401
    from cdb.chaos.faults import (  # noqa: F401
        actions,
        exchange,
        flood,
        infra,
        market,
        network,
        sabotage,
        service,
    )
    from cdb.chaos.faults.exchange import exchange_wired

    for cap in (
        Capability(name="ess", summary="the emergency stop system (risk /ess API, EssChange "
                   "events)", issue="5", check=module_exists("cdb.risk.ess")),
        Capability(name="fake_binance", summary="the fake Binance exchange with fault control",
                   issue="6", check=module_exists("cdb.testing.fake_binance")),
        Capability(name="binance_venue", summary="a pipeline whose execution trades on "
                   "FakeBinance, started by the coordinator (the embedded runtime takes a "
                   "venue and exchange_url; the distributed one needs a venue setting, and "
                   "the fake's clock must follow the simulated one)", issue="6/8",
                   check=exchange_wired),
        Capability(name="disk_buffer", summary="the durable local buffer of producers while "
                   "Redis is down", issue="7", check=module_exists("cdb.bus.disk_buffer")),
        Capability(name="ws_shapes", summary="market shapes in the ws service's settings "
                   "(WS_SHAPES)", issue="8", check=setting_exists("ws_shapes")),
    ):
        CAPABILITIES.add(cap)


load()
