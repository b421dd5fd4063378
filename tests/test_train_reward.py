"""The GRPO reward (``doctune.trainer.reward``): which check a row gets, what program a completion becomes, the
score of a verdict, batching and caching — with a fake ``validate_many`` at the validator seam (no Zig), then
once with the real validator and Zig (marker ``zig``)."""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from doctune.core.errors import ToolchainError
from doctune.core.schemas import CodeCheck, Verdict
from doctune.trainer.reward import (
    LoopThread,
    RewardTask,
    ValidatorReward,
    classify_row,
    program_for,
    reward_tasks,
    score,
)

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = 'test "double" {\n    try std.testing.expectEqual(@as(i32, 8), double(4));\n}\n'
GOOD = "```zig\npub fn double(x: i32) i32 {\n    return x * 2;\n}\n```"
WRONG = "```zig\npub fn double(x: i32) i32 {\n    return x + 2;\n}\n```"
BROKEN = "```zig\npub fn double(x: i32) i32 {\n    return x * ;\n}\n```"
PROGRAM = '```zig\nconst std = @import("std");\npub fn main() void {\n    std.debug.print("hi\\n", .{});\n}\n```'


def row(answer: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Write `pub fn double(x: i32) i32`."},
                         {"role": "assistant", "content": answer}], "id": extra.pop("id", "r1"), **extra}


class FakeValidator:
    """Answers by content: `x * 2` passes, `x * ;` does not compile, `SANDBOX` is an infra fault, else a failed
    test; a `main` prints `hi`. Keeps a history of batches."""

    def __init__(self) -> None:
        self.history: list[list[CodeCheck]] = []

    async def __call__(self, checks: list[CodeCheck]) -> list[Verdict]:
        self.history.append(list(checks))
        return [self.judge(c) for c in checks]

    @staticmethod
    def judge(c: CodeCheck) -> Verdict:
        if "SANDBOX" in c.code:
            return Verdict(verdict="infra_error", stage="setup")
        if "x * ;" in c.code:
            return Verdict(verdict="compile_error", stage="compile", mode="test")
        if "pub fn main" in c.code:
            ok = c.expect is None or c.expect.stdout in (None, "hi\n")
            return Verdict(verdict="ok" if ok else "wrong_output", stage="run", mode="run", stdout="hi\n")
        if "x * 2" in c.code:
            return Verdict(verdict="ok", stage="test", mode="test")
        return Verdict(verdict="test_failure", stage="test", mode="test")


def test_each_row_gets_its_strongest_check() -> None:
    def check_of(r: dict[str, Any]) -> tuple[str, str] | None:
        got = classify_row(r, 0)
        return None if got is None else (got[1].check, got[1].mode)

    assert check_of(row(GOOD, tests=HIDDEN)) == ("hidden", "test")
    assert check_of(row(PROGRAM, expect_stdout="hi\n")) == ("hidden", "run")
    assert check_of(row(PROGRAM)) == ("reference", "run")
    assert check_of(row('```zig\ntest "t" {\n    try @import("std").testing.expect(true);\n}\n```')) == ("self", "test")
    assert check_of(row(GOOD)) == ("compile", "auto")
    assert check_of(row("Use `const` for constants.")) is None  # conceptual: nothing to verify
    # the reference's recorded verdict mode wins over what its code looks like
    assert check_of(row(PROGRAM, verdict={"mode": "obj"})) == ("compile", "auto")


def test_reference_programs_give_the_expected_stdout_in_one_batch() -> None:
    fake = FakeValidator()
    rows = [row(PROGRAM, id="p"), row(GOOD, tests=HIDDEN, id="h"), row("no code", id="c"),
            row(PROGRAM.replace("main", "main_"), id="x")]
    out, counts = asyncio.run(reward_tasks(rows, fake))
    assert len(fake.history) == 1 and [c.mode for c in fake.history[0]] == ["run"]
    assert [r["task_id"] for r in out] == ["p", "h", "x"]
    assert out[0]["check"] == "reference" and out[0]["expect_stdout"] == "hi\n"
    assert out[0]["prompt"] == [{"role": "user", "content": "Write `pub fn double(x: i32) i32`."}]
    assert counts == {"skipped": 1, "reference_failed": 0, "reference": 1, "hidden": 1, "compile": 1}


def test_a_failing_reference_drops_its_row() -> None:
    async def all_fail(checks: list[CodeCheck]) -> list[Verdict]:
        return [Verdict(verdict="runtime_error", stage="run") for _ in checks]

    out, counts = asyncio.run(reward_tasks([row(PROGRAM)], all_fail))
    assert out == [] and counts["reference_failed"] == 1


def test_hidden_tests_replace_the_answers_own_tests() -> None:
    task = RewardTask(task_id="t", check="hidden", mode="test", tests=HIDDEN)
    cheat = GOOD[:-4] + 'test "mine" {\n    try std.testing.expect(true);\n}\n```'
    prog = program_for(task, cheat)
    assert prog is not None and prog.mode == "test"
    assert HIDDEN in prog.code and '"mine"' not in prog.code
    assert program_for(task, "no code at all") is None
    assert program_for(task, GOOD.replace("return", "// SkipZigTest\n    return")) is None


@pytest.mark.parametrize(
    ("verdict", "stage", "expected"),
    [("ok", "test", 1.0), ("test_failure", "test", 0.5), ("runtime_error", "run", 0.5),
     ("wrong_output", "run", 0.5), ("timeout", "run", 0.5), ("timeout", "compile", 0.0),
     ("compile_error", "compile", 0.0), ("unsupported", "setup", 0.0), ("infra_error", "setup", None)],
)
def test_score_by_verdict(verdict: str, stage: str, expected: float | None) -> None:
    assert score(Verdict(verdict=verdict, stage=stage)) == expected  # type: ignore[arg-type]


def kwargs_for(tasks: list[RewardTask]) -> dict[str, list[Any]]:
    return {f: [getattr(t, f) for t in tasks] for f in RewardTask.model_fields}


def test_reward_batches_caches_and_logs(tmp_path: Path) -> None:
    fake, loop = FakeValidator(), LoopThread()
    try:
        reward = ValidatorReward(fake, tmp_path / "rewards.jsonl", loop)
        task = RewardTask(task_id="t", check="hidden", mode="test", tests=HIDDEN)
        completions = [[{"role": "assistant", "content": a}] for a in (GOOD, WRONG, BROKEN, "none", GOOD)]
        got = reward(prompts=[[]] * 5, completions=completions, **kwargs_for([task] * 5))
        assert got == [1.0, 0.5, 0.0, 0.0, 1.0]
        assert len(fake.history) == 1 and len(fake.history[0]) == 3  # one batch; the duplicate validated once
        again = reward(prompts=[[]] * 2, completions=completions[:2], **kwargs_for([task] * 2))
        assert again == [1.0, 0.5] and len(fake.history) == 1  # answered from the cache
    finally:
        loop.close()
    log = [json.loads(line) for line in (tmp_path / "rewards.jsonl").read_text().splitlines()]
    assert [r["validated"] for r in log] == [3, 0] and log[0]["no_code"] == 1 and log[1]["cached"] == 2
    assert log[0]["rewards"] == got and log[0]["mean"] == 0.5 and log[0]["passed"] == 2


def test_infra_faults_give_no_reward_and_are_not_cached(tmp_path: Path) -> None:
    fake, loop = FakeValidator(), LoopThread()
    task = RewardTask(task_id="t", check="compile", mode="auto")
    flaky = "```zig\n// SANDBOX\nconst a = 1;\n```"
    try:
        reward = ValidatorReward(fake, tmp_path / "rewards.jsonl", loop)
        assert reward(prompts=[[], []], completions=[flaky, GOOD], **kwargs_for([task] * 2)) == [None, 1.0]
        with pytest.raises(ToolchainError, match="infrastructure failed on every completion"):
            reward(prompts=[[]], completions=[flaky], **kwargs_for([task]))
        assert len(fake.history) == 2  # the infra fault was asked again, not cached
    finally:
        loop.close()


def test_trainer_floor_imports_neither_agents_nor_graph() -> None:
    others = {"evaluate.py"}  # another floor question, tracked with the evaluator
    bad = []
    for path in sorted((ROOT / "trainer").glob("*.py")):
        if path.name in others:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{path.name}: {n}" for n in names if n.startswith(("doctune.agents", "doctune.graph"))]
    assert bad == []


@pytest.mark.zig
def test_real_zig_rewards(tmp_path: Path) -> None:
    from doctune.agents.validator import validator_service
    from doctune.core.settings import ValidatorSettings

    settings = ValidatorSettings(cache_path=tmp_path / "verdicts.sqlite", concurrency=2)
    validate_many, close = validator_service(settings)
    loop = LoopThread()
    try:
        rows, _ = loop.run(reward_tasks([row(GOOD, tests=HIDDEN, id="h"), row(PROGRAM, id="p")], validate_many))
        assert rows[1]["expect_stdout"] == "" and rows[1]["check"] == "reference"  # debug.print goes to stderr
        reward = ValidatorReward(validate_many, tmp_path / "rewards.jsonl", loop)
        hidden = RewardTask(**{k: v for k, v in rows[0].items() if k != "prompt"})
        got = reward(prompts=[[]] * 4, completions=[GOOD, WRONG, BROKEN, "no code"], **kwargs_for([hidden] * 4))
        assert got == [1.0, 0.5, 0.0, 0.0]
        printer = RewardTask(**{k: v for k, v in rows[1].items() if k != "prompt"})
        stdout = PROGRAM.replace("std.debug.print", "std.io.getStdOut().writer().print").replace(".{});", ".{}) catch {};")
        assert reward(prompts=[[], []], completions=[PROGRAM, stdout], **kwargs_for([printer] * 2)) == [1.0, 0.5]
    finally:
        loop.run(close())
        loop.close()


def test_pairs_jsonl_keeps_what_the_reward_reads(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    from doctune.trainer.data import load_splits

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(r) for r in [
        row(PROGRAM, id="a", verdict={"verdict": "ok", "mode": "obj"}),
        row(GOOD, id="b", tests=HIDDEN),
    ]) + "\n")
    train, _ = load_splits(pairs)
    assert train[0]["mode"] == "obj" and train[1]["tests"] == HIDDEN and train[1]["id"] == "b"
    got = [classify_row(r, i) for i, r in enumerate(train)]
    assert [(g[1].check, g[1].mode) for g in got if g] == [("compile", "auto"), ("hidden", "test")]


def _cli(*args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", "from doctune.app.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600)


def test_cli_refuses_an_unknown_method_and_a_dataset_without_code(tmp_path: Path) -> None:
    proc = _cli("train", "--dataset", str(tmp_path), "--method", "dpo")
    assert proc.returncode == 2 and "--method 'dpo'" in proc.stderr and "Traceback" not in proc.stderr
    pytest.importorskip("trl")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(row("Use `const` for constants.")) + "\n")
    proc = _cli("train", "--dataset", str(pairs), "--method", "grpo", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "no training row has Zig code" in proc.stderr and "Traceback" not in proc.stderr
