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
from dataclasses import dataclass, field


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
    channels: dict[str, bytes] = field(default_factory=dict)  # what arrived on each side-channel pipe

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
    channels: Sequence[Channel] = (),
) -> ProcResult:
    """Run `argv`; never raises for the child's behaviour (start failures come back in `start_error`).

    `channels`: side-channel pipes whose write ends the child inherits (the fd numbers are already in
    `argv`/`env`); their read ends are drained while the child runs and returned in `ProcResult.channels`.
    """
    kill_after = kill_after if kill_after is not None else 16 * cap
    t0 = time.monotonic()
    try:
        res = await _run(argv, timeout_s, cap, kill_after, env, cwd, preexec_fn, channels, t0)
    finally:
        for ch in channels:
            ch.close()
    return res


async def _run(
    argv: Sequence[str],
    timeout_s: float,
    cap: int,
    kill_after: int,
    env: dict[str, str] | None,
    cwd: str | None,
    preexec_fn: Callable[[], None] | None,
    channels: Sequence[Channel],
    t0: float,
) -> ProcResult:
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
            pass_fds=tuple(ch.write_fd for ch in channels),
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
    for ch in channels:
        ch.close_write()  # only the child holds the write end now: EOF when it (and its heirs) are gone
    side = [_Sink(ch.cap) for ch in channels]
    opened = [await _reader(ch.read_fd) for ch in channels]
    readers = [r for r, _ in opened]
    pumps = asyncio.gather(
        pump(proc.stdout, out),
        pump(proc.stderr, err),
        *(_drain(r, k) for r, k in zip(readers, side, strict=True)),
    )
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
    for _, transport in opened:
        transport.close()
    return ProcResult(
        returncode=proc.returncode,
        stdout=out.text(),
        stderr=err.text(),
        duration_s=time.monotonic() - t0,
        timed_out=timed_out,
        output_exceeded=exceeded.is_set(),
        truncated=out.total > cap or err.total > cap,
        channels={ch.name: bytes(k.buf) for ch, k in zip(channels, side, strict=True)},
    )


class Channel:
    """A pipe for a side channel (test reports, exit status): the child writes, we read."""

    def __init__(self, name: str, cap: int = 1 << 20) -> None:
        self.name, self.cap = name, cap
        self.read_fd, self.write_fd = os.pipe()
        os.set_inheritable(self.write_fd, True)
        self._write_open = True
        self._read_open = True

    def close_write(self) -> None:
        if self._write_open:
            self._write_open = False
            os.close(self.write_fd)

    def close(self) -> None:
        self.close_write()
        if self._read_open:
            self._read_open = False
            with contextlib.suppress(OSError):
                os.close(self.read_fd)


async def _reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    # A dup: the transport closes its own file object, Channel.close closes the original fd.
    pipe = os.fdopen(os.dup(fd), "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader, transport


async def _drain(reader: asyncio.StreamReader, sink: _Sink) -> None:
    while chunk := await reader.read(65536):
        sink.feed(chunk)
