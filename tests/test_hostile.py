"""Hostile code under the bubblewrap sandbox: each case gets its verdict in bounded time, the host is untouched."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from doctune.agents.validator import BlockInput, Validator
from doctune.core.settings import ValidatorSettings
from doctune.executors import uids
from doctune.executors.local import LocalExecutor
from doctune.executors.sandbox import SANDBOX_UID, bwrap_path

from tests.test_validator import ZIG_CACHE

pytestmark = [
    pytest.mark.zig,
    pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap cannot create namespaces here"),
]

STD = 'const std = @import("std");\n'


def _main(body: str) -> str:
    return STD + "pub fn main() !void {\n" + body + "}\n"


def _uid_procs(uid: int) -> int:
    """Processes running as `uid` or as any sandbox uid this process holds (other processes' sandboxes, say another
    pytest worker's, run as uids of their own)."""
    mine = uids.POOL.held() | {uid}
    n = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                owner = d.stat().st_uid
            except OSError:
                continue
            n += owner in mine
    return n


def hostile_programs(secret: Path, outside: Path, port: int) -> dict[str, str]:
    """The hostile cases as Zig programs: `secret` is a host file to read, `outside` a path to create, `port` a
    listening localhost port to connect to (also used by the reliability suite through the whole graph)."""
    return {
        "loop": _main("    var x: u64 = 0;\n    while (true) { x +%= 1; std.mem.doNotOptimizeAway(x); }\n"),
        "fork_bomb": _main("    while (true) {\n        _ = std.posix.fork() catch continue;\n    }\n"),
        "alloc_8g": _main(
            "    const buf = try std.heap.page_allocator.alloc(u8, 8 << 30);\n    @memset(buf, 1);\n"
        ),
        "write_outside": _main(
            f'    const f = try std.fs.createFileAbsolute("{outside}", .{{}});\n    f.close();\n'
            '    const p = try std.fs.openFileAbsolute("/etc/passwd", .{ .mode = .write_only });\n    p.close();\n'
        ),
        "read_host": _main(
            f'    const f = try std.fs.openFileAbsolute("{secret}", .{{}});\n    var buf: [64]u8 = undefined;\n'
            "    const n = try f.read(&buf);\n    try std.io.getStdOut().writeAll(buf[0..n]);\n"
        ),
        "network": _main(
            f'    const addr = try std.net.Address.parseIp4("127.0.0.1", {port});\n'
            "    const s = try std.net.tcpConnectToAddress(addr);\n    s.close();\n"
        ),
        "fake_infra": _main(
            '    try std.io.getStdErr().writeAll("bwrap: Can\'t create file at /etc/x: Permission denied\\n");\n'
            "    std.process.exit(1);\n"
        ),
        "output_100mb": _main(
            "    const w = std.io.getStdOut().writer();\n    var line: [1024]u8 = undefined;\n"
            "    @memset(&line, 'x');\n    for (0..100 * 1024) |_| try w.writeAll(&line);\n"
        ),
    }


def test_hostile_code_is_contained(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-HOST-DATA")
    outside = tmp_path / "written_by_sandbox.txt"
    passwd_before = Path("/etc/passwd").read_bytes()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]

    blocks = hostile_programs(secret, outside, port)
    settings = ValidatorSettings(cache=False, concurrency=2, run_timeout_s=3.0, memory_mb=1024)
    validator = Validator(settings, LocalExecutor(settings, zig_cache=ZIG_CACHE))

    async def go() -> dict[str, object]:
        items = [BlockInput(id=k, code=c, mode="run") for k, c in blocks.items()]
        try:
            return dict(zip(blocks, await validator.validate_many(items), strict=True))
        finally:
            await validator.aclose()

    t0 = time.monotonic()
    got = asyncio.run(go())
    elapsed = time.monotonic() - t0
    verdicts = {k: v.verdict for k, v in got.items()}  # type: ignore[attr-defined]

    assert verdicts["loop"] == "timeout"
    assert verdicts["fork_bomb"] in ("timeout", "resource_limit")
    assert verdicts["alloc_8g"] == "resource_limit"
    assert verdicts["write_outside"] == "runtime_error"
    assert verdicts["read_host"] == "runtime_error"
    assert "TOP-SECRET" not in got["read_host"].stdout  # type: ignore[attr-defined]
    assert verdicts["network"] == "runtime_error"
    assert verdicts["fake_infra"] == "runtime_error"  # its stderr mimics bwrap; the sandbox started fine
    assert verdicts["output_100mb"] == "resource_limit"
    assert len(got["output_100mb"].stdout) <= 4096 + 64  # type: ignore[attr-defined]
    assert elapsed < 300, f"hostile suite took {elapsed:.0f}s"

    # The host is untouched: no file written, passwd intact, no connection, no process left behind.
    assert not outside.exists()
    assert Path("/etc/passwd").read_bytes() == passwd_before
    with pytest.raises(BlockingIOError):
        listener.accept()
    listener.close()
    assert _uid_procs(SANDBOX_UID) == 0 or os.getuid() != 0


def test_refuses_to_run_without_sandbox_unless_opted_in(monkeypatch: pytest.MonkeyPatch) -> None:
    from doctune.core.errors import ToolchainError
    from doctune.executors import sandbox

    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    with pytest.raises(ToolchainError, match="unsafe-no-sandbox"):
        LocalExecutor(ValidatorSettings(), zig_cache=ZIG_CACHE)
    ex = LocalExecutor(ValidatorSettings(sandbox="none", unsafe_no_sandbox=True), zig_cache=ZIG_CACHE)
    assert not ex.sandboxed
    with pytest.raises(ToolchainError):
        LocalExecutor(ValidatorSettings(sandbox="none"), zig_cache=ZIG_CACHE)
