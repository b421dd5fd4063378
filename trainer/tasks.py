"""Eval tasks and how a model's answer becomes the program we validate.

Task format (JSONL, one a line): ``{"id", "prompt", "mode": "run"|"test", "expect_stdout"?, "tests"?}`` plus
optional ``topic``, ``reference``, ``wrong`` and ``stub`` (never shown to the model). Only ``prompt`` is sent.

Honesty rules of ``build_program`` (what the evaluator checks, not what the answer claims):
- The code is the LONGEST ```zig fenced block of the answer (ties: the first); untagged fences count only when
  there is no zig fence; an answer without a fenced block has no code and fails.
- ``test`` mode: every ``test`` block of the answer is removed (an answer cannot bring its own passing tests), the
  task's hidden tests are appended, and the combined file must compile and pass them all. An answer that mentions
  ``SkipZigTest`` or rebinds ``std`` to anything but ``@import("std")`` fails (they could turn hidden tests off).
- ``run`` mode: the program must exit 0 and print exactly ``expect_stdout`` (when the task gives one).
- ``self``-checked tasks (from a dataset's test split, see ``tasks_from_split``) run the answer's own tests.
- Every test that decides (the hidden ones; for ``self`` tasks the answer's) is instrumented with a per-evaluation
  nonce: it prints ``marker(nonce, k)`` only when its body returned without error, so a binary that exits early
  or skips a test lacks that line whatever its exit status (``doctune.trainer.scoring`` reads it when the
  validator gives no per-test report).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from doctune.core.errors import InputError
from doctune.core.schemas import extract_fenced_blocks
from doctune.core.zigscan import matching_close, next_brace, skip_literal


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
    stub: str | None = Field(None, description="The exercise's skeleton (bodies left as TODO): must fail.")

    @property
    def checked_by(self) -> Literal["hidden_tests", "expected_stdout", "own_tests", "exit_status"]:
        """What decides a pass. Only the first two count in the headline pass@1."""
        if self.mode == "test":
            return "hidden_tests" if self.check == "hidden" and self.tests else "own_tests"
        return "expected_stdout" if self.expect_stdout is not None else "exit_status"

    @property
    def headline(self) -> bool:
        return self.checked_by in ("hidden_tests", "expected_stdout")

    @property
    def hidden_tests(self) -> int:
        """How many hidden tests the task appends (all must report passed)."""
        return len(find_test_blocks(self.tests)) if self.tests else 0


def load_tasks(paths: Iterable[Path | str]) -> list[EvalTask]:
    paths = list(paths)
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
    if not tasks:  # a pass@1 over nothing would read as 0.000
        raise InputError(f"no eval tasks in {', '.join(map(str, paths))}: nothing to evaluate")
    return tasks


def tasks_from_split(split: Any) -> list[EvalTask]:
    """Tasks from a dataset split (rows with ``messages``), the user turn being the prompt. A row with hidden
    ``tests`` (a triplet) gives a test task those tests decide. A reference program (``pub fn main``) gives a
    run-mode task whose expected stdout is the row's ``expect_stdout`` or comes from running the reference (see
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
        if row.get("tests"):  # a triplet's hidden tests (exported only for pairs they proved: evidence `tested`)
            tasks.append(EvalTask(id=tid, prompt=user, mode="test", tests=row["tests"], source="dataset",
                                  reference=code))
        elif MAIN_DECL.search(code):
            tasks.append(EvalTask(id=tid, prompt=user, mode="run", source="dataset", reference=code,
                                  expect_stdout=row.get("expect_stdout")))
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


def find_test_blocks(code: str) -> list[tuple[int, int]]:
    """(start, end) of every ``test`` declaration (any nesting), skipping comments and literals; a span starts
    at its leading doc comments, so removing it leaves no dangling ``///``."""
    return [(doc, end) for doc, _, end in _test_decls(code)]


def _test_decls(code: str) -> list[tuple[int, int, int]]:
    """(doc comment start, ``test`` keyword, end) of every test declaration."""
    spans: list[tuple[int, int, int]] = []
    i, n = 0, len(code)
    while i < n:
        j = skip_literal(code, i)
        if j != i:
            i = j
            continue
        m = TEST_DECL.match(code, i)
        if m and (i == 0 or not _IDENT.match(code[i - 1]) and code[i - 1] not in "@."):
            end = _block_end(code, i)
            if end is not None:
                spans.append((_doc_start(code, i), i, end))
                i = end
                continue
        i += 1
    return spans


def marker(nonce: str, k: int) -> str:
    """The line test ``k`` prints once its body returned without error."""
    return f"@@doctune-eval {nonce} test {k} returned@@"


def instrument_tests(code: str, nonce: str) -> tuple[str, int]:
    """``code`` with each test's body opening with a deferred marker print that an error return cancels; and
    the number of tests instrumented. Names carry the nonce, so the answer cannot clash with or reach them."""
    decls = _test_decls(code)
    out, last = [], 0
    for k, (_, kw, _) in enumerate(decls):
        brace = next_brace(code, kw)
        assert brace is not None  # _test_decls found its end
        ok = f"doctune_ok_{nonce}"
        out += [code[last : brace + 1],
                # defers run last-declared first: the errdefer (declared after) clears the flag before the print
                f' var {ok} = true; defer if ({ok}) @import("std").debug.print("\\n{marker(nonce, k)}\\n", .{{}}); '
                f"errdefer {ok} = false;"]
        last = brace + 1
    out.append(code[last:])
    return "".join(out), len(decls)


def _block_end(code: str, i: int) -> int | None:
    """Index after the ``}`` closing the first ``{`` at or after ``i`` (None when unbalanced)."""
    brace = next_brace(code, i)
    return None if brace is None else matching_close(code, brace)


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
    tests: int = Field(0, description="Tests that decide (instrumented with the nonce when one was given).")


def build_program(task: EvalTask, answer: str, nonce: str | None = None) -> Program:
    """The program to validate for ``answer`` (see the module docstring); with ``nonce``, the deciding tests
    report through ``marker``."""
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
        return Program(code=code, tests=len(spans)) if nonce is None else _instrumented(code, nonce)
    body = strip_tests(code).rstrip() + "\n"
    header = ""
    decls = list(_STD_DECL.finditer(body))
    if any(d.group("rest").strip() != '= @import("std")' for d in decls):
        return Program(code=None, error='the answer binds `std` to something other than @import("std")')
    if not decls:
        header = 'const std = @import("std");\n'
    hidden = task.tests or ""
    if nonce is not None:  # only the hidden tests report: a test the answer slipped past strip_tests never counts
        hidden = instrument_tests(hidden, nonce)[0]
    program = f"{body}\n// ---- hidden tests (doctune eval) ----\n{header}{hidden}"
    return Program(code=program, stripped_tests=len(spans), tests=task.hidden_tests)


def _instrumented(code: str, nonce: str) -> Program:
    out, n = instrument_tests(code, nonce)
    return Program(code=out, tests=n)
