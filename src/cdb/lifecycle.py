"""The one lifecycle of every long-lived component (bus, hosts, store, monitors)."""

from __future__ import annotations

import enum

from cdb.errors import LifecycleError


class State(enum.Enum):
    """created -> running -> stopping -> stopped; never reused."""

    CREATED = "created"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


def starting(what: str, state: State) -> State:
    """The state to move to on start; refuses a second start."""
    if state is not State.CREATED:
        raise LifecycleError(f"{what} is {state.value}; make a new one")
    return State.RUNNING
