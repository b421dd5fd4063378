"""Batched validation gives the same verdicts as one-by-one validation; the JSONL CLI contract."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from doctune.agents.validator import BlockInput, Validator
from doctune.agents.validator_batch import batch_kind
from doctune.core.schemas import Expect, Verdict
from doctune.core.settings import ValidatorSettings
from doctune.executors.local import LocalExecutor

from tests.test_validator import FAILING_TEST, PANIC, PASSING_TEST, ZIG_CACHE

pytestmark = pytest.mark.zig

STD = 'const std = @import("std");\n'
BLOCKS = [
    BlockInput(id="t1", code=PASSING_TEST),
    BlockInput(id="t2", code=PASSING_TEST.replace("1 + 1 == 2", "2 * 2 == 4")),
    BlockInput(id="t_fail", code=FAILING_TEST),
    BlockInput(id="t_bad", code=STD + 'test "bad" {\n    const x: u8 = 256;\n    _ = x;\n}\n'),
    BlockInput(
        id="p_ok",
        code=STD + "const Point = struct { x: i32 };\npub fn main() void {\n"
        '    std.debug.print("{}\\n", .{Point{ .x = 1 }});\n}\n',
        expect=Expect(),
    ),
    BlockInput(id="p_panic", code=PANIC),
    BlockInput(
        id="p_err",
        code=STD + "pub fn main() !void {\n    return error.Nope;\n}\n",
        expect=Expect(outcome="runtime_error"),
    ),
    BlockInput(id="p_exit3", code="pub fn main() u8 {\n    return 3;\n}\n"),
    BlockInput(id="p_bad", code="pub fn main() void {\n    undefinedName();\n}\n"),
]


def _run(**kw: object) -> tuple[list[Verdict], int]:
    settings = ValidatorSettings(cache=False, concurrency=2, **kw)  # type: ignore[arg-type]
    validator = Validator(settings, LocalExecutor(settings, zig_cache=ZIG_CACHE))

    async def go() -> list[Verdict]:
        try:
            return await validator.validate_many(BLOCKS)
        finally:
            await validator.aclose()

    return asyncio.run(go()), validator.batches


def test_batched_verdicts_match_single_runs() -> None:
    batched, n_batches = _run()
    single, n_single = _run(batch_tests=False, batch_programs=False)
    assert n_batches >= 2 and n_single == 0
    key = [(v.verdict, v.expected_met, v.stage, v.exit_code, v.mode) for v in batched]
    assert key == [(v.verdict, v.expected_met, v.stage, v.exit_code, v.mode) for v in single]
    got = {b.id: v for b, v in zip(BLOCKS, batched, strict=True)}
    assert got["t_fail"].verdict == "test_failure"
    assert got["t_fail"].tests is not None and got["t_fail"].tests.failed == 1
    assert got["t_fail"].tests.failed_names == single[2].tests.failed_names  # type: ignore[union-attr]
    assert got["t1"].tests is not None and got["t1"].tests.passed == 1
    assert got["t_bad"].verdict == "compile_error" and "doctune_blk" not in got["t_bad"].stderr
    assert "main.zig:3:19: error" in got["t_bad"].stderr
    assert got["p_ok"].verdict == "ok" and "main.Point{ .x = 1 }" in got["p_ok"].stderr
    assert got["p_panic"].verdict == "runtime_error" and "boom" in got["p_panic"].stderr
    assert got["p_err"].verdict == "runtime_error" and "error: Nope" in got["p_err"].stderr
    assert got["p_exit3"].verdict == "runtime_error" and got["p_exit3"].exit_code == 3
    assert got["p_bad"].verdict == "compile_error"


def test_what_is_never_batched() -> None:
    settings = ValidatorSettings(cache=False)
    v = Validator(settings, LocalExecutor(settings, zig_cache=ZIG_CACHE))
    assert batch_kind(v, BLOCKS[0]) == "test" and batch_kind(v, BLOCKS[5]) == "run"
    assert batch_kind(v, BLOCKS[0].model_copy(update={"expect": Expect(outcome="compile_error")})) is None
    # Expected stdout is compared after renaming the batch file's module to the block's: batched.
    assert batch_kind(v, BLOCKS[5].model_copy(update={"expect": Expect(stdout="x")})) == "run"
    assert batch_kind(v, BLOCKS[5].model_copy(update={"expect": Expect(error_contains="x")})) is None
    assert (
        batch_kind(v, BlockInput(id="r", code="pub const std_options = .{};\npub fn main() void {}\n"))
        is None
    )
    assert (
        batch_kind(v, BlockInput(id="l", code='extern "c" fn puts([*:0]const u8) c_int;\ntest {}\n')) is None
    )
    assert batch_kind(v, BLOCKS[0].model_copy(update={"files": {"x.zig": ""}})) is None


def test_cli_jsonl_contract(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from doctune.app.cli import app

    rows = [
        {"id": "b", "code": "const x: u8 = 300;\n", "expect": {"outcome": "compile_error"}},
        {"id": "a", "code": "fn f() u8 {\n    return 1;\n}\n"},
        {"id": "c", "code": 'const m = @import("missing.zig");\n'},
    ]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {
        "DOCTUNE_VALIDATOR__CACHE_PATH": str(tmp_path / "c.sqlite"),
        "DOCTUNE_VALIDATOR__ZIG_CACHE_DIR": str(ZIG_CACHE),
    }
    args = ["validate", "--jsonl", str(src), "--out", str(out), "--concurrency", "2", "--executor", "local"]
    res = CliRunner().invoke(app, args, env=env)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["b", "a", "c"]
    assert lines[0]["verdict"] == "compile_error" and lines[0]["expected_met"] is True
    assert lines[1]["verdict"] == "ok" and lines[1]["expected_met"] is None and lines[1]["compiled_only"]
    assert lines[2]["verdict"] == "unsupported"
    assert "validation summary" in res.output
    again = CliRunner().invoke(app, args, env=env)
    assert again.exit_code == 0
    assert all(x["cached"] for x in map(json.loads, out.read_text().splitlines()))
