"""The synchronous face of a run's lifecycle (`doctune.run` / `doctune.status` / `doctune.retry`), for scripts and
the CLI: each runs the async call of `doctune.graph.lifecycle` in a fresh event loop, turns Ctrl-C / SIGTERM into
`Interrupted` (checkpoints kept, resumable) and, with ``show_progress=True``, shows the run's progress
(`doctune.app.progress`: Rich bars on a terminal, plain lines otherwise)."""

from __future__ import annotations

import asyncio
import gc
import signal
import threading
import warnings
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from doctune.core.errors import Interrupted
from doctune.core.settings import Settings
from doctune.graph.driver import RunSummary
from doctune.graph.lifecycle import aretry, arun, astatus
from doctune.graph.runstatus import RunStatus

T = TypeVar("T")

def run_sync(main: Coroutine[Any, Any, T], resume_hint: str) -> T:
    """Run `main` in a fresh event loop; SIGINT/SIGTERM cancel it and raise `Interrupted` naming `resume_hint`.

    The loop is closed on every exit path (tasks cancelled, worker threads joined), so a script may catch the
    error and start again in the same process."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(main)
    stopped: list[str] = []

    def stop(name: str) -> None:
        # LangGraph drops the coroutines of tasks it had not started yet: nothing is lost, but Python would warn.
        warnings.filterwarnings("ignore", "coroutine '.*' was never awaited", RuntimeWarning)
        stopped.append(name)
        task.cancel()

    def on_error(lp: asyncio.AbstractEventLoop, where: dict[str, Any]) -> None:
        # After Ctrl-C, futures that ended cancelled without anyone left to look at them are expected: not news.
        if not (stopped and isinstance(where.get("exception"), asyncio.CancelledError)):
            lp.default_exception_handler(where)

    loop.set_exception_handler(on_error)
    signals = [signal.SIGINT, signal.SIGTERM] if threading.current_thread() is threading.main_thread() else []
    for sig in signals:
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        result = loop.run_until_complete(task)
    except asyncio.CancelledError:
        if not stopped:
            raise
        result = None
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        _close_loop(loop)
    if stopped:
        raise Interrupted(f"interrupted ({stopped[0]}); resume with: {resume_hint}")
    return result  # type: ignore[return-value]


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    # Transports of subprocesses a cancelled step left behind (a compile) close themselves when collected: let
    # that happen while the loop still runs, not after it is closed.
    gc.collect()
    loop.run_until_complete(asyncio.sleep(0))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


def progress_for(show: bool) -> Any:
    """The progress display for a run (None: silent)."""
    if not show:
        return None
    from doctune.app.progress import RunProgress

    return RunProgress()


def run(docs: list[str], out_dir: Path | str, settings: Settings | None = None, *, show_progress: bool = False,
        **kw: Any) -> RunSummary:
    """`arun` for synchronous callers (`doctune.run(["guide.md"], "out/x")`)."""
    return run_sync(arun(docs, out_dir, settings, progress=progress_for(show_progress), **kw),
                    f"doctune retry {out_dir}")


def status(out_dir: Path | str, checkpoint_url: str | None = None, *, run_id: str | None = None) -> RunStatus:
    """`astatus` for synchronous callers."""
    return run_sync(astatus(out_dir, checkpoint_url, run_id=run_id), f"doctune status {out_dir}")


def retry(out_dir: Path | str, *, show_progress: bool = False, **kw: Any) -> RunSummary | None:
    """`aretry` for synchronous callers (`doctune.retry("out/x", changes={"llm": {"model": "m2"}})`)."""
    return run_sync(aretry(out_dir, progress=progress_for(show_progress), **kw), f"doctune retry {out_dir}")
