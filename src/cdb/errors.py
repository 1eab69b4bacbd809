"""The one error hierarchy of cdb.

::

    CdbError                      anything cdb raises on purpose
    ├── ConfigError               bad or missing setting; stops a process at start (exit 2)
    ├── InputError                unreadable input file, unknown strategy id (exit 2)
    ├── DecodeError               one malformed message or row; counted and skipped/parked
    ├── BusError                  the event bus failed an operation
    │   ├── BusClosedError        used after close, or closed while waiting
    │   ├── CircuitOpenError      not even tried: the breaker in front of Redis is open
    │   └── BufferFullError       the disk buffer is full and its policy is to refuse
    ├── StoreError                the database failed an operation
    ├── DataRejectedError         the database refused an event's data (not retried; parked)
    ├── VenueError                the exchange refused or failed a request
    │   └── OrderNotPlacedError   the order is known not to be on the venue (rejected,
    │                             rate-limited, banned, unavailable): safe to report
    └── LifecycleError            a component used in the wrong state (reuse, double start)

Errors carry context (setting name, file and line, stream, order id) so the message
says what was wrong and what to do.
"""

from __future__ import annotations


class CdbError(Exception):
    """Base of every error cdb raises on purpose."""


class ConfigError(CdbError):
    """One or more settings are missing or invalid.

    Args:
        problems: one human-readable line per problem, each naming the setting.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class InputError(CdbError):
    """An input (file, strategy id, scenario) cannot be used at all."""


class DecodeError(CdbError):
    """One message or row could not be decoded.

    Args:
        reason: what was wrong.
        where: where it came from (``file:line``, stream and entry id).
    """

    def __init__(self, reason: str, where: str = "") -> None:
        self.reason = reason
        self.where = where
        super().__init__(f"{where}: {reason}" if where else reason)


class BusError(CdbError):
    """The event bus failed an operation."""


class BusClosedError(BusError):
    """The bus was closed."""


class CircuitOpenError(BusError):
    """The circuit breaker is open: the operation was not tried.

    Args:
        retry_after: seconds until the breaker lets one trial through.
    """

    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class BufferFullError(BusError):
    """The disk buffer is full and its policy is ``reject``."""


class StoreError(CdbError):
    """The database failed an operation."""


class DataRejectedError(CdbError):
    """The database refused the data of an event (a constraint, a value out of range).

    Not an infrastructure failure: retrying cannot help, so the event is parked.
    """


class VenueError(CdbError):
    """The venue refused or failed a request."""


class OrderNotPlacedError(VenueError):
    """The venue certainly did not place the order (refused, rate-limited, banned or
    unreachable after bounded retries): it can be reported REJECTED with the reason."""


class LifecycleError(CdbError):
    """A component was used in a state that does not allow it."""
