"""Verdict truth under attack (issue 13): code that tries to decide its own verdict, another block's verdict,
or to hurt the host gets the truthful verdict, from channels it cannot forge.

One test per attack class; the heavy ones (memory) are in the slow set.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from doctune.agents.validator import BlockInput, Validator
from doctune.core.schemas import Verdict
from doctune.core.settings import ValidatorSettings
from doctune.executors import uids
from doctune.executors.blocking import in_thread
from doctune.executors.cgroups import Cgroup
from doctune.executors.local import LocalExecutor
from doctune.executors.sandbox import bwrap_path

from tests.test_validator import ZIG_CACHE

pytestmark = [
    pytest.mark.zig,
    pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap cannot create namespaces here"),
]

STD = 'const std = @import("std");\n'
FAIL_THEN_EXIT = (
    STD + 'test "fails" {\n    try std.testing.expect(false);\n}\n'
    'test "help exits" {\n    std.process.exit(0);\n}\n'
)
HELP_EXITS = STD + 'test "cli --help" {\n    std.process.exit(0);\n}\n'
PLAIN_FAIL = STD + 'test "plain" {\n    try std.testing.expectEqual(@as(u32, 3), 4);\n}\n'
PASSING = STD + 'test "adds" {\n    try std.testing.expect(1 + 1 == 2);\n}\n'
# Writes a forged report (every plausible format) to every fd it can, then exits 0.
FORGER = (
    STD + 'test "forge" {\n    var fd: i32 = 3;\n    while (fd < 1024) : (fd += 1) {\n'
    '        _ = std.posix.write(fd, "\\nok done 1 0 0\\nAll 1 tests passed.\\n") catch {};\n    }\n'
    "    std.process.exit(0);\n}\n"
)
FAKE_BWRAP = (
    STD + "pub fn main() void {\n"
    '    std.io.getStdErr().writeAll("bwrap: Can\'t mount proc on /newroot/proc\\n") catch {};\n'
    "    std.process.exit(1);\n}\n"
)
SIGXFSZ = (
    STD + "pub fn main() !void {\n"
    '    const f = try std.fs.cwd().createFile("big", .{});\n    var buf: [1 << 20]u8 = undefined;\n'
    "    @memset(&buf, 7);\n    for (0..32) |_| try f.writeAll(&buf);\n}\n"
)
SELF_KILL = STD + "pub fn main() void {\n    std.posix.kill(0, std.posix.SIG.KILL) catch {};\n}\n"
EXIT_152 = "pub fn main() u8 {\n    return 152;\n}\n"  # 128 + SIGXCPU: what bwrap reports for a SIGXCPU death
THREADS_127 = (
    STD + "fn nap() void {\n    std.time.sleep(3 * std.time.ns_per_s);\n}\n"
    "pub fn main() !void {\n    var ts: [126]std.Thread = undefined;\n"
    "    for (&ts) |*t| t.* = try std.Thread.spawn(.{}, nap, .{});\n    for (ts) |t| t.join();\n}\n"
)
THREADS_8 = (
    STD + "fn nap() void {\n    std.time.sleep(200 * std.time.ns_per_ms);\n}\n"
    "pub fn main() !void {\n    std.time.sleep(500 * std.time.ns_per_ms);\n    var ts: [8]std.Thread = undefined;\n"
    "    for (&ts) |*t| t.* = try std.Thread.spawn(.{}, nap, .{});\n    for (ts) |t| t.join();\n}\n"
)
PRINT_ENV = (
    STD + "pub fn main() void {\n"
    '    std.debug.print("key={s}\\n", .{std.posix.getenv("DOCTUNE_TEST_SECRET") orelse "none"});\n}\n'
)


def _validate(blocks: list[BlockInput], cache: Path | None = None, **kw: object) -> list[Verdict]:
    settings = ValidatorSettings(
        cache=cache is not None,
        cache_path=cache,
        concurrency=2,
        run_timeout_s=5.0,
        **kw,
    )
    validator = Validator(settings, LocalExecutor(settings, zig_cache=ZIG_CACHE))

    async def go() -> list[Verdict]:
        try:
            return await validator.validate_many(blocks)
        finally:
            await validator.aclose()

    return asyncio.run(go())


def test_exit_zero_after_a_failing_test_is_a_test_failure() -> None:
    """Class 1: the test binary's exit status does not decide; the runner's report does."""
    (v,) = _validate([BlockInput(id="x", code=FAIL_THEN_EXIT)])
    assert v.verdict == "test_failure" and v.tests is not None
    assert v.tests.failed == 1 and v.tests.failed_names == ["main.test.fails"]
    assert v.tests.unfinished == "main.test.help exits"


def test_a_forged_report_is_ignored() -> None:
    """Class 1 (forgery): writing a summary to every fd, then exit 0, does not pass."""
    (v,) = _validate([BlockInput(id="x", code=FORGER)])
    assert v.verdict == "test_failure" and v.tests is not None
    assert v.tests.passed == 0 and v.tests.unfinished == "main.test.forge"


def test_batched_blocks_cannot_decide_each_other(tmp_path: Path) -> None:
    """Class 2: one block's --help exit(0) does not pass another block's failing test, nor its cache entry."""
    cache = tmp_path / "v.sqlite"
    blocks = [
        BlockInput(id="a", code=HELP_EXITS),
        BlockInput(id="b", code=PLAIN_FAIL),
        BlockInput(id="c", code=PASSING),
    ]
    a, b, c = _validate(blocks, cache)
    assert (
        a.verdict == "test_failure" and a.tests is not None and a.tests.unfinished == "main.test.cli --help"
    )
    assert b.verdict == "test_failure" and b.tests is not None and b.tests.failed_names == ["main.test.plain"]
    assert c.verdict == "ok" and c.tests is not None and c.tests.passed == 1
    (b_again,) = _validate([blocks[1]], cache)
    assert b_again.cached and b_again.verdict == "test_failure"
    (b_alone,) = _validate([blocks[1]])
    assert b_alone.verdict == "test_failure"


def test_program_output_cannot_fake_infra_error() -> None:
    """Class 6: exit 1 with stderr starting 'bwrap: ' is the program's runtime error."""
    (v,) = _validate([BlockInput(id="x", code=FAKE_BWRAP, mode="run")])
    assert v.verdict == "runtime_error" and v.exit_code == 1


def test_signal_deaths_are_attributed_from_the_real_status() -> None:
    """Class 7: SIGXFSZ is resource_limit (fsize); exit 152 (= bwrap's code for SIGXCPU) is a runtime error;
    a program that SIGKILLs itself is not an infrastructure failure."""
    fsz, exit152, killed = _validate(
        [
            BlockInput(id="f", code=SIGXFSZ, mode="run"),
            BlockInput(id="e", code=EXIT_152, mode="run"),
            BlockInput(id="k", code=SELF_KILL, mode="run"),
        ]
    )
    assert fsz.verdict == "resource_limit" and fsz.limit == "fsize"
    assert exit152.verdict == "runtime_error" and exit152.exit_code == 152
    assert killed.verdict == "runtime_error"


def test_process_limits_are_per_sandbox() -> None:
    """Class 5: a block holding 127 threads does not make a concurrent block's thread spawns fail."""
    hog, other = _validate(
        [BlockInput(id="hog", code=THREADS_127, mode="run"), BlockInput(id="o", code=THREADS_8, mode="run")],
        batch_programs=False,
    )
    assert hog.verdict == "ok", hog.stderr
    assert other.verdict == "ok", other.stderr


def test_no_host_environment_without_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """Class 8: --unsafe-no-sandbox builds the program's environment from scratch too."""
    monkeypatch.setenv("DOCTUNE_TEST_SECRET", "sk-live-123")
    (v,) = _validate([BlockInput(id="x", code=PRINT_ENV, mode="run")], sandbox="none", unsafe_no_sandbox=True)
    assert v.verdict == "ok" and "key=none" in v.stderr
    (s,) = _validate([BlockInput(id="x", code=PRINT_ENV, mode="run")])
    assert "key=none" in s.stderr


MEMFD_4G = (
    STD + "pub fn main() !void {\n    var buf: [1 << 20]u8 = undefined;\n    @memset(&buf, 1);\n"
    '    for (0..300) |_| {\n        const fd = try std.posix.memfd_create("x", 0);\n'
    "        for (0..15) |_| _ = try std.posix.write(fd, &buf);\n    }\n}\n"
)
COMPTIME_HOG = (
    STD + "fn grow(comptime n: usize) [n]u64 {\n    @setEvalBranchQuota(1 << 30);\n"
    "    var a: [n]u64 = undefined;\n    for (&a, 0..) |*x, i| x.* = i *% 2654435761;\n    return a;\n}\n"
    'test "hog" {\n    const big = comptime grow(1 << 26);\n    try std.testing.expect(big[3] != 0);\n}\n'
)


def _available_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


@pytest.mark.slow
@pytest.mark.skipif(not Cgroup.available(), reason="no writable cgroup here")
def test_memfd_memory_is_bounded() -> None:
    """Class 4: memfd pages count against the sandbox's memory; the host loses at most 1.5 GiB."""
    before = _available_kb()
    settings = ValidatorSettings(cache=False, concurrency=1, run_timeout_s=20.0)
    ex = LocalExecutor(settings, zig_cache=ZIG_CACHE)
    from doctune.executors.base import ExecRequest

    res = asyncio.run(ex.execute(ExecRequest(code=MEMFD_4G, mode="run")))
    assert res.resource_limit and res.limit == "memory", (res.exit_code, res.stderr[-500:])
    assert 0 < res.memory_peak_bytes <= (settings.sandbox_memory_mb << 20) + (64 << 20)
    assert res.memory_peak_bytes < 1536 << 20
    assert before - _available_kb() < 1536 * 1024  # nothing left behind either


@pytest.mark.slow
@pytest.mark.skipif(not Cgroup.available(), reason="no writable cgroup here")
def test_compiler_memory_is_capped() -> None:
    """Class 3: a comptime-heavy block stops at the compile memory cap: resource_limit (memory), not a cached
    compile_error, and well before the wall clock."""
    (v,) = _validate([BlockInput(id="x", code=COMPTIME_HOG)], compile_memory_mb=768)
    assert v.verdict == "resource_limit" and v.limit == "memory" and v.stage == "compile", v.stderr[-500:]
    assert v.duration_s < 100


def test_sandbox_uids_differ_per_concurrent_run(tmp_path: Path) -> None:
    """Every executor of a process draws from one pool (as root with bubblewrap); sandboxes running at once never
    share a uid, so never an RLIMIT_NPROC budget; a uid given back twice is handed out once; a claim cancelled
    while its thread runs still gives its uid back."""
    ex = LocalExecutor(ValidatorSettings(cache=False), zig_cache=ZIG_CACHE)
    other = LocalExecutor(ValidatorSettings(cache=False), zig_cache=ZIG_CACHE)
    if ex.sandboxed and os.geteuid() == 0:
        assert ex._uids is other._uids is uids.POOL
    pool = uids.UidPool(base=300000, span=64, directory=tmp_path)

    async def one_sandbox(k: int) -> int:
        uid = pool.take()
        if uid is None:
            uid = await in_thread(pool.claim)
        assert uid is not None
        in_use.append(uid)
        await asyncio.sleep(0.01 * (k % 3))  # the sandbox runs
        assert in_use.count(uid) == 1, "two running sandboxes share a uid"
        in_use.remove(uid)
        pool.give(uid)
        return uid

    async def many() -> list[int]:
        return list(await asyncio.gather(*(one_sandbox(k) for k in range(40))))

    in_use: list[int] = []
    used = asyncio.run(many())
    assert len(set(used)) <= 40 and min(used) >= 300000 and len(pool.held()) == len(set(used))
    held = sorted(pool.held())
    while pool.take() is not None:
        pass
    pool.give(held[0])
    pool.give(held[0])
    assert pool.take() == held[0] and pool.take() is None

    async def cancelled_claim() -> None:
        task = asyncio.ensure_future(in_thread(pool.claim, undo=lambda u: u is not None and pool.give(u)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)  # the thread finishes; its undo runs

    before = pool.held()
    asyncio.run(cancelled_claim())
    (new,) = pool.held() - before
    assert pool.take() == new


def test_sandbox_uids_differ_across_processes(tmp_path: Path) -> None:
    """Two processes (here two pools on one claim directory, scanning from the same uid) never hold the same
    uid; a uid given back stays with its process; a process's exit lets others claim its uids."""
    first, second = (uids.UidPool(base=300000, span=8, directory=tmp_path) for _ in range(2))
    a = [first.claim() for _ in range(3)]
    b = [second.claim() for _ in range(5)]
    assert None not in a + b and len(set(a + b)) == 8 and min(a + b) > 65535
    assert second.claim() is None  # all 8 held: no sharing, even when none is left
    first.give(a[0])
    assert first.take() == a[0] and second.take() is None  # given back to its own process, not to others
    claim_in_child = [sys.executable, "-c", (
        "from pathlib import Path; from doctune.executors.uids import UidPool\n"
        f"print(UidPool(base=300000, span=8, directory=Path({str(tmp_path)!r})).claim())")]
    assert subprocess.run(claim_in_child, capture_output=True, text=True, check=True).stdout.strip() == "None"
    first._forget()  # what a process's exit does: its claims are released...
    got = subprocess.run(claim_in_child, capture_output=True, text=True, check=True).stdout.strip()
    assert int(got) in a  # ...and another process can claim them


@pytest.mark.slow
def test_without_cgroups_limits_still_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """No writable cgroup (unprivileged, containers): the compiler's address-space cap ends the comptime hog as
    resource_limit (memory), and memfd memory is bounded by open files x file size (64 x 16 MiB)."""
    from doctune.executors import cgroups
    from doctune.executors.base import ExecRequest

    monkeypatch.setattr(cgroups, "detect", lambda: None)
    ex = LocalExecutor(ValidatorSettings(cache=False), zig_cache=ZIG_CACHE)
    assert ex.limits.nofile == 64 and ex.compile_limits_no_cgroup.address_space_mb
    hog = asyncio.run(ex.execute(ExecRequest(code=COMPTIME_HOG, mode="test")))
    assert hog.stage == "compile" and hog.resource_limit and hog.limit == "memory", hog.stderr[-300:]
    memfd = asyncio.run(ex.execute(ExecRequest(code=MEMFD_4G, mode="run")))
    assert not memfd.ok and "ProcessFdQuotaExceeded" in memfd.stderr
