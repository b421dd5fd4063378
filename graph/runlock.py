"""Who may work on a run: one process per run directory (`DIR/.lock`, an flock the kernel drops when the process
dies, `kill -9` included) and, on Postgres, one process per run from whatever directory (an advisory lock on the
run id, ending with its connection: ``doctune.graph.checkpoint.hold_run``)."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from doctune.core.errors import InputError

LOCK_FILE = ".lock"


@asynccontextmanager
async def claim_run(out_dir: Path, url: str | None, run_id: str) -> AsyncIterator[None]:
    """Hold the run directory (`DIR/.lock`, an flock the kernel releases when the process ends, however it ends)
    and, on Postgres, the run itself (an advisory lock), or raise InputError: a second process on the same
    directory, or on the same run from another directory, is refused."""
    from doctune.executors.blocking import in_thread
    from doctune.graph.checkpoint import hold_run, run_holder

    fd = await in_thread(_lock_dir, out_dir, undo=os.close)  # cancelled meanwhile: the lock is let go
    try:
        async with hold_run(url, run_id) as held:
            if not held:
                who = await run_holder(url, run_id) or "a process that has just let go: try again"
                raise InputError(f"run {run_id} is in use on the same checkpoint database ({who}); wait for it, "
                                 "or stop it first")
            yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock


def _lock_dir(out_dir: Path) -> int:
    """Lock `DIR/.lock` (blocking: call in a thread) and return its descriptor, or raise InputError."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for wait in (0.05, 0.1, 0.2, 0.4, 0.5, None):  # `lock_held` (a status poll) holds it for an instant
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if wait is None:
                    pid = os.pread(fd, 32, 0).decode(errors="replace").strip()  # the holder wrote its pid
                    who = f" (pid {pid})" if pid.isdigit() else ""
                    raise InputError(f"{out_dir} is in use by another doctune run{who}: wait for it, or stop it "
                                     "first") from None
                time.sleep(wait)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_held(out_dir: Path) -> bool:
    """Is a run working on `out_dir` now (in this or another process)?"""
    path = out_dir / LOCK_FILE
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
