"""`doctune export RUN_DIR`: a run's test split becomes eval tasks (hidden tests or a stated stdout) that
`doctune eval --tasks` reads, decontaminated against the train split, with an answers file of the run's own
solutions: those score pass@1 = 1.0 with the real Zig compiler, stubs (bodies replaced) 0.0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from doctune.agents.dataset import export_eval_tasks, export_run, load_dataset_dict
from doctune.core.schemas import Attempt, Expect, Pair
from doctune.core.settings import load_settings

STD = 'const std = @import("std");\n'
# (instruction, solution, stub, hidden tests | None, stated stdout | None): two exercises per section
EXERCISES = {
    "sa": [
        ("Write `pub fn double(x: i32) i32` in Zig 0.14: it returns twice its argument.",
         "pub fn double(x: i32) i32 {\n    return x * 2;\n}\n",
         "pub fn double(x: i32) i32 {\n    _ = x;\n    return 0;\n}\n",
         'test "double" {\n    try std.testing.expectEqual(@as(i32, 8), double(4));\n'
         '    try std.testing.expectEqual(@as(i32, -6), double(-3));\n}\n', None),
        ("Write a Zig 0.14 program that prints the squares of 1 to 5 on one line, separated by spaces.",
         STD + "pub fn main() !void {\n    const out = std.io.getStdOut().writer();\n"
         "    for (1..6) |i| try out.print(\"{d}{s}\", .{ i * i, if (i < 5) \" \" else \"\\n\" });\n}\n",
         STD + "pub fn main() !void {}\n", None, "1 4 9 16 25\n"),
    ],
    "sb": [
        ("Write `pub fn clampByte(v: i64) u8` in Zig 0.14 that limits a value to the range 0..255.",
         "pub fn clampByte(v: i64) u8 {\n    if (v < 0) return 0;\n    if (v > 255) return 255;\n"
         "    return @intCast(v);\n}\n",
         "pub fn clampByte(v: i64) u8 {\n    _ = v;\n    return 7;\n}\n",
         'test "clamp" {\n    try std.testing.expectEqual(@as(u8, 0), clampByte(-4));\n'
         '    try std.testing.expectEqual(@as(u8, 255), clampByte(999));\n'
         '    try std.testing.expectEqual(@as(u8, 42), clampByte(42));\n}\n', None),
        ("Write a Zig 0.14 program whose output is the word count of the sentence `zig is fun`, as `words=3`.",
         STD + "pub fn main() !void {\n    var it = std.mem.tokenizeScalar(u8, \"zig is fun\", ' ');\n"
         "    var n: usize = 0;\n    while (it.next()) |_| n += 1;\n"
         "    try std.io.getStdOut().writer().print(\"words={d}\\n\", .{n});\n}\n",
         STD + "pub fn main() !void {\n    try std.io.getStdOut().writer().print(\"words=0\\n\", .{});\n}\n",
         None, "words=3\n"),
    ],
}


def answer(code: str) -> str:
    return f"Here it is:\n\n```zig\n{code}```\n"


def make_pairs() -> tuple[list[Pair], dict[str, str]]:
    """The run's accepted pairs (exercises, plus a conceptual pair and a pair whose tests were never proven per
    section) and the stub answer of each exercise by pair id."""
    pairs, stubs = [], {}
    for sid, exercises in EXERCISES.items():
        src, head = f"{sid}.md", f"Guide {sid} > Topic"
        for k, (ins, sol, stub, tests, stdout) in enumerate(exercises):
            pid = f"{sid}-{k}"
            pairs.append(Pair(id=pid, section_id=sid, heading_path=head, source=src, instruction=ins,
                              response=answer(sol), generator="llm:m", tests=tests,
                              expect=Expect(stdout=stdout) if stdout else None,
                              evidence="tested" if tests else "ran",
                              attempts=[Attempt(n=n) for n in range(k + 1)]))
            stubs[pid] = answer(stub)
        pairs.append(Pair(id=f"{sid}-why", section_id=sid, heading_path=head, source=src, kind="conceptual",
                          instruction=f"Why does section {sid} use comptime?", response="Because it can.",
                          generator="llm:m", evidence="conceptual", attempts=[Attempt(n=0)]))
        pairs.append(Pair(id=f"{sid}-weak", section_id=sid, heading_path=head, source=src,
                          instruction=f"Write `pub fn one_{sid}() u8` returning one.",
                          response=answer(f"pub fn one_{sid}() u8 {{\n    return 1;\n}}\n"), generator="llm:m",
                          tests=f'test "one" {{\n    try std.testing.expect(one_{sid}() == 1);\n}}\n',
                          evidence="compiled", attempts=[Attempt(n=0)]))
    return pairs, stubs


def build_run(root: Path, pairs: list[Pair]) -> Path:
    """A run dir as the graph's export node leaves it (pairs.jsonl, dataset/ with its card)."""
    root.mkdir(parents=True, exist_ok=True)
    sections = sorted({p.section_id for p in pairs})
    results = [{"section_id": s, "generated": sum(p.section_id == s for p in pairs),
                "accepted": [p.id for p in pairs if p.section_id == s], "rejected": [],
                "repairs": {p.id: len(p.attempts) - 1 for p in pairs if p.section_id == s},
                "tokens": {"input": 0, "output": 0}, "error": None, "source": f"{s}.md",
                "heading_path": f"Guide {s} > Topic", "evidence": {p.id: p.evidence for p in pairs if p.section_id == s}}
               for s in sections]
    state = {"results": results, "kept": [p.id for p in pairs], "dropped": []}
    export_run(root, {p.id: p for p in pairs}, state, load_settings(dataset={"test_size": 0.5}))
    return root


def test_dataset_columns_carry_tests_stdout_and_difficulty(tmp_path: Path) -> None:
    pairs, _ = make_pairs()
    data = load_dataset_dict(build_run(tmp_path, pairs))
    rows = {r["id"]: r for split in ("train", "test") for r in data[split]}
    assert rows["sa-0"]["tests"].startswith('test "double"') and rows["sa-0"]["expect_stdout"] is None
    assert rows["sa-1"]["expect_stdout"] == "1 4 9 16 25\n" and rows["sa-1"]["tests"] is None
    assert (rows["sa-0"]["attempts"], rows["sa-0"]["difficulty"]) == (1, "easy")
    assert (rows["sa-1"]["attempts"], rows["sa-1"]["difficulty"]) == (2, "medium")
    assert len(data["test"]) == 4 and len({r["section_id"] for r in data["test"]}) == 1
    card = (tmp_path / "dataset" / "README.md").read_text()
    for src in ("sa.md", "sb.md"):  # yield by source: sections, generated, accepted by evidence, repairs
        assert f"| {src} | 1 | 4 | 4: tested 1, ran 1, compiled 1, conceptual 1 | 0 | 1 (1) |" in card
    assert "| Guide sa > Topic | 1 | 4 |" in card and "easy: 6, medium: 2" in card


def test_export_keeps_proven_checks_and_says_why_the_rest_went(tmp_path: Path) -> None:
    pairs, _ = make_pairs()
    run = build_run(tmp_path, pairs)
    info = export_eval_tasks(run)
    test_sid = load_dataset_dict(run)["test"][0]["section_id"]
    tasks = [json.loads(x) for x in Path(info["tasks_path"]).read_text().splitlines()]
    assert [t["id"] for t in tasks] == [f"{test_sid}-0", f"{test_sid}-1"]
    assert [t["mode"] for t in tasks] == ["test", "run"] and "tests" in tasks[0] and "expect_stdout" in tasks[1]
    # the weak pair's tests never proved it (evidence compiled): the dataset does not carry them at all
    assert info["skipped"] == {"no code": 1, "no hidden tests or stated stdout": 1}
    answers = [json.loads(x) for x in Path(info["answers_path"]).read_text().splitlines()]
    by_id = {p.id: p for p in pairs}
    assert answers == [{"id": t["id"], "answer": by_id[t["id"]].response} for t in tasks]
    from doctune.trainer.tasks import load_tasks

    assert [t.checked_by for t in load_tasks([info["tasks_path"]])] == ["hidden_tests", "expected_stdout"]


def test_tasks_that_near_duplicate_a_train_pair_are_left_out(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    def row(pid: str, prompt: str, code: str, tests: str | None = None) -> dict:
        return {"id": pid, "messages": [{"role": "user", "content": prompt}, {"role": "assistant",
                "content": answer(code)}], "tests": tests, "expect_stdout": None, "evidence": "tested"}

    sol, tests = EXERCISES["sb"][0][1], EXERCISES["sb"][0][3]
    train = [row("t1", "Write `pub fn double(x: i32) i32` in Zig 0.14: it returns twice its argument.",
                 "pub fn double(a: i32) i32 {\n    return a + a;\n}\n"),
             row("t2", "Explain how to bound an integer.", "// saturate\n" + sol.replace("    ", "  "))]
    test = [row("q1", "write pub fn double(x: i32) i32 in Zig 0.14 -- it returns twice its argument!",
                "pub fn double(x: i32) i32 {\n    return x << 1;\n}\n", tests),
            row("q2", "Give me a function that keeps a number inside a byte.", sol, tests),
            row("q3", "Write `pub fn isEven(n: u32) bool` in Zig 0.14.",
                "pub fn isEven(n: u32) bool {\n    return n % 2 == 0;\n}\n",
                'test "even" {\n    try std.testing.expect(isEven(4));\n}\n')]
    DatasetDict({"train": Dataset.from_list(train), "test": Dataset.from_list(test)}).save_to_disk(
        str(tmp_path / "dataset"))
    info = export_eval_tasks(tmp_path, tmp_path / "out")
    assert {s["id"]: s["reason"] for s in info["skipped_ids"]} == {
        "q1": "near-duplicate of a train pair (prompt of t1)", "q2": "near-duplicate of a train pair (code of t2)"}
    assert info["tasks"] == 1 and info["skipped"] == {"near-duplicate of a train pair": 2}


@pytest.mark.zig
def test_exported_tasks_score_the_runs_solutions_1_and_stubs_0(tmp_path: Path) -> None:
    """The issue's done-when, through the real commands: `doctune export RUN` then `doctune eval --tasks
    <exported> --model ref=answers:<run's solutions> --model stub=answers:<stubs>`."""
    from doctune.app.cli import app
    from doctune.app.cli.common import run_cli

    pairs, stubs = make_pairs()
    run = build_run(tmp_path / "run", pairs)
    assert run_cli(app, ["export", str(run)]) == 0
    tasks = [json.loads(x) for x in (run / "eval-tasks.jsonl").read_text().splitlines()]
    stub_file = tmp_path / "stubs.jsonl"
    stub_file.write_text("".join(json.dumps({"id": t["id"], "answer": stubs[t["id"]]}) + "\n" for t in tasks))
    argv = ["eval", "--tasks", str(run / "eval-tasks.jsonl"), "--out", str(tmp_path / "eval"),
            "--model", f"ref=answers:{run / 'eval-answers.jsonl'}", "--model", f"stub=answers:{stub_file}"]
    assert run_cli(app, argv) == 0
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert res["models"]["ref"]["n"] == 2 and res["models"]["ref"]["pass@1"] == 1.0
    assert res["models"]["stub"]["n"] == 2 and res["models"]["stub"]["pass@1"] == 0.0
    assert {t["mode"] for t in tasks} == {"test", "run"}


def test_a_doc_example_program_is_a_task_only_when_its_prompt_names_the_output() -> None:
    from doctune.agents.dataset import eval_task

    code = EXERCISES["sa"][1][1]
    row = {"id": "d", "generator": "doc-examples", "evidence": "ran", "tests": None,
           "messages": [{"role": "user", "content": "Write a complete program. It should print `1 4 9 16 25`."},
                        {"role": "assistant", "content": answer(code)}]}
    assert eval_task({**row, "expect_stdout": "1 4 9 16 25\n"})[0] is not None
    assert eval_task({**row, "expect_stdout": "1\n4\n"}) == (None, "stdout not named in the prompt")
    assert eval_task({**row, "expect_stdout": "1\n4\n", "generator": "llm:m"})[0] is not None  # a triplet's
    assert eval_task({**row, "expect_stdout": "1 4 9 16 25\n", "evidence": "compiled"})[1].startswith(
        "stated stdout not proven")


def test_a_one_section_run_exports_a_dataset_that_loads(tmp_path: Path) -> None:
    """One section -> no test split. `datasets` cannot load back an empty split it saved, so the export leaves it
    out, and training (load_splits) reads the train split alone."""
    from doctune.agents.dataset import save_dataset
    from doctune.trainer.data import load_splits

    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}],
             "id": f"p{i}", "section_id": "only", "heading_path": "H", "source": "d.md", "generator": "g",
             "evidence": "ran", "tests": None, "expect_stdout": None, "attempts": 1, "difficulty": "easy"}
            for i in range(3)]
    assert save_dataset(rows, tmp_path / "dataset", test_size=0.2, seed=0) == {"train": 3, "test": 0}
    train, test = load_splits(tmp_path / "dataset")
    assert len(train) == 3 and test is None


def test_export_of_a_run_without_a_test_split_is_zero_tasks_and_says_why(tmp_path: Path) -> None:
    """A one-section run's dataset has no test split: `doctune export` writes no task and says so (it used to
    call the dataset damaged)."""
    pairs, _ = make_pairs()
    one = [p for p in pairs if p.section_id == pairs[0].section_id]
    run = tmp_path / "run"
    run.mkdir()
    state = {"results": [{"section_id": one[0].section_id, "generated": len(one), "accepted": [p.id for p in one],
                          "rejected": [], "repairs": {}, "tokens": {"input": 0, "output": 0}, "error": None}],
             "kept": [p.id for p in one], "dropped": []}
    export_run(run, {p.id: p for p in one}, state, load_settings())
    info = export_eval_tasks(run)
    assert (info["tasks"], info["test_pairs"]) == (0, 0) and Path(info["tasks_path"]).read_text() == ""
    r = subprocess.run([sys.executable, "-c", "from doctune.app.cli import main; main()", "export", str(run)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "has no test split" in r.stderr, r.stderr
