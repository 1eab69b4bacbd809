"""The undo stack: every fault registers how to take itself back; undos always run.

A fault with a duration is undone when its duration ends (``Undo.run``); everything
still registered is undone in reverse order of registration by ``run_all``, which
the runner calls on every way out: the end of the timeline, a failure, Ctrl-C. An
undo runs at most once, and one that fails does not stop the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

_log = structlog.get_logger("cdb.chaos.run.undo")

UndoFn = Callable[[], Awaitable[object]]


class Undo:
    """One registered undo."""

    __slots__ = ("_done", "_fn", "_lock", "error", "key", "on_done", "output", "ran")

    def __init__(self, key: str, fn: UndoFn) -> None:
        self.key = key
        self._fn = fn
        self._done = False
        self._lock = asyncio.Lock()
        self.ran = False
        self.output: object = None
        self.error: BaseException | None = None
        self.on_done: Callable[[Undo], None] | None = None

    @property
    def done(self) -> bool:
        return self._done

    async def run(self) -> None:
        """Run the undo (once; later calls return at once). Errors are kept, not raised."""
        async with self._lock:
            if self._done:
                return
            self._done = True
            self.ran = True
            try:
                self.output = await self._fn()
            except asyncio.CancelledError:
                self.error = asyncio.CancelledError("undo cancelled")
                raise
            except Exception as exc:
                self.error = exc
                _log.warning("undo failed", key=self.key, error=repr(exc))
            finally:
                if self.on_done is not None:
                    self.on_done(self)


class UndoStack:
    """Undos in registration order; ``run_all`` takes them back in reverse."""

    def __init__(self) -> None:
        self._undos: list[Undo] = []

    def push(self, key: str, fn: UndoFn) -> Undo:
        undo = Undo(key, fn)
        self._undos.append(undo)
        return undo

    @property
    def pending(self) -> list[Undo]:
        return [u for u in self._undos if not u.done]

    @property
    def all(self) -> list[Undo]:
        return list(self._undos)

    async def run_all(self) -> list[Undo]:
        """Run every undo not yet done, last registered first; returns those it ran.

        Shielded one by one: a cancellation (a second Ctrl-C) arriving meanwhile still
        lets the undo in progress finish, then propagates.
        """
        ran: list[Undo] = []
        for undo in reversed(self._undos):
            if undo.done:
                continue
            ran.append(undo)
            await asyncio.shield(undo.run())
        return ran
