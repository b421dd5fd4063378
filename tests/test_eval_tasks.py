"""The shipped eval set (evals/zig-tasks.jsonl) and how answers become validated programs.

The zig tests check, with the real compiler in the sandboxed validator, that every reference passes its hidden
checks and every wrong variant fails them: a sample by default, all 60 tasks under ``slow``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from doctune.core.errors import InputError
from doctune.core.schemas import Expect
from doctune.core.settings import ValidatorSettings
from doctune.evals import DEFAULT_TASKS
from doctune.trainer.evaluate import pass_at_k, select_tasks
from doctune.trainer.tasks import (
    EvalTask,
    build_program,
    extract_code,
    find_test_blocks,
    load_tasks,
    strip_tests,
)

TASKS = load_tasks([DEFAULT_TASKS])
SAMPLE = ["strings-upper-alloc", "defer-errdefer-pair", "defer-order-run", "comptime-bit-width",
          "hashmaps-word-freq", "pointers-increment-all"]


def test_eval_set_shape() -> None:
    assert len(TASKS) >= 40
    topics = Counter(t.topic for t in TASKS)
    assert len(topics) >= 12 and all(topics.values())
    for t in TASKS:
        assert t.reference and t.wrong, t.id
        assert ("pub fn " in t.prompt or "program" in t.prompt), t.id  # exact signatures or a program spec
        if t.mode == "test":
            assert t.tests and find_test_blocks(t.tests) and t.expect_stdout is None, t.id
            assert t.tests not in t.prompt
        else:
            assert t.expect_stdout and not t.tests, t.id
    assert {t.mode for t in TASKS} == {"run", "test"}
    assert set(SAMPLE) <= {t.id for t in TASKS}


def test_longest_zig_block_wins() -> None:
    ans = "Use it:\n```zig\nconst x = 1;\n```\nImplementation:\n```zig\npub fn f() void {}\n// long\n```\n"
    assert extract_code(ans) == "pub fn f() void {}\n// long\n"
    assert extract_code("```\nconst a = 1;\n```\n```python\nprint(1)\n```") == "const a = 1;\n"
    assert extract_code("```zig\nfn a() void {}\n```\n```\nlonger untagged block here\n```") == "fn a() void {}\n"
    assert extract_code("no code at all, `inline` only") is None
    assert extract_code("```zig\n\n```") is None


def test_strip_tests_respects_strings_comments_and_nesting() -> None:
    code = (
        'const std = @import("std");\n/// doc of the test\ntest "a {" { const s = "}"; _ = s; }\n'
        "pub fn f() u8 { const testing = '}'; _ = testing; return 1; }\n"
        "const S = struct {\n    test { try std.testing.expect(true); }\n};\n"
        "test f {}\n// test \"commented\" {\n"
    )
    out = strip_tests(code)
    assert "test " not in out.replace('// test "commented" {', "") and "doc of the test" not in out
    assert "pub fn f() u8 { const testing = '}'; _ = testing; return 1; }" in out
    assert "const S = struct {" in out and '// test "commented" {' in out


TASK = EvalTask(id="t", prompt="p", mode="test", tests='test "hidden" { try std.testing.expect(f() == 2); }\n')


def test_program_appends_hidden_tests_and_drops_answer_tests() -> None:
    prog = build_program(TASK, '```zig\npub fn f() u8 { return 2; }\ntest "mine" { }\n```')
    assert prog.code is not None and prog.stripped_tests == 1
    assert 'test "mine"' not in prog.code and 'test "hidden"' in prog.code
    assert 'const std = @import("std");' in prog.code  # the hidden tests need std; the answer had none


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("I would write a function f.", "no code"),
        ('```zig\npub fn f() !u8 { return error.SkipZigTest; }\n```', "SkipZigTest"),
        ("```zig\nconst std = struct { pub const testing = struct {}; };\npub fn f() u8 { return 2; }\n```",
         "binds `std`"),
    ],
)
def test_program_refusals(answer: str, error: str) -> None:
    prog = build_program(TASK, answer)
    assert prog.code is None and error in (prog.error or "")


def test_pass_at_k() -> None:
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(5, 3, 3) == 1.0


def test_select_tasks_is_diverse_and_ordered() -> None:
    dataset = [EvalTask(id=f"d{i}", prompt="x", mode="run", source="dataset") for i in range(10)]
    pool = dataset + TASKS
    picked = select_tasks(pool, 12)
    assert len(picked) == 12
    assert sum(t.source == "dataset" for t in picked) == 6
    assert len({t.topic for t in picked if t.source == "zig-tasks"}) == 6
    assert [t.id for t in picked] == [t.id for t in pool if t in picked]


def _check_tasks(tasks: list[EvalTask]) -> list[str]:
    """Problems: references that do not pass, wrong variants that do."""
    from doctune.agents.validator import BlockInput, Validator

    blocks, what = [], []
    for t in tasks:
        for kind, code in [("reference", t.reference), *((f"wrong[{i}]", w) for i, w in enumerate(t.wrong))]:
            prog = build_program(t, f"```zig\n{code}```\n")
            assert prog.code is not None, (t.id, kind, prog.error)
            expect = Expect(stdout=t.expect_stdout) if t.mode == "run" else Expect()
            blocks.append(BlockInput(id=f"{t.id}/{kind}", code=prog.code, mode=t.mode, expect=expect))
            what.append((t.id, kind))

    async def go():
        v = Validator(ValidatorSettings())
        try:
            return await v.validate_many(blocks)
        finally:
            await v.aclose()

    problems = []
    for (tid, kind), verdict in zip(what, asyncio.run(go()), strict=True):
        assert verdict.verdict != "infra_error", verdict.stderr
        if verdict.passed != (kind == "reference"):
            problems.append(f"{tid} {kind}: {verdict.verdict} {verdict.stderr[:200]}")
    return problems


@pytest.mark.zig
def test_sample_references_pass_and_wrong_variants_fail() -> None:
    assert _check_tasks([t for t in TASKS if t.id in SAMPLE]) == []


@pytest.mark.zig
@pytest.mark.slow
def test_all_references_pass_and_all_wrong_variants_fail() -> None:
    assert _check_tasks(TASKS) == []


def test_dataset_rows_with_hidden_tests_or_a_stated_stdout_become_hidden_checked_tasks() -> None:
    from doctune.trainer.tasks import tasks_from_split

    def row(rid: str, answer: str, **extra: object) -> dict:
        return {"id": rid, "messages": [{"role": "user", "content": f"task {rid}"},
                                        {"role": "assistant", "content": f"```zig\n{answer}```\n"}], **extra}

    fn = "pub fn twice(x: i32) i32 {\n    return 2 * x;\n}\n"
    prog = 'const std = @import("std");\npub fn main() void {\n    std.debug.print("hi\\n", .{});\n}\n'
    tests = 'test "twice" {\n    try @import("std").testing.expectEqual(@as(i32, 4), twice(2));\n}\n'
    got = {t.id: t for t in tasks_from_split([row("a", fn, tests=tests), row("b", prog, expect_stdout="hi\n"),
                                              row("c", prog), row("d", fn)])}
    assert got["dataset-a"].mode == "test" and got["dataset-a"].tests == tests
    assert got["dataset-a"].checked_by == "hidden_tests"
    assert got["dataset-b"].mode == "run" and got["dataset-b"].checked_by == "expected_stdout"
    assert got["dataset-c"].expect_stdout is None  # calibrated later from running the reference
    assert "dataset-d" not in got  # declarations only, no tests: nothing can check an answer


def test_an_empty_task_file_is_an_error_not_a_score(tmp_path: Path) -> None:
    """`doctune export` can write no task (see its note); evaluating that file says so instead of pass@1 0.000."""
    empty = tmp_path / "eval-tasks.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="no eval tasks in .*eval-tasks.jsonl: nothing to evaluate"):
        load_tasks([empty])
