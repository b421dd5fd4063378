"""Blocking work (temp dirs, cgroup files, SQLite) called from async code: always in a worker thread.

The executors run inside graph nodes, in the event loop of `langgraph dev` or the CLI, which must never block.
`in_thread` is `asyncio.to_thread` that also releases what the call made when the caller is cancelled while the
thread runs (a thread cannot be stopped: it finishes, and `undo` then removes its temp dir or cgroup).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any, undo: Callable[[T], object] | None = None) -> T:
    """`fn(*args)` in a worker thread; if the caller is cancelled meanwhile, `undo(result)` runs (in a thread)
    once `fn` has finished."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if undo is not None:
            task.add_done_callback(lambda t: _undo(t, undo))
        raise


def _undo(task: asyncio.Future[T], undo: Callable[[T], object]) -> None:
    if not task.cancelled() and task.exception() is None:
        asyncio.get_running_loop().run_in_executor(None, undo, task.result())
