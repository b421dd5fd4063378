"""Hostile code through the whole graph: the validator issue's hostile programs (tests/test_hostile.py) as the
examples of a Markdown doc, run by `doctune run` with the offline doc-example generator. Each must be rejected
with the right verdict in bounded time, and the host must be untouched: the sentinel file in /tmp unchanged and
unread (its content appears in no output), nothing written outside, no connection made, no process left."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from doctune.executors.sandbox import SANDBOX_UID, bwrap_path

from tests.reliability.conftest import bump
from tests.reliability.harness import clean_env, no_traceback, run_cli
from tests.test_hostile import _uid_procs, hostile_programs
from tests.test_validator import ZIG_CACHE

pytestmark = [
    pytest.mark.zig,
    pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap cannot create namespaces here"),
]
SENTINEL = "TOP-SECRET-HOST-DATA-7f3a"
EXPECTED = {
    "loop": {"timeout"},
    "fork_bomb": {"timeout", "resource_limit"},
    "alloc_8g": {"resource_limit"},
    "write_outside": {"runtime_error"},
    "read_host": {"runtime_error"},
    "network": {"runtime_error"},
    "fake_infra": {"runtime_error"},
    "output_100mb": {"resource_limit"},
}
TIME_LIMIT_S = 240  # a whole run incl. interpreter start and 7 compiles on a shared 2-core box; ~60 s idle


@pytest.fixture
def host_sentinel() -> Iterator[Path]:
    """A host file outside the work dir, in /tmp itself (not under pytest's tmp dir)."""
    fd, name = tempfile.mkstemp(prefix="doctune-hostile-secret-", dir="/tmp")
    os.write(fd, SENTINEL.encode())
    os.close(fd)
    yield Path(name)
    Path(name).unlink(missing_ok=True)


def hostile_doc(programs: dict[str, str]) -> str:
    parts = ["# Hostile examples\n\nEvery section below holds one complete Zig program. The programs are written "
             "to misbehave, and the validator must contain each of them.\n"]
    for name, code in programs.items():
        parts.append(f"## The {name.replace('_', ' ')} program\n\nThis section shows a complete program named "
                     f"{name}. It is compiled with the Zig compiler and then executed by the validator, which "
                     f"runs it in the sandbox with limits on time, memory, processes and output.\n\n"
                     f"```zig\n{code}```\n")
    return "\n".join(parts)


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def _verdicts_by_case(out: Path, programs: dict[str, str]) -> dict[str, str]:
    """Each stored pair's verdict, keyed by the hostile case whose program its response holds."""
    from tests.reliability.harness import stored_pairs

    got: dict[str, str] = {}
    for pair in stored_pairs(out).values():
        case = next((n for n, code in programs.items() if code.strip() in pair.response), None)
        if case is not None and pair.verdict is not None:
            got[case] = pair.verdict.verdict
    return got


def test_hostile_code_through_the_graph(host_sentinel: Path, tmp_path: Path, tally: dict[str, Any]) -> None:
    outside = Path(tempfile.gettempdir()) / f"doctune-hostile-written-{os.getpid()}.txt"
    outside.unlink(missing_ok=True)
    passwd_before = Path("/etc/passwd").read_bytes()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    programs = hostile_programs(host_sentinel, outside, listener.getsockname()[1])
    doc = tmp_path / "hostile.md"
    doc.write_text(hostile_doc(programs), encoding="utf-8")
    out = tmp_path / "out"
    env = clean_env(tmp_path, DOCTUNE_VALIDATOR__ZIG_CACHE_DIR=str(ZIG_CACHE),
                    DOCTUNE_VALIDATOR__RUN_TIMEOUT_S="3", DOCTUNE_VALIDATOR__MEMORY_MB="1024")
    bump(tally, "hostile", cases=len(programs))

    t0 = time.monotonic()
    r = run_cli(["run", str(doc), "--out", str(out), "--generator", "doc-examples"], env, timeout=TIME_LIMIT_S)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0 and no_traceback(r.stderr), r.stderr[-3000:]
    # No program output makes an infrastructure failure: no section is failed (and so never retried).
    assert "section(s) failed" not in r.stdout + r.stderr, r.stdout[-2000:]

    got = _verdicts_by_case(out, programs)
    contained = {k for k, want in EXPECTED.items() if got.get(k) in want}
    host_ok = (not outside.exists() and host_sentinel.read_text() == SENTINEL
               and Path("/etc/passwd").read_bytes() == passwd_before)
    try:
        listener.accept()
        connected = True
    except BlockingIOError:
        connected = False
    finally:
        listener.close()
    leaked = [str(p) for p in out.rglob("*") if p.is_file() and SENTINEL.encode() in p.read_bytes()]
    out_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    if host_ok and not connected and not leaked:
        bump(tally, "hostile", contained=len(contained))

    assert got.keys() == EXPECTED.keys(), f"cases without a verdict: {set(EXPECTED) - got.keys()}"
    assert contained == set(EXPECTED), {k: got[k] for k in set(EXPECTED) - contained}
    assert not _rows(out / "pairs.jsonl"), "a hostile program was accepted into the dataset"
    assert {r["reason"] for r in _rows(out / "rejected.jsonl")} <= set().union(*EXPECTED.values())
    assert host_ok, "the host was changed"
    assert not connected, "a sandboxed program reached a localhost port"
    assert not leaked, f"the host file's content reached the outputs: {leaked}"
    assert out_mb < 20, f"100 MB of output was not capped: the output dir holds {out_mb:.0f} MB"
    assert elapsed < TIME_LIMIT_S
    assert _uid_procs(SANDBOX_UID) == 0 or os.getuid() != 0, "a sandboxed process outlived the run"
