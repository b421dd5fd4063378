"""Process running (no Zig needed): output caps without blocking, decoding, group kill on timeout; cache; source
classification and fragment wrapping."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from doctune.core.schemas import Verdict
from doctune.executors.cache import VerdictCache
from doctune.executors.proc import run_process
from doctune.executors.zigsrc import classify, missing_imports, top_level_names, trim_output, wrap_fragment


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_output_cap_does_not_block_the_child() -> None:
    # 8 MiB on each stream: a child that is not drained would block on the pipe and time out.
    code = "import sys\nfor _ in range(128):\n sys.stdout.write('o'*65536); sys.stderr.write('e'*65536)\n"
    res = asyncio.run(run_process(_py(code), timeout_s=30, cap=4096, kill_after=1 << 40))
    assert res.returncode == 0 and not res.timed_out and res.truncated
    assert res.stdout == "o" * 4096 and res.stderr == "e" * 4096


def test_runaway_output_is_killed_early() -> None:
    t0 = time.monotonic()
    res = asyncio.run(
        run_process(_py("while True: print('x' * 1000)"), timeout_s=30, cap=1024, kill_after=65536)
    )
    assert res.output_exceeded and not res.timed_out and time.monotonic() - t0 < 10
    assert len(res.stdout) == 1024


def test_non_utf8_output_is_replaced() -> None:
    res = asyncio.run(
        run_process(_py("import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe end')"), timeout_s=30)
    )
    assert res.stdout == "ok \ufffd\ufffd end"


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen(['sleep', '300'])\nopen({str(pidfile)!r}, 'w').write(str(p.pid))\ntime.sleep(300)\n"
    )
    t0 = time.monotonic()
    res = asyncio.run(run_process(_py(code), timeout_s=2))
    assert res.timed_out and res.signal == 9 and time.monotonic() - t0 < 10
    grandchild = int(pidfile.read_text())
    time.sleep(0.2)
    try:
        os.kill(grandchild, 0)
        alive = Path(f"/proc/{grandchild}/stat").read_text().split()[2] != "Z"
    except ProcessLookupError:
        alive = False
    assert not alive


def test_start_failure_is_reported() -> None:
    res = asyncio.run(run_process(["/nonexistent/binary"], timeout_s=5))
    assert res.returncode is None and "cannot start" in (res.start_error or "")


def test_verdict_cache_roundtrip(tmp_path: Path) -> None:
    c = VerdictCache(tmp_path / "v.sqlite")
    v = Verdict(verdict="compile_error", stage="compile", stderr="main.zig:1:1: error: x")
    c.put("k", v)
    c.put("infra", Verdict(verdict="infra_error"))
    got = c.get("k")
    assert got is not None and got.cached and got.verdict == "compile_error" and got.stderr == v.stderr
    assert c.get("infra") is None and c.get("missing") is None and len(c) == 1
    c.close()
    assert VerdictCache(tmp_path / "v.sqlite").get("k") is not None  # persisted


def test_classification() -> None:
    assert classify("pub fn main() void {}\n") == "run"
    assert classify('test "x" {}\n') == "test"
    assert classify("test {}\npub fn main() void {}\n") == "both"
    assert classify('// test "commented"\nconst s = "pub fn main() void {}";\n') == "fragment"
    assert classify("test hello {}\n") == "test"


def test_imports_and_fragment_wrapping() -> None:
    code = 'const std = @import("std");\nconst lib = @import("lib.zig");\nconst c = @import("clap");\n'
    assert missing_imports(code, {}) == ["lib.zig", "clap"]
    assert missing_imports(code, {"lib.zig": ""}) == ["clap"]
    frag = (
        "pub fn add(a: i32) i32 {\n    const inner = 1;\n    return a + inner;\n}\nconst Point = struct {};\n"
    )
    assert top_level_names(frag) == ["add", "Point"]
    wrapped = wrap_fragment(frag)
    assert wrapped.startswith(frag) and "_ = &add;" in wrapped and "_ = &inner;" not in wrapped


def test_trim_keeps_first_error_lines() -> None:
    noise = "".join(f"note line {i}\n" for i in range(2000))
    text = "Build Summary\n" + "main.zig:3:5: error: expected ';'\n    x\n    ^\n" + noise
    out = trim_output(text, 4096)
    assert out.startswith("main.zig:3:5: error: expected ';'") and len(out) <= 4096 + 64 and "trimmed" in out


def test_side_channel_pipe_is_drained_and_returned() -> None:
    from doctune.executors.proc import Channel

    ch = Channel("report")
    code = f"import os\nfor _ in range(64):\n os.write({ch.write_fd}, b'r' * 4096)\n"
    res = asyncio.run(run_process(_py(code), timeout_s=30, channels=[ch]))
    # 256 KiB: more than a pipe buffer, so the child would block if the channel were read only at the end.
    assert res.returncode == 0 and res.channels["report"] == b"r" * (64 * 4096)


def test_runner_report_trusts_only_nonce_records() -> None:
    from doctune.executors.channels import parse_report, parse_status

    n = "ab" * 16
    forged = b"\nffffffff done 1 0 0\nAll 1 tests passed.\n" + b"x" * 10
    data = forged + f"{n} start 0 main.test.a\n{n} fail 0 TestUnexpectedResult\n".encode()
    data += f"\n{n} start 1 main.test.b\n".encode() + forged + f"{n} pass 1 \n".encode()
    data += f"\n{n} start 2 main.test.exits\n".encode()
    rep = parse_report(data, n)
    assert not rep.finished and rep.counts.failed_names == ["main.test.a"] and rep.counts.passed == 1
    assert rep.counts.unfinished == "main.test.exits"
    done = parse_report(data + f"\n{n} pass 2 \n\n{n} done 2 1 0\n".encode(), n)
    assert done.finished and done.counts.unfinished is None and done.counts.passed == 2
    # A record for a test that never started, or after the final record, counts for nothing.
    late = parse_report(f"{n} pass 7 \n{n} done 0 0 0\n{n} start 3 x\n{n} fail 3 e\n".encode(), n)
    assert late.finished and late.counts.passed == 0 and late.counts.failed == 0
    # Exit status: the supervisor's line wins over bwrap's 128+n; no child pid means the sandbox never started.
    st = parse_status(b'{ "child-pid": 7 }\n{ "exit-code": 152 }\n', b"signal 24\n", 152)
    assert st.started and st.signal == 24 and st.exit_code is None
    assert parse_status(b"", b"", 1).started is False
    assert parse_status(None, b"", 3).exit_code == 3
