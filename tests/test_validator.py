"""Validator verdicts with the real Zig 0.14.0 (sandboxed): run, test, both, fragments, expectations, cache."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

import pytest

from doctune.agents.validator import BlockInput, Validator
from doctune.core.schemas import Expect, Verdict
from doctune.core.settings import ValidatorSettings
from doctune.executors.local import LocalExecutor

pytestmark = pytest.mark.zig

ZIG_CACHE = Path(
    os.environ.get("DOCTUNE_TEST_ZIG_CACHE", Path(tempfile.gettempdir()) / "doctune-test-zig-cache")
)

HELLO = 'const std = @import("std");\npub fn main() !void {\n    try std.io.getStdOut().writer().print("hi\\n", .{});\n}\n'
PASSING_TEST = 'const std = @import("std");\ntest "adds" {\n    try std.testing.expect(1 + 1 == 2);\n}\n'
FAILING_TEST = 'const std = @import("std");\ntest "adds" {\n    try std.testing.expect(1 + 1 == 3);\n}\n'
BOTH = HELLO + PASSING_TEST.replace('const std = @import("std");\n', "")
BAD_FRAGMENT = "fn add(a: i32, b: i32) i32 {\n    return a + b;\n}\nconst small: u8 = 300;\n"
GOOD_FRAGMENT = (
    "fn add(a: i32, b: i32) i32 {\n    return a + b;\n}\nconst Point = struct { x: i32, y: i32 };\n"
)
PANIC = 'pub fn main() void {\n    @panic("boom");\n}\n'


def settings(tmp: Path, **kw: object) -> ValidatorSettings:
    return ValidatorSettings(cache_path=tmp / "verdicts.sqlite", concurrency=2, **kw)  # type: ignore[arg-type]


def make(tmp: Path, **kw: object) -> Validator:
    s = settings(tmp, **kw)
    return Validator(s, LocalExecutor(s, zig_cache=ZIG_CACHE))


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


async def _validate_all(v: Validator, blocks: list[BlockInput]) -> list[Verdict]:
    try:
        return await v.validate_many(blocks)
    finally:
        await v.aclose()


def test_classification_and_verdicts(tmp_path: Path) -> None:
    blocks = [
        BlockInput(id="hello", code=HELLO, expect=Expect(stdout="hi\n")),
        BlockInput(id="pass", code=PASSING_TEST),
        BlockInput(id="fail", code=FAILING_TEST),
        BlockInput(id="both", code=BOTH),
        BlockInput(id="bad_frag", code=BAD_FRAGMENT),
        BlockInput(id="good_frag", code=GOOD_FRAGMENT),
        BlockInput(id="panic", code=PANIC, expect=Expect(outcome="runtime_error", error_contains="boom")),
        BlockInput(id="wrong_out", code=HELLO, expect=Expect(stdout="bye\n")),
    ]
    got = {b.id: v for b, v in zip(blocks, run(_validate_all(make(tmp_path), blocks)), strict=True)}
    assert got["hello"].verdict == "ok" and got["hello"].mode == "run" and got["hello"].stdout == "hi\n"
    assert got["hello"].expected_met is True
    assert got["pass"].verdict == "ok" and got["pass"].mode == "test" and got["pass"].expected_met is None
    assert got["fail"].verdict == "test_failure" and got["fail"].stage == "run"
    assert got["both"].verdict == "ok" and got["both"].mode == "run"
    bad = got["bad_frag"]
    assert bad.verdict == "compile_error" and bad.compiled_only
    assert "main.zig:4:19: error: type 'u8' cannot represent integer value '300'" in bad.stderr
    assert got["good_frag"].verdict == "ok" and got["good_frag"].compiled_only
    assert got["good_frag"].evidence == "compiled"
    assert got["panic"].verdict == "runtime_error" and got["panic"].expected_met is True
    assert got["wrong_out"].verdict == "wrong_output" and got["wrong_out"].expected_met is False


def test_expected_compile_error_and_message(tmp_path: Path) -> None:
    code = 'test "x" {\n    const a: u8 = 256;\n    _ = a;\n}\n'
    v = make(tmp_path)
    right = Expect(outcome="compile_error", error_contains="cannot represent integer value '256'")
    wrong = Expect(outcome="compile_error", error_contains="no such message")
    r1 = run(v.validate(code, expect=right))
    r2 = run(v.validate(code, expect=wrong))
    run(v.aclose())
    assert r1.verdict == "compile_error" and r1.expected_met is True
    assert r2.verdict == "compile_error" and r2.expected_met is False


def test_missing_import_is_unsupported_and_files_are_written(tmp_path: Path) -> None:
    lib = "pub fn twice(x: i32) i32 {\n    return 2 * x;\n}\n"
    code = 'const lib = @import("lib.zig");\ntest "t" {\n    try @import("std").testing.expect(lib.twice(2) == 4);\n}\n'
    v = make(tmp_path)
    missing = run(v.validate(code))
    present = run(v.validate(code, files=[("lib.zig", lib)]))
    pkg = run(v.validate('const clap = @import("clap");\npub fn main() void { _ = clap; }\n'))
    run(v.aclose())
    assert missing.verdict == "unsupported" and "lib.zig" in missing.stderr
    assert present.verdict == "ok" and present.mode == "test"
    assert pkg.verdict == "unsupported"


def test_cache_hit_costs_no_compile(tmp_path: Path) -> None:
    v = make(tmp_path)
    first = run(v.validate(PASSING_TEST))
    n = v.executions
    second = run(v.validate(PASSING_TEST))
    other_mode = run(v.validate(PASSING_TEST, mode="obj"))
    run(v.aclose())
    assert not first.cached and second.cached and second.verdict == first.verdict == "ok"
    assert v.executions == n + 1  # only the different mode compiled
    assert not other_mode.cached


def test_timeout_kills_the_program(tmp_path: Path) -> None:
    v = make(tmp_path, run_timeout_s=2.0)
    r = run(v.validate("pub fn main() void {\n    while (true) {}\n}\n"))
    run(v.aclose())
    assert r.verdict == "timeout" and r.expected_met is None


def test_cli_single_file_prints_verdict_json(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from doctune.app.cli import app

    f = tmp_path / "bad.zig"
    f.write_text("pub fn main() void {\n    const x: u8 = 300;\n    _ = x;\n}\n")
    env = {
        "DOCTUNE_VALIDATOR__CACHE_PATH": str(tmp_path / "c.sqlite"),
        "DOCTUNE_VALIDATOR__ZIG_CACHE_DIR": str(ZIG_CACHE),
    }
    res = CliRunner().invoke(app, ["validate", str(f)], env=env)
    data = json.loads(res.stdout[res.stdout.index("{") :])
    assert data["id"] == "bad.zig" and data["verdict"] == "compile_error" and data["expected_met"] is None
    assert "bad.zig:2:19: error" in data["stderr"]


def test_fast_backend_is_opt_in_and_agrees(tmp_path: Path) -> None:
    from doctune.executors.base import ExecOptions, ExecRequest
    from doctune.executors.local import _fast_backend_ok

    assert _fast_backend_ok(ExecRequest(code=HELLO, mode="run"))
    assert not _fast_backend_ok(ExecRequest(code='extern "c" fn puts() void;\n', mode="run"))
    assert not _fast_backend_ok(ExecRequest(code=HELLO, mode="run", options=ExecOptions(link_libc=True)))
    ex = LocalExecutor(settings(tmp_path, fast_backend=True), zig_cache=ZIG_CACHE)
    cmd = ex.zig_command(
        ExecRequest(code=HELLO, mode="run"), "main.zig", zig="zig", out_dir="/o", emit=True, fast=True
    )
    assert cmd[-2:] == ["-fno-llvm", "-fno-lld"]
    blocks = [BlockInput(id="hello", code=HELLO), BlockInput(id="fail", code=FAILING_TEST)]
    fast = run(_validate_all(make(tmp_path, fast_backend=True, cache=False), blocks))
    assert [(v.verdict, v.stage) for v in fast] == [("ok", "run"), ("test_failure", "run")]


def test_doc_fragments_are_never_false_compile_errors(tmp_path: Path) -> None:
    """Issue 17: langref's "Floating Point Operations" program calls extern fns defined in a companion file
    (only an object file can be built: compiled_only ok), and "Runtime Integer Values" shows a function whose
    body only fails when used (the wrapper forced that: unsupported, not compile_error)."""
    companion = (
        "const print = @import(\"std\").debug.print;\nextern fn foo_strict(x: f64) f64;\n"
        'pub fn main() void {\n    print("strict = {}\\n", .{foo_strict(0.001)});\n}\n'
    )
    divide = "fn divide(a: i32, b: i32) i32 {\n    return a / b;\n}\n"
    blocks = [BlockInput(id="c", code=companion), BlockInput(id="d", code=divide)]
    c, d = run(_validate_all(make(tmp_path), blocks))
    assert c.verdict == "ok" and c.compiled_only and c.mode == "obj"
    assert d.verdict == "unsupported" and "signed integers must use @divTrunc" in d.stderr
