"""Loads the built-in faults, actions, probes and invariants into the registries."""

from __future__ import annotations

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


load()
