"""The undo stack: reverse order, once, whatever fails, even when cancelled."""

from __future__ import annotations

import asyncio

from cdb.chaos.run.undo import UndoStack


async def test_undos_run_in_reverse_once_and_failures_do_not_stop_the_rest() -> None:
    done: list[str] = []
    stack = UndoStack()

    def undo(name: str, fail: bool = False):  # type: ignore[no-untyped-def]
        async def run() -> str:
            done.append(name)
            if fail:
                raise RuntimeError(name)
            return name

        return run

    a = stack.push("a", undo("a"))
    stack.push("b", undo("b", fail=True))
    c = stack.push("c", undo("c"))
    await c.run()  # its duration ended
    await c.run()
    ran = await stack.run_all()
    assert done == ["c", "b", "a"]
    assert [u.key for u in ran] == ["b", "a"]
    assert isinstance(stack.all[1].error, RuntimeError)
    assert a.done
    assert stack.pending == []
    assert await stack.run_all() == []


async def test_an_undo_in_progress_finishes_when_the_caller_is_cancelled() -> None:
    finished = asyncio.Event()
    stack = UndoStack()

    async def slow() -> None:
        await asyncio.sleep(0.05)
        finished.set()

    stack.push("slow", slow)
    task = asyncio.create_task(stack.run_all())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.1)
    assert finished.is_set()
