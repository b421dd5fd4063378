"""The side channels the code under test cannot forge, and the helper binaries that write them.

- **test reports**: doctune's test runner (``test_runner.zig``, package data) writes nonce-tagged records to an
  inherited pipe; `parse_report` turns them into `ZigTestCounts` and says whether the final `done` record came.
- **exit status**: doctune's supervisor (``supervisor.zig``, built once per Zig cache) writes the program's real
  wait status; bwrap's ``--json-status-fd`` says whether the sandbox started (`child-pid`) and how it ended.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from doctune.core.errors import ToolchainError
from doctune.core.schemas import ZigTestCounts

HERE = Path(__file__).resolve().parent
TEST_RUNNER = HERE / "test_runner.zig"
SUPERVISOR = HERE / "supervisor.zig"
MAX_NAMES = 8


def new_nonce() -> str:
    return secrets.token_hex(16)


@dataclass
class Report:
    """What the test runner reported: counts, and whether it reached its final record."""

    counts: ZigTestCounts
    finished: bool


def parse_report(data: bytes, nonce: str) -> Report:
    """Records carrying `nonce` only; anything else on the pipe (forgeries, junk) is ignored."""
    text = data.decode("utf-8", errors="replace")
    pat = re.compile(re.escape(nonce) + r" (start|pass|fail|skip|done) (\d+)(?: ([^\n]*))?\n")
    names: dict[int, str] = {}
    state: dict[int, str] = {}
    counts = ZigTestCounts()
    finished = False
    for m in pat.finditer(text):
        kind, num, rest = m.group(1), int(m.group(2)), m.group(3) or ""
        if kind == "start":
            names[num] = rest.strip()
            state[num] = "running"
        elif kind == "done":
            finished = True
            break
        elif kind in ("pass", "fail", "skip") and state.get(num) == "running":
            state[num] = kind
    counts.passed = sum(1 for s in state.values() if s == "pass")
    counts.skipped = sum(1 for s in state.values() if s == "skip")
    failed = [names[n] for n, s in state.items() if s == "fail"]
    counts.failed = len(failed)
    counts.failed_names = failed[:MAX_NAMES]
    running = [names[n] for n, s in state.items() if s == "running"]
    if not finished and running:
        counts.unfinished = running[-1]
    return Report(counts, finished)


@dataclass
class Status:
    """How the sandboxed child ended, from channels it cannot write."""

    started: bool  # bwrap reported a child pid (the sandbox came up)
    exit_code: int | None  # the program's own exit code (None: killed by a signal or unknown)
    signal: int | None  # the signal that killed the program
    known: bool  # the supervisor reported (else only bwrap's 128+n style code is known)


def parse_status(json_data: bytes | None, sup_data: bytes, fallback_rc: int | None) -> Status:
    """Combine bwrap's JSON status (None when not sandboxed) and the supervisor's line."""
    started = True
    if json_data is not None:
        started = False
        for line in json_data.decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                if "child-pid" in json.loads(line):
                    started = True
    m = re.match(rb"(exit|signal) (\d+)\n", sup_data)
    if m is None:
        return Status(started, fallback_rc, None, False)
    n = int(m.group(2))
    return Status(started, n if m.group(1) == b"exit" else None, n if m.group(1) == b"signal" else None, True)


def supervisor_binary(zig: Path, cache_dir: Path) -> Path:
    """Build the supervisor once (trusted source, static, ~10 KB) into the Zig cache dir; reuse it after."""
    src = SUPERVISOR.read_bytes()
    digest = hashlib.sha256(src + str(zig).encode()).hexdigest()[:16]
    out = cache_dir / f"doctune-supervisor-{digest}"
    if out.is_file():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".doctune-supervisor.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.is_file():
            return out
        tmp = out.with_suffix(".tmp")
        cmd = [str(zig), "build-exe", str(SUPERVISOR), "-O", "ReleaseSmall", "-fstrip", f"-femit-bin={tmp}"]
        env = {
            "ZIG_GLOBAL_CACHE_DIR": str(cache_dir),
            "ZIG_LOCAL_CACHE_DIR": str(cache_dir),
            "PATH": "/usr/bin:/bin",
        }
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=300, env=env, cwd=str(cache_dir)
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ToolchainError(f"cannot build doctune's sandbox supervisor: {e}") from None
        if done.returncode != 0:
            raise ToolchainError(f"cannot build doctune's sandbox supervisor: {done.stderr.strip()[:500]}")
        tmp.rename(out)
    return out
