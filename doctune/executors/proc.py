"""Run one child process with a wall-clock timeout and capped output, from an asyncio event loop.

The child gets its own session (process group); on timeout or runaway output the whole group is killed. Both
pipes are drained continuously so a chatty child never blocks on a full pipe; only the first ``cap`` bytes of
each stream are kept, and output beyond ``kill_after`` bytes in total ends the child (a 100 MB writer must not
cost us 100 MB or a minute of copying).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass
class ProcResult:
    """Outcome of one process run (bytes decoded with replacement)."""

    returncode: int | None  # None: could not start
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    output_exceeded: bool = False
    truncated: bool = False
    start_error: str | None = None

    @property
    def signal(self) -> int | None:
        rc = self.returncode
        return -rc if rc is not None and rc < 0 else None


class _Sink:
    """Keeps the first `cap` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.buf = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - len(self.buf)
        if room > 0:
            self.buf += chunk[:room]

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_process(
    argv: Sequence[str],
    *,
    timeout_s: float,
    cap: int = 65536,
    kill_after: int | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> ProcResult:
    """Run `argv`; never raises for the child's behaviour (start failures come back in `start_error`)."""
    kill_after = kill_after if kill_after is not None else 16 * cap
    t0 = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # own process group: killpg reaches every descendant that stays in it
            env=env,
            cwd=cwd,
            preexec_fn=preexec_fn,
        )
    except OSError as e:
        return ProcResult(None, "", "", time.monotonic() - t0, start_error=f"cannot start {argv[0]}: {e}")

    out, err = _Sink(cap), _Sink(cap)
    exceeded = asyncio.Event()

    async def pump(stream: asyncio.StreamReader, sink: _Sink) -> None:
        while chunk := await stream.read(65536):
            sink.feed(chunk)
            if out.total + err.total > kill_after and not exceeded.is_set():
                exceeded.set()
                _killpg(proc.pid)

    assert proc.stdout is not None and proc.stderr is not None
    pumps = asyncio.gather(pump(proc.stdout, out), pump(proc.stderr, err))
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        timed_out = not exceeded.is_set()
        _killpg(proc.pid)
        await proc.wait()
    except asyncio.CancelledError:
        _killpg(proc.pid)
        raise
    finally:
        if proc.returncode is None:
            _killpg(proc.pid)
    # A descendant that left the group may still hold the pipes open: do not wait for it forever.
    try:
        await asyncio.wait_for(pumps, 2.0)
    except TimeoutError:
        pass  # wait_for cancelled the pumps; what they read so far is kept
    return ProcResult(
        returncode=proc.returncode,
        stdout=out.text(),
        stderr=err.text(),
        duration_s=time.monotonic() - t0,
        timed_out=timed_out,
        output_exceeded=exceeded.is_set(),
        truncated=out.total > cap or err.total > cap,
    )
