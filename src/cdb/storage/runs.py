"""A run: one session of the pipeline, as the ``runs`` table records it.

Every ``cdb run`` is a run; a simulated one (synthetic, replay) owns its state from
start to end, a live or resumed one continues the state an earlier run left. Its id
is on every event row it wrote, so one database holds many runs side by side.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Literal

import msgspec

from cdb.bus.keys import Namespace

RunKind = Literal["synthetic", "replay", "live", "distributed"]


class RunRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``runs``."""

    run_id: str
    kind: str
    started_ns: int
    finished_ns: int = 0
    legs: int = 1
    settings: str = "{}"
    """JSON object: options and settings of the last leg."""
    inputs: str = "[]"
    """JSON list: the input files or the synthetic market."""
    summary: str = ""
    """JSON: the RunSummary of the last leg; empty while running."""
    series: str = ""
    """JSON: downsampled prices and equity over time."""


def session_id(namespace: str) -> str:
    """The run id of a distributed pipeline: one continuous session per namespace."""
    return Namespace(namespace).session


def new_run_id(now: datetime | None = None, token: str | None = None) -> str:
    """``YYYYMMDD-HHMMSS-xxxx`` (UTC): sorts by start time, short enough to type.

    Args:
        now: the start time (default: now).
        token: the random suffix (default: 4 hex digits from the OS).
    """
    when = now or datetime.now(UTC)
    return f"{when:%Y%m%d-%H%M%S}-{token or secrets.token_hex(2)}"
