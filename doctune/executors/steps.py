"""One sandboxed step (compile or run) with its side channels, cgroup and truthful attribution.

The verdict-deciding facts come only from channels the code under test cannot write: the supervisor's wait
status, bwrap's JSON status, the cgroup's counters and (tests) the runner's nonce-tagged report. Program output
is kept for people and the repair loop; it never decides `infra_error` or a limit. The cgroup's files and
/proc/vmstat are read and written in a worker thread (one hop before the step, one after), never in the event loop.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from doctune.executors.base import ExecResult
from doctune.executors.blocking import in_thread
from doctune.executors.cgroups import Cgroup
from doctune.executors.channels import new_nonce, parse_report, parse_status
from doctune.executors.proc import Channel, ProcResult, run_process

_SIGNAL_LIMITS = {int(signal.SIGXCPU): "cpu", int(signal.SIGXFSZ): "fsize"}


@dataclass
class Step:
    """What to run and under which bounds. `build(status_fd, json_fd, env)` returns the argv (sandboxed) or
    None for an unsandboxed step, whose argv is `argv` and whose status the parent sees directly."""

    stage: str
    timeout_s: float
    cap: int
    kill_after: int | None = None
    memory_bytes: int | None = None  # cgroup memory limit (None: no cgroup)
    pids: int = 1024
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None
    preexec: Callable[[], None] | None = None
    sandboxed: bool = True
    report: bool = False  # test mode: open the runner's report pipe and pass DOCTUNE_* in the env
    test_filter: str = ""


def report_env(fd: int, nonce: str, test_filter: str) -> dict[str, str]:
    return {"DOCTUNE_REPORT_FD": str(fd), "DOCTUNE_NONCE": nonce, "DOCTUNE_TESTS": test_filter}


async def run_step(step: Step, build: Callable[[int, int, dict[str, str]], list[str]] | None) -> ExecResult:
    """Run the step; `build(status_fd, json_fd, extra_env)` makes the sandboxed argv."""
    cg, ooms_before = await in_thread(_before, step, undo=_drop)
    status, bw, rep = Channel("status", 4096), Channel("json", 4096), Channel("report")
    nonce = new_nonce()
    extra = report_env(rep.write_fd, nonce, step.test_filter) if step.report else {}
    channels = [status, bw] + ([rep] if step.report else [])
    preexec = _preexec(cg, step.preexec)
    if build is not None and step.sandboxed:
        argv, env = build(status.write_fd, bw.write_fd, extra), None
    else:
        channels = [rep] if step.report else []
        for ch in (status, bw):
            ch.close()
        argv, env = step.argv, {**(step.env or {}), **extra}
    try:
        res = await run_process(
            argv,
            timeout_s=step.timeout_s,
            cap=step.cap,
            kill_after=step.kill_after,
            env=env if not step.sandboxed or build is None else None,
            cwd=step.cwd,
            preexec_fn=preexec,
            channels=channels,
        )
    finally:
        for ch in (status, bw, rep):
            ch.close()
        cause, peak, ooms_after = await in_thread(_after, cg, step.stage == "compile")
    sandboxed = build is not None and step.sandboxed
    result = _result(step, res, cause, sandboxed, ooms_after - ooms_before)
    result.memory_peak_bytes = peak
    if step.report and result.stage == "run" and result.infra_error is None:
        report = parse_report(res.channels.get("report", b""), nonce)
        result.tests, result.tests_finished = report.counts, report.finished
    return result


def _before(step: Step) -> tuple[Cgroup | None, int]:
    """The step's cgroup (None: no memory limit asked, or none can be made) and the host's OOM kills so far."""
    cg = Cgroup.create(step.memory_bytes, step.pids) if step.memory_bytes else None
    return cg, host_oom_kills()


def _drop(made: tuple[Cgroup | None, int]) -> None:
    """Remove the cgroup of a step that was cancelled before it started."""
    if made[0] is not None:
        made[0].destroy()


def _after(cg: Cgroup | None, kills_only: bool) -> tuple[str | None, int, int]:
    """The limit the kernel enforced and the peak memory (read before the cgroup is removed), then the host's OOM
    kills so far."""
    try:
        cause = cg.cause(kills_only=kills_only) if cg is not None else None
        peak = cg.peak_bytes() if cg is not None else 0
    finally:
        if cg is not None:
            cg.destroy()
    return cause, peak, host_oom_kills()


def _preexec(cg: Cgroup | None, then: Callable[[], None] | None) -> Callable[[], None] | None:
    if cg is None:
        return then

    def apply() -> None:
        cg.join()
        if then is not None:
            then()

    return apply


def _result(step: Step, res: ProcResult, cause: str | None, sandboxed: bool, host_ooms: int) -> ExecResult:
    if res.start_error is not None:
        return ExecResult(step.stage, None, "", "", res.duration_s, infra_error=res.start_error)
    if sandboxed:
        st = parse_status(res.channels.get("json"), res.channels.get("status", b""), res.returncode)
        started, code, sig = st.started, st.exit_code, st.signal
        if started and not st.known and not res.timed_out and not res.output_exceeded:
            # The supervisor never reported: the program got rid of it, or the step was killed from outside.
            code, sig = res.returncode, None
    else:
        started, code, sig = True, res.returncode, res.signal
        if code is not None and code < 0:
            code = None
    out = ExecResult(
        stage=step.stage,
        exit_code=code if sig is None else -sig,
        stdout=res.stdout,
        stderr=res.stderr,
        duration_s=res.duration_s,
        timed_out=res.timed_out,
        signal=sig,
        truncated=res.truncated,
    )
    if not started and not res.timed_out:
        out.infra_error = "sandbox failed to start: " + _first_line(res.stderr)
        return out
    limit = None
    failed = sig is not None or code != 0 or res.timed_out
    if not failed:
        pass
    elif res.output_exceeded:
        limit = "output"
    elif cause == "memory":
        limit = "memory"
    elif sig in _SIGNAL_LIMITS:
        limit = _SIGNAL_LIMITS[sig]
    elif cause == "pids" and (sig is not None or code != 0):
        limit = "pids"
    if limit is not None and not res.timed_out:
        out.resource_limit, out.limit = True, limit
    elif sig == int(signal.SIGKILL) and not res.timed_out and host_ooms:
        # Our own kills are timeouts, output caps and cgroup OOM kills (all attributed above); the program
        # may SIGKILL itself, so only an OOM kill elsewhere on the host during the step makes this infra.
        out.infra_error = "killed by SIGKILL while the host was out of memory"
    return out


def host_oom_kills() -> int:
    """The kernel's count of OOM kills so far (/proc/vmstat), 0 where unknown."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "(no output)")[:300]
