"""Eval tasks and how a model's answer becomes the program we validate.

Task format (JSONL, one a line): ``{"id", "prompt", "mode": "run"|"test", "expect_stdout"?, "tests"?}`` plus
optional ``topic``, ``reference`` and ``wrong`` (never shown to the model). Only ``prompt`` is sent to models.

Honesty rules of ``build_program`` (what the evaluator checks, not what the answer claims):
- The code is the LONGEST ```zig fenced block of the answer (ties: the first); untagged fences count only when
  there is no zig fence; an answer without a fenced block has no code and fails.
- ``test`` mode: every ``test`` block of the answer is removed (an answer cannot bring its own passing tests), the
  task's hidden tests are appended, and the combined file must compile and pass them all. An answer that mentions
  ``SkipZigTest`` or rebinds ``std`` to anything but ``@import("std")`` fails (they could turn hidden tests off).
- ``run`` mode: the program must exit 0 and print exactly ``expect_stdout`` (when the task gives one).
- ``self``-checked tasks (from a dataset's test split, see ``tasks_from_split``) run the answer's own tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from doctune.errors import InputError
from doctune.schemas import extract_fenced_blocks


class EvalTask(BaseModel):
    """One eval task. ``reference``/``wrong`` are kept beside it for checking the task itself."""

    model_config = ConfigDict(extra="ignore")

    id: str
    prompt: str = Field(description="What the model is asked (with exact signatures).")
    mode: Literal["run", "test"]
    expect_stdout: str | None = Field(None, description="run mode: the exact stdout required.")
    tests: str | None = Field(None, description="test mode: hidden Zig test blocks appended to the answer.")
    topic: str | None = None
    source: str = Field("zig-tasks", description="Where the task comes from: zig-tasks | dataset | a file name.")
    check: Literal["hidden", "self"] = Field(
        "hidden", description="hidden = the task's tests/expected stdout decide; self = (dataset tasks whose "
        "reference is a test) the answer must contain tests and they must pass: weaker, reported apart.",
    )
    reference: str | None = Field(None, description="A correct solution (not shown to the model).")
    wrong: list[str] = Field(default_factory=list, description="Wrong solutions that must fail the checks.")


def load_tasks(paths: Iterable[Path | str]) -> list[EvalTask]:
    tasks: list[EvalTask] = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise InputError(f"eval task file not found: {path}")
        src = "zig-tasks" if path.name == "zig-tasks.jsonl" else path.stem
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                task = EvalTask.model_validate({"source": src, **row})
            except Exception as e:
                raise InputError(f"{path}:{n}: not a valid eval task: {e}") from None
            if task.mode == "test" and task.check == "hidden" and not (task.tests and TEST_DECL.search(task.tests)):
                raise InputError(f"{path}:{n}: test-mode task {task.id!r} has no hidden tests")
            tasks.append(task)
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise InputError("eval task ids must be unique")
    return tasks


def tasks_from_split(split: Any) -> list[EvalTask]:
    """Tasks from a dataset split (rows with ``messages``), the user turn being the prompt. A reference program
    (``pub fn main``) gives a run-mode task whose expected stdout comes from running the reference (see
    ``evaluate.calibrate``). A reference made of tests gives a ``self``-checked test task: such prompts ("show X
    with a test") name nothing a hidden test could call, so the answer's own tests must exist and pass. Rows
    without Zig code, or with only declarations, cannot be checked and are skipped."""
    tasks: list[EvalTask] = []
    for i, row in enumerate(split):
        msgs = row.get("messages") or []
        user = next((m["content"] for m in msgs if m["role"] == "user"), None)
        code = extract_code(next((m["content"] for m in msgs if m["role"] == "assistant"), None) or "")
        if not user or code is None:
            continue
        tid = f"dataset-{row.get('id') or i}"
        if MAIN_DECL.search(code):
            tasks.append(EvalTask(id=tid, prompt=user, mode="run", source="dataset", reference=code))
        elif find_test_blocks(code):
            tasks.append(EvalTask(id=tid, prompt=user, mode="test", check="self", source="dataset",
                                  reference=code))
    return tasks


def extract_code(answer: str) -> str | None:
    """The code the evaluator runs: the longest zig block (ties: first); untagged fences only without zig ones."""
    blocks = extract_fenced_blocks(answer)
    pool = [c for lang, c in blocks if lang == "zig"] or [c for lang, c in blocks if lang == ""]
    pool = [c for c in pool if c.strip()]
    if not pool:
        return None
    return max(pool, key=len)  # max() keeps the first of equal lengths


# ---- Zig source scanning ---------------------------------------------------------------------------------
TEST_DECL = re.compile(r'\btest(?:\s*"|\s+[A-Za-z_@]|\s*\{)')  # test "name" {, test decl {, test {
MAIN_DECL = re.compile(r"\bpub\s+fn\s+main\s*\(")
_STD_DECL = re.compile(r"^[ \t]*(?:pub\s+)?(?:const|var)\s+std\b(?P<rest>[^;]*);", re.MULTILINE)
_IDENT = re.compile(r"[A-Za-z0-9_]")


def _skip_literal(code: str, i: int) -> int:
    """If a comment/string/char literal starts at ``i``, the index after it; else ``i``."""
    if code.startswith("//", i) or code.startswith("\\\\", i):  # comment or multiline string line
        j = code.find("\n", i)
        return len(code) if j < 0 else j
    if code[i] in "\"'":
        q, j = code[i], i + 1
        while j < len(code) and code[j] != q and code[j] != "\n":
            j += 2 if code[j] == "\\" else 1
        return j + 1
    return i


def find_test_blocks(code: str) -> list[tuple[int, int]]:
    """(start, end) of every ``test`` declaration (any nesting), skipping comments and literals; a span starts
    at its leading doc comments, so removing it leaves no dangling ``///``."""
    spans: list[tuple[int, int]] = []
    i, n = 0, len(code)
    while i < n:
        j = _skip_literal(code, i)
        if j != i:
            i = j
            continue
        m = TEST_DECL.match(code, i)
        if m and (i == 0 or not _IDENT.match(code[i - 1]) and code[i - 1] not in "@."):
            end = _block_end(code, i)
            if end is not None:
                spans.append((_doc_start(code, i), end))
                i = end
                continue
        i += 1
    return spans


def _block_end(code: str, i: int) -> int | None:
    """Index after the ``}`` closing the first ``{`` at or after ``i`` (None when unbalanced)."""
    depth, n = 0, len(code)
    while i < n:
        j = _skip_literal(code, i)
        if j != i:
            i = j
            continue
        if code[i] == "{":
            depth += 1
        elif code[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _doc_start(code: str, i: int) -> int:
    line_start = code.rfind("\n", 0, i) + 1
    if code[line_start:i].strip():
        return i  # something precedes `test` on its line: leave the line alone
    while line_start > 0:
        prev = code.rfind("\n", 0, line_start - 1) + 1
        if not code[prev:line_start].lstrip().startswith("///"):
            break
        line_start = prev
    return line_start


def strip_tests(code: str) -> str:
    out, last = [], 0
    for a, b in find_test_blocks(code):
        out.append(code[last:a])
        last = b
    out.append(code[last:])
    return "".join(out)


class Program(BaseModel):
    """What gets validated for one answer, or why nothing can be."""

    code: str | None
    error: str | None = None
    stripped_tests: int = 0


def build_program(task: EvalTask, answer: str) -> Program:
    code = extract_code(answer)
    if code is None:
        return Program(code=None, error="no code: the answer has no fenced code block")
    if task.mode == "run":
        return Program(code=code)
    if "SkipZigTest" in code:
        return Program(code=None, error="the answer mentions SkipZigTest (could skip tests)")
    spans = find_test_blocks(code)
    if task.check == "self":
        if not spans:
            return Program(code=None, error="no test: the task asks for code with a test and the answer has none")
        return Program(code=code)
    body = strip_tests(code).rstrip() + "\n"
    header = ""
    decls = list(_STD_DECL.finditer(body))
    if any(d.group("rest").strip() != '= @import("std")' for d in decls):
        return Program(code=None, error='the answer binds `std` to something other than @import("std")')
    if not decls:
        header = 'const std = @import("std");\n'
    program = f"{body}\n// ---- hidden tests (doctune eval) ----\n{header}{task.tests}"
    return Program(code=program, stripped_tests=len(spans))
